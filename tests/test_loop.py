"""One-iteration smoke test of the whole loop with a shrunken config, resume, and the CLI.

The tiny run has a curriculum (`task.curriculum`, threshold 0: one size up at every evaluation,
so sort of 1, 2, then 3 digits), so that resuming and "nothing recompiles" cover a size that
changes; the CLI's run is the plain one."""

import json
import math
import shutil

import pytest

from tokenzero import cli, prompts, rundir
from tokenzero import config as config_lib
from tokenzero import loop as train_lib
from tokenzero.run import load_run

TINY = ["task.params.length=3", "model.d_model=16", "model.num_heads=2", "model.num_layers=1",
        "selfplay.batch_size=8", "search.num_simulations=4", "eval.num_prompts=16",
        "optim.steps_per_iteration=2", "optim.decay_steps=50",
        # The learner without found answers and replay: smaller programs for the tests that
        # only need a run. The default learner runs in test_train_faults (kills, NaN),
        # mesh_checks (DEFAULT_LEARNER, 4 devices) and test_loop_learns.
        "optim.found_weight=0", "replay.capacity=0"]
DEFAULT_LEARNER = ["optim.found_weight=1", "replay.capacity=64"]
# The tiny run's: a curriculum, and a temperature that does not depend on `iterations`, so that
# a resume to a larger total redoes an iteration exactly.
CURRICULUM = ["task.curriculum=true", "task.curriculum_threshold=0",
              "selfplay.final_temperature=1.0"]
PER_PROCESS = ("elapsed_s", "selfplay_s", "train_s", "replay_s", "compiles")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("run")
  config = config_lib.resolve(overrides=TINY + CURRICULUM + ["iterations=3",
                                                             "checkpoint_every=1"])
  rows = train_lib.train(config, out, progress=False, log=lambda s: None)
  return out, rows


def test_train_writes_a_complete_run(finished_run):
  out, rows = finished_run
  assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
  for key in ("iteration", "elapsed_s", "selfplay_reward", "loss_policy", "loss_value",
              "eval_greedy_reward", "eval_greedy_success", "compiles"):
    assert key in rows[-1], key
  # Row 0 compiles the evaluation, iteration 1 self-play and the learner; then nothing may
  # recompile: every later iteration (evaluation and checkpoint included) reuses those programs,
  # though the curriculum's size changes at iteration 2.
  assert rows[0]["compiles"] > 0 and rows[1]["compiles"] > 0
  assert [r["compiles"] for r in rows[2:]] == [0, 0]
  assert [r["curriculum_level"] for r in rows] == [1, 2, 3, 3]
  assert all(0.0 <= r["curriculum_success"] <= 1.0 for r in rows[:2])
  assert not any("curriculum_success" in r for r in rows[2:])  # the full size checks nothing
  assert 0.0 <= rows[-1]["eval_greedy_success"] <= 1.0
  for row in rows[1:]:  # the learning diagnostics (eval.every=1: every row evaluates)
    for key in ("terminal_reached", "terminal_on_pick", "greedy_agreement", "explore_fraction",
                "offpolicy_fraction"):
      assert 0.0 <= row[key] <= 1.0, key
    for key in ("value_error", "search_value_error", "return_std", "target_entropy",
                "prior_entropy", "root_kl"):
      assert row[key] >= 0.0, key
    assert row["terminal_on_pick"] <= row["terminal_reached"]
    assert row["selfplay_forward_tokens"] > 0
    assert row["prior_entropy"] <= math.log(13) and row["target_entropy"] <= math.log(13)
    assert row["reward_gap"] == pytest.approx(row["selfplay_reward"] - row["eval_greedy_reward"])
  # Sampled self-play with exploration (the defaults) plays off the search's pick sometimes.
  assert any(row["offpolicy_fraction"] > 0 for row in rows[1:])
  assert "reward_gap" not in rows[0]
  saved = json.loads((out / "config.json").read_text())
  assert saved["model"]["vocab_size"] == 13 and saved["iterations"] == 3
  assert saved["eval"]["split"] == "hash" and saved["task"]["curriculum"] is True
  lines = (out / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["iteration"] for l in lines] == [0, 1, 2, 3]
  assert (out / "learning_curve.png").stat().st_size > 1000
  assert sorted(p.name for p in (out / "checkpoints").iterdir()  # the last keep_checkpoints=3
                if p.name.isdigit()) == ["1", "2", "3"]


