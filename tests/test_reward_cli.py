"""The command line with reward files written by the test: `tasks`, `check-reward`, and
`train --reward --prompts` through a reward that breaks mid-run, then `--resume` after the fix."""

import json

from tokenzero import cli
from tokenzero import loop as train_lib

TINY = ["model.d_model=16", "model.num_heads=2", "model.num_layers=1", "selfplay.batch_size=4",
        "search.num_simulations=4", "search.top_k=4", "search.max_num_considered_actions=4",
        "optim.steps_per_iteration=1", "task.max_new_tokens=3"]

GOOD = """
import tokenzero

@tokenzero.batched_reward
def echo(prompts, completions):
  return [float(c == p[:2]) for p, c in zip(prompts, completions)]
"""

# Counts its own loads (a run must execute the file once), and raises once the judge is "down":
# the test takes it down when the first iteration starts, after the contract check and the
# evaluation of the initial network have called it.
BREAKS_LATER = """
import pathlib

_LOADS = pathlib.Path(__file__).with_suffix(".loads")
_LOADS.write_text(str(int(_LOADS.read_text()) + 1 if _LOADS.exists() else 1))
_DOWN = pathlib.Path(__file__).with_suffix(".down")

def echo(prompt, completion):
  if _DOWN.exists():
    raise RuntimeError("the judge is down")
  return float(completion == prompt[:2])
"""


def test_cli_lists_tasks(capsys):
  assert cli.main(["tasks"]) == 0
  out = capsys.readouterr().out
  for name in ("sort", "reverse", "addition", "anagram", "parentheses", "countdown", "prompts"):
    assert f"{name}: " in out
  assert "task.params.max_target = 50" in out


def test_cli_check_reward(tmp_path, capsys):
  good = tmp_path / "good.py"
  good.write_text(GOOD)
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("abc\nbca\n")
  assert cli.main(["check-reward", f"{good}:echo", "--prompts", str(prompts)]) == 0
  assert capsys.readouterr().out.startswith(f"PASS: reward '{good}:echo' (batched Python)")
  bad = tmp_path / "bad.py"
  bad.write_text("def score(prompt, completion):\n  return None if completion else 0.5\n")
  assert cli.main(["check-reward", f"{bad}:score", "--prompt", "abc"]) == 1
  out = capsys.readouterr().out
  assert out.startswith(f"FAIL: reward '{bad}:score' returned None (a NoneType) for prompt "
                        "'abc' and completion 'abc'")
  assert cli.main(["check-reward", f"{bad}:nope", "--prompt", "abc"]) == 1
  assert "has no function 'nope'; it defines: score" in capsys.readouterr().out
  assert cli.main(["check-reward", f"{bad}:score"]) == 2
  assert "give prompts" in capsys.readouterr().err


def test_cli_train_with_a_reward_that_breaks_then_resume(tmp_path, capsys, monkeypatch):
  reward = tmp_path / "judge.py"
  reward.write_text(BREAKS_LATER)
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("".join(f"{a}{b}\n" for a in "abcd" for b in "abcde"))  # 20 prompts
  out = tmp_path / "run"
  real_iteration = train_lib.run_iteration

  def judge_goes_down(*args, **kwargs):
    reward.with_suffix(".down").touch()
    return real_iteration(*args, **kwargs)

  monkeypatch.setattr(train_lib, "run_iteration", judge_goes_down)
  argv = ["train", "--reward", f"{reward}:echo", "--prompts", str(prompts), "--alphabet", "xy",
          "--out", str(out), "--iterations", "1", "--no-progress", *TINY]
  assert cli.main(argv) == 1
  assert reward.with_suffix(".loads").read_text() == "1"  # one run, one execution of the file
  captured = capsys.readouterr()
  assert captured.out.startswith(f"PASS: reward '{reward}:echo'")
  err = captured.err
  assert f"training stopped: reward '{reward}:echo' raised RuntimeError: the judge is down on " \
         "prompt '" in err
  assert "The last good checkpoint is kept" in err and "--resume" in err
  assert "Traceback" not in err and "XLA" not in err
  rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  assert [r["iteration"] for r in rows] == [0]
  saved = json.loads((out / "config.json").read_text())["task"]
  assert saved["name"] == "prompts" and saved["params"]["alphabet"] == "xy"

  monkeypatch.setattr(train_lib, "run_iteration", real_iteration)
  reward.with_suffix(".down").unlink()
  assert cli.main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
  assert reward.with_suffix(".loads").read_text() == "2"
  rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  assert [r["iteration"] for r in rows] == [0, 1]
