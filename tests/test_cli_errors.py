"""Bad input on the command line: one line on stderr, exit code 2, no traceback, and nothing
compiled; `--debug` shows the traceback instead."""

import json
import sys
import subprocess
from pathlib import Path

import jax
import pytest

from tokenzero import cli
from tokenzero import config as config_lib
from tokenzero import run as run_lib
from tokenzero import rundir

TINY = ["task.params.length=3", "model.d_model=16", "model.num_heads=2", "model.num_layers=1",
        "selfplay.batch_size=8", "search.num_simulations=4", "eval.num_prompts=16",
        "optim.steps_per_iteration=2", "optim.decay_steps=50"]

# Bad input: one line, exit code 2, no traceback, and nothing compiled.

REWARD = "def score(prompt, completion):\n  return float(completion == prompt)\n"


@pytest.fixture
def files(tmp_path):
  """Prompt, reward and config files, good and bad."""
  paths = {
      "reward": (tmp_path / "reward.py", REWARD.encode()),
      "prompts": (tmp_path / "prompts.txt", b"abc\nbca\ncab\nacb\n"),
      "empty": (tmp_path / "empty.txt", b"\n  \n"),
      "long": (tmp_path / "long.txt", b"abc\n" + b"ab" * 40 + b"\n"),
      "huge": (tmp_path / "huge.txt", b"abc\n" + b"x" * 5000 + b"\n"),
      "latin1": (tmp_path / "latin1.txt", "abc\ncaf\u00e9\n".encode("latin-1")),
      "latin1_reward": (tmp_path / "latin1_reward.py",
                        'NAME = "caf\u00e9"\n'.encode("latin-1") + REWARD.encode()),
      "latin1_toml": (tmp_path / "latin1.toml", "# caf\u00e9\nseed = 1\n".encode("latin-1")),
      "typo_toml": (tmp_path / "typo.toml", b"[serch]\nnum_simulations = 4\n"),
  }
  for path, data in paths.values():
    path.write_bytes(data)
  return {name: str(path) for name, (path, _) in paths.items()}


def _prompts_task(files, prompts="prompts", reward="reward.py:score"):
  return ["--prompts", files[prompts], "--reward", str(Path(files["reward"]).parent / reward)]


BAD_INPUTS = {
    "mistyped key": (lambda f: ["search.num_simulaton=3"],
                     "unknown config key 'search.num_simulaton' (did you mean "
                     "'search.num_simulations'?)"),
    "mistyped section in a config file": (lambda f: [f["typo_toml"]],
                                          "unknown config key 'serch' (did you mean 'search'?)"),
    "K larger than the vocabulary": (lambda f: ["search.top_k=14"] + TINY,
                                     "search.top_k=14 is larger than the vocabulary (13 tokens)"),
    "context shorter than prompt + answer": (lambda f: ["model.context=7"] + TINY,
                                             "model.context=7 is shorter than the longest prompt "
                                             "(4 tokens) plus the 4-token answer: set "
                                             "model.context=8 or more"),
    "zero simulations": (lambda f: ["search.num_simulations=0"],
                         "search.num_simulations must be >= 1"),
    "negative temperature": (lambda f: ["selfplay.temperature=-0.5"],
                             "selfplay.temperature must be >= 0, got -0.5"),
    "negative final temperature": (lambda f: ["selfplay.final_temperature=-1"],
                                   "selfplay.final_temperature must be >= 0, got -1.0"),
    "empty prompts file": (lambda f: _prompts_task(f, "empty"), "has no prompts"),
    "missing prompts file": (lambda f: ["--prompts", f["prompts"] + ".gone", "--reward",
                                        f["reward"] + ":score"], "does not exist"),
    "prompts longer than the context": (lambda f: _prompts_task(f, "long") + ["model.context=40"],
                                        "model.context=40 is shorter than the longest prompt, "
                                        "'abababababababababababababababababababababababababababab"
                                        "abab...' (81 tokens with SEP) plus the 16-token answer: "
                                        "set model.context=97 or more"),
    "a prompt far longer than an automatic context": (
        lambda f: _prompts_task(f, "huge"),
        "the longest prompt, 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' "
        "(5001 tokens with SEP) needs model.context=5017 with the 16-token answer, over the 512 "
        "tokens sized automatically: set model.context=5017"),
    "characters outside the tokenizer": (lambda f: _prompts_task(f) + ["--tokenizer", "char:ab"],
                                         "is not in the tokenizer's alphabet 'ab'"),
    "non-UTF-8 prompts file": (lambda f: _prompts_task(f, "latin1"),
                               "latin1.txt:2: not UTF-8 text (byte 0xe9)"),
    "non-UTF-8 reward file": (lambda f: _prompts_task(f, reward="latin1_reward.py:score"),
                              "raised SyntaxError: (unicode error) 'utf-8' codec can't decode"),
    "non-UTF-8 config file": (lambda f: [f["latin1_toml"]], "is not valid TOML"),
    "missing reward file": (lambda f: _prompts_task(f, reward="nowhere.py:score"),
                            "nowhere.py' does not exist"),
    "reward file without that function": (lambda f: _prompts_task(f, reward="reward.py:scor"),
                                          "has no function 'scor'; it defines: score"),
}