def test_resume_continues_to_the_new_total(finished_run, tmp_path):
  out, rows = finished_run
  copy = tmp_path / "copy"
  shutil.copytree(out, copy)
  shutil.rmtree(copy / "checkpoints" / "3")  # from iteration 2: iteration 3 is done again
  config = config_lib.resolve(overrides=TINY + CURRICULUM + ["iterations=4",
                                                             "checkpoint_every=1"])
  resumed = train_lib.train(config, copy, resume=True, progress=False, log=lambda s: None)
  assert [r["iteration"] for r in resumed] == [0, 1, 2, 3, 4]
  assert resumed[:3] == rows[:3]  # read back
  # Done again as it was, on the curriculum's size taken up from the kept rows.
  strip = lambda row: {k: v for k, v in row.items() if k not in PER_PROCESS}
  assert strip(resumed[3]) == strip(rows[3])
  assert resumed[4]["curriculum_level"] == 3


def test_an_old_run_loads_and_resumes_on_its_old_evaluation_set(finished_run, tmp_path):
  out, rows = finished_run
  old = tmp_path / "old"
  shutil.copytree(out, old)
  saved = json.loads((old / "config.json").read_text())
  del saved["eval"]["split"]  # a run made before the key existed (and the curriculum's keys)
  for key in ("curriculum", "curriculum_threshold", "curriculum_start"):
    del saved["task"][key]
  (old / "config.json").write_text(json.dumps(saved))
  setup, _ = load_run(old)
  assert setup.config.eval.split == "legacy"
  texts = prompts.eval_texts(setup.task, setup.config.seed, 16, split=setup.config.eval.split)
  assert texts == prompts.eval_prompts(setup.task.sample, setup.config.seed, 16)  # the old set
  with pytest.raises(config_lib.ConfigError, match=r"eval\.split"):  # not silently moved
    train_lib.train(config_lib.resolve(overrides=TINY + ["iterations=4"]), old, resume=True,
                    progress=False)
  config = config_lib.resolve(overrides=["iterations=4"], base=rundir.read_config(old))
  resumed = train_lib.train(config, old, resume=True, progress=False, log=lambda s: None)
  assert [r["iteration"] for r in resumed] == [0, 1, 2, 3, 4] and resumed[:4] == rows
  assert json.loads((old / "config.json").read_text())["eval"]["split"] == "legacy"


def test_resume_refuses_a_changed_config(finished_run):
  out, _ = finished_run
  config = config_lib.resolve(overrides=TINY + ["iterations=3", "search.num_simulations=8"])
  with pytest.raises(config_lib.ConfigError, match="search.num_simulations"):
    train_lib.train(config, out, resume=True, progress=False)


def test_fresh_run_refuses_an_existing_run_dir(finished_run):
  out, _ = finished_run
  config = config_lib.resolve(overrides=TINY + ["iterations=3"])
  with pytest.raises(config_lib.ConfigError, match="--resume"):
    train_lib.train(config, out, progress=False)


def test_cli_train_runs_one_iteration(tmp_path, capsys):
  out = tmp_path / "cli-run"
  assert cli.main(["train", "--out", str(out), "--iterations", "1", "--no-progress"] + TINY) == 0
  assert f"run directory: {out}" in capsys.readouterr().out
  rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
  assert rows[-1]["iteration"] == 1 and "curriculum_level" not in rows[-1]


def test_a_curriculum_evaluates_as_the_plain_run_does(finished_run, tmp_path):
  # The held-out evaluation is the full task's with or without a curriculum: the same initial
  # network scores the same (the rest of a curriculum run is checked on `finished_run`).
  _, rows = finished_run
  plain = train_lib.train(config_lib.resolve(overrides=TINY + ["iterations=0"]),
                          tmp_path / "plain", progress=False, log=lambda s: None)
  assert plain[0]["eval_greedy_reward"] == rows[0]["eval_greedy_reward"]
  assert plain[0]["eval_greedy_success"] == rows[0]["eval_greedy_success"]


def test_decode_on_a_run_searches_with_the_runs_reward(finished_run, capsys):
  out, _ = finished_run
  code = cli.main(["decode", str(out), "--method", "mcts", "--budget", "2", "--prompt", "312",
                   "--json"])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  result = json.loads(captured.out)
  assert result["forward_tokens"] == 2 * len(result["token_ids"]) > 0