@pytest.fixture(scope="module")
def compile_counter():
  """Records tracing, lowering and compiling events (and persistent-cache look-ups)."""
  events = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, duration, **kwargs: events.append(event) if "compil" in event else None)
  return events


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_with_exit_code_2_before_any_compile(case, files, capsys,
                                                                    compile_counter):
  make_argv, message = BAD_INPUTS[case]
  del compile_counter[:]
  assert cli.main(["train", "--no-progress"] + make_argv(files)) == 2
  err = capsys.readouterr().err
  assert message in err
  assert err.startswith("tokenzero: error: ") and len(err.strip().splitlines()) == 1, err
  assert "Traceback" not in err
  assert not compile_counter, compile_counter


def test_resume_with_a_different_config_lists_the_keys(tmp_path, capsys):
  run = tmp_path / "run"
  run.mkdir()
  saved = run_lib.build(config_lib.resolve(overrides=TINY + ["iterations=3"])).config
  (run / "config.json").write_text(json.dumps(config_lib.to_dict(saved)))
  argv = ["train", "--out", str(run), "--resume", "search.num_simulations=8", "seed=5"]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert ("cannot resume with a different config; differing keys: search.num_simulations, "
          "seed (pass --allow-config-change to override)") in err
  assert len(err.strip().splitlines()) == 1


def test_debug_shows_the_traceback():
  with pytest.raises(config_lib.ConfigError, match="num_simulations must be >= 1"):
    cli.main(["--debug", "train", "search.num_simulations=0"])


def test_help_answers_without_importing_jax():
  code = ("import sys\nfrom tokenzero import cli\ntry:\n  cli.main(['--help'])\n"
          "except SystemExit:\n  pass\nassert 'jax' not in sys.modules, 'jax was imported'\n"
          "import tokenzero\nassert callable(tokenzero.batched_reward)\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
  assert result.returncode == 0, result.stderr
  assert "usage: tokenzero" in result.stdout and "train" in result.stdout


def test_a_second_writer_of_a_run_directory_is_refused(tmp_path, capsys):
  with rundir.RunLock(tmp_path / "run"):
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--no-progress"] + TINY) == 2
  err = capsys.readouterr().err
  assert f"{tmp_path / 'run'} is in use by another tokenzero process (pid " in err
  assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv,message", [
    (["train", "search.num_simulaton=3"], "did you mean 'search.num_simulations'"),
    (["train", "search.num_simulations=0"], "num_simulations must be >= 1"),
    (["train", "model.context=4"], "is shorter than the longest prompt"),
    (["train", "--task", "nosuch"], "unknown task 'nosuch'"),
    (["train", "--resume"], "--resume needs --out"),
    (["train", "--iteratons", "3"], "unexpected argument '--iteratons'"),
    (["train", "missing.toml"], "does not exist"),
])
def test_cli_argument_errors_exit_2(argv, message, capsys):
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert message in err
  assert "Traceback" not in err and len(err.strip().splitlines()) == 1
