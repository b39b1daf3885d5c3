"""Faults and bad input, tested the hard way: `kill -9` and resume, corrupt checkpoints, SIGTERM
and SIGINT, a planted NaN, and every kind of bad input the CLI must refuse before compiling.

The fault tests drive `python -m tokenzero.cli train` in subprocesses that share one persistent
XLA compilation cache (TOKENZERO_COMPILATION_CACHE), so only the first process compiles. Their
config makes the run independent of `iterations` (constant temperature, a fixed LR horizon), so a
run may be resumed with a larger `--iterations` and still be compared row by row with a run
that never stopped.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from tokenzero import checkpoint as ckpt_lib
from tokenzero import cli, compilation_cache
from tokenzero import config as config_lib
from tokenzero import train as train_lib

REPO = Path(__file__).resolve().parents[1]
TINY = ["task.params.length=3", "model.d_model=16", "model.num_heads=2", "model.num_layers=1",
        "selfplay.batch_size=8", "search.num_simulations=4", "eval.num_prompts=16",
        "optim.steps_per_iteration=2", "optim.decay_steps=50"]
# Iteration-independent schedule; a checkpoint every iteration.
FAULT = TINY + ["checkpoint_every=1", "selfplay.final_temperature=1.0"]
TIMING = ("elapsed_s", "selfplay_s", "train_s")
LAUNCH_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
  """Environment of the training subprocesses: one compilation cache for all of them."""
  env = dict(os.environ)
  env["TOKENZERO_COMPILATION_CACHE"] = str(tmp_path_factory.mktemp("xla-cache"))
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
  return env


class Launch:
  """One `tokenzero train` subprocess, its output in files (a full pipe would block it)."""

  def __init__(self, argv, env, log_dir: Path, name: str, driver: Path | None = None):
    self.stdout_path, self.stderr_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    head = [sys.executable, str(driver)] if driver else [sys.executable, "-m", "tokenzero.cli"]
    with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
      self.process = subprocess.Popen(head + ["train", "--no-progress"] + argv, cwd=REPO,
                                      env=env, stdout=out, stderr=err)

  def wait(self, timeout=LAUNCH_TIMEOUT_S) -> int:
    try:
      return self.process.wait(timeout)
    except subprocess.TimeoutExpired:
      self.process.kill()
      raise

  @property
  def stdout(self) -> str:
    return self.stdout_path.read_text()

  @property
  def stderr(self) -> str:
    return self.stderr_path.read_text()

  def describe(self) -> str:
    return f"exit {self.process.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"

  def wait_for_checkpoint(self, run: Path, newer_than: int, timeout=LAUNCH_TIMEOUT_S) -> int:
    """Blocks until `run` holds a checkpoint newer than `newer_than`; returns the newest."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if (steps := checkpoint_steps(run)) and steps[-1] > newer_than:
        return steps[-1]
      if self.process.poll() is not None:
        pytest.fail(f"training exited before checkpoint {newer_than + 1}: {self.describe()}")
      time.sleep(0.05)
    self.process.kill()
    pytest.fail(f"no checkpoint after {newer_than} within {timeout}s: {self.describe()}")


def checkpoint_steps(run: Path) -> list[int]:
  """Finished checkpoints (orbax renames a temporary directory to `<iteration>` when done)."""
  directory = run / "checkpoints"
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def metrics(run: Path) -> list[dict]:
  """Rows without their timings, up to a last line that a kill may have cut."""
  rows = []
  for line in (run / "metrics.jsonl").read_text().splitlines():
    try:
      rows.append({k: v for k, v in json.loads(line).items() if k not in TIMING})
    except json.JSONDecodeError:
      break
  return rows


def flip_a_byte_in_every_data_file(checkpoint: Path) -> int:
  """Silent corruption: orbax loads some of these without complaint; the digest must not."""
  files = [p for p in checkpoint.rglob("*") if p.is_file() and p.parent.name == "d"]
  for path in files:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
  return len(files)


def test_kill_9_ten_times_then_resume_matches_an_uninterrupted_run(tmp_path, cli_env):
  rng = random.Random(6)  # kill points are random but the same on every run of the test.
  run = tmp_path / "killed"
  argv = ["--out", str(run), "--iterations", "1000"] + FAULT
  newest, kill_points = -1, []
  for attempt in range(10):
    launch = Launch(argv + (["--resume"] if attempt else []), cli_env, tmp_path, f"kill{attempt}")
    newest = launch.wait_for_checkpoint(run, newer_than=newest)
    time.sleep(rng.uniform(0.0, 1.0))
    launch.process.send_signal(signal.SIGKILL)
    assert launch.wait() == -signal.SIGKILL, launch.describe()
    if attempt:
      assert f"resumed from iteration {resumed_from}" in launch.stdout, launch.describe()
      assert "skipping checkpoint" not in launch.stderr, launch.describe()
    newest = resumed_from = checkpoint_steps(run)[-1]
    kill_points.append(newest)
    rows = metrics(run)  # whole lines only up to the checkpoint; a cut last line is redone.
    assert [r["iteration"] for r in rows[:newest + 1]] == list(range(newest + 1))
  final_iteration = newest + 2
  final = Launch(argv[:2] + ["--resume", "--iterations", str(final_iteration)] + FAULT, cli_env,
                 tmp_path, "final")
  assert final.wait() == 0, final.describe()
  assert f"resumed from iteration {newest}" in final.stdout, final.describe()
  assert "skipping checkpoint" not in final.stderr, final.describe()
  assert f'"iteration": {final_iteration}' in final.stdout
  assert checkpoint_steps(run)[-1] == final_iteration
  resumed = metrics(run)
  assert [r["iteration"] for r in resumed] == list(range(final_iteration + 1))

  reference_run = tmp_path / "uninterrupted"
  reference = Launch(["--out", str(reference_run), "--iterations", str(final_iteration)] + FAULT,
                     cli_env, tmp_path, "reference")
  assert reference.wait() == 0, reference.describe()
  # Same seed and config: identical metrics, before and after every one of the resume points.
  assert resumed == metrics(reference_run), f"kill points {kill_points}"
  print(f"killed at checkpoints {kill_points}; resumed to iteration {final_iteration}")


def _stop_with(launch: Launch, run: Path, sig: signal.Signals, newer_than: int) -> int:
  """Signals `launch` once it wrote a checkpoint inside its loop; checks the clean stop."""
  launch.wait_for_checkpoint(run, newer_than=newer_than)
  launch.process.send_signal(sig)
  assert launch.wait() == 128 + sig, launch.describe()
  stopped = checkpoint_steps(run)[-1]
  err = launch.stderr.strip().splitlines()[-1]
  assert err == (f"tokenzero: stopped after iteration {stopped} (received {sig.name}); the "
                 f"newest checkpoint is iteration {stopped}. Resume with: tokenzero train --out "
                 f"{run} --resume"), launch.describe()
  assert "Traceback" not in launch.stderr, launch.describe()
  assert [r["iteration"] for r in metrics(run)] == list(range(stopped + 1))
  return stopped


def test_sigterm_and_sigint_leave_resumable_checkpoints_and_a_corrupt_one_is_skipped(
    tmp_path, cli_env):
  run = tmp_path / "signalled"
  argv = ["--out", str(run), "--iterations", "1000"] + FAULT + ["keep_checkpoints=5"]
  first = Launch(argv, cli_env, tmp_path, "sigterm")
  # Checkpoint 0 is written before the loop; wait for one inside it.
  after_sigterm = _stop_with(first, run, signal.SIGTERM, newer_than=0)
  assert len(first.stderr.strip().splitlines()) == 1, first.describe()

  second = Launch(argv + ["--resume"], cli_env, tmp_path, "sigint")
  after_sigint = _stop_with(second, run, signal.SIGINT, newer_than=after_sigterm)
  assert f"resumed from iteration {after_sigterm}" in second.stdout, second.describe()

  corrupt = run / "checkpoints" / str(after_sigint)
  assert flip_a_byte_in_every_data_file(corrupt) > 0
  third = Launch(argv[:2] + ["--resume", "--iterations", str(after_sigint + 1)] + FAULT
                 + ["keep_checkpoints=5"], cli_env, tmp_path, "finish")
  assert third.wait() == 0, third.describe()
  assert f"skipping checkpoint {corrupt}: it could not be loaded" in third.stderr
  assert "Event loop is closed" not in third.stderr, third.describe()
  assert f"resumed from iteration {after_sigint - 1}" in third.stdout, third.describe()
  assert [r["iteration"] for r in metrics(run)] == list(range(after_sigint + 2))
  # The corrupt checkpoint was written again, whole, when the resumed run passed it.
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    train_lib.load_run(run, iteration=after_sigint)


def test_silent_corruption_is_caught_by_the_digest(tmp_path):
  """A flipped bit in orbax's array data loads without complaint from orbax itself."""
  weights = jax.random.normal(jax.random.key(0), (32, 32))
  states = [ckpt_lib.TrainState({"w": weights * i}, {"mu": weights}, jnp.int32(2 * i),
                                jnp.int32(i), jnp.array([0, 7], jnp.uint32)) for i in (1, 2)]
  checkpointer = ckpt_lib.Checkpointer(tmp_path, writer=True)
  for state in states:
    checkpointer.save(state, {"seed": 0})
  data = max((p for p in (tmp_path / "2").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  flipped = bytearray(data.read_bytes())
  flipped[len(flipped) * 3 // 10] ^= 0x01
  data.write_bytes(bytes(flipped))
  with pytest.warns(UserWarning, match="checkpoints?.*2: .*does not match the digest"):
    restored, config = checkpointer.restore_latest(states[0])
  checkpointer.close()
  assert int(restored.iteration) == 1 and config == {"seed": 0}
  assert ckpt_lib.state_digest(restored) == ckpt_lib.state_digest(states[0])

  shutil.rmtree(tmp_path / "1" / "digest")  # as an older tokenzero wrote it: loads, unchecked.
  checkpointer = ckpt_lib.Checkpointer(tmp_path)
  with pytest.warns(UserWarning, match="has no digest"):
    restored, _ = checkpointer.restore(1, states[0])
  checkpointer.close()
  assert ckpt_lib.state_digest(restored) == ckpt_lib.state_digest(states[0])


def test_resume_refuses_to_start_over_when_no_checkpoint_loads(tmp_path):
  config = config_lib.resolve(overrides=FAULT + ["iterations=3"])
  (tmp_path / "config.json").write_text(json.dumps(
      config_lib.to_dict(train_lib.build(config).config)))
  (tmp_path / "checkpoints" / "2" / "state").mkdir(parents=True)
  (tmp_path / "checkpoints" / "2" / "state" / "_METADATA").write_text("{not json")
  with pytest.warns(UserWarning, match="skipping checkpoint"):
    with pytest.raises(train_lib.TrainingError, match=r"none of the checkpoints \[2\]"):
      train_lib.train(config, tmp_path, resume=True, progress=False, log=lambda s: None)
  assert (tmp_path / "checkpoints" / "2" / "state" / "_METADATA").read_text() == "{not json"


# Poisons the trajectories' rewards from the third iteration on: the value loss and every
# gradient go NaN inside the jitted learner, exactly as a numerical blow-up would.
NAN_DRIVER = """
import sys
from tokenzero import cli, learner

real_train_steps, calls = learner.train_steps, []

def poisoned_train_steps(params, opt_state, traj, **kwargs):
  calls.append(1)
  if len(calls) >= 3:
    traj = traj._replace(reward=traj.reward * float("nan"))
  return real_train_steps(params, opt_state, traj, **kwargs)

learner.train_steps = poisoned_train_steps
sys.exit(cli.main(sys.argv[1:]))
"""


def test_planted_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, cli_env):
  driver = tmp_path / "nan_driver.py"
  driver.write_text(NAN_DRIVER)
  run = tmp_path / "nan"
  argv = ["--out", str(run), "--iterations", "10"] + FAULT + ["optim.max_nonfinite_updates=3"]
  poisoned = Launch(argv, cli_env, tmp_path, "nan", driver=driver)
  assert poisoned.wait() == 1, poisoned.describe()
  err = poisoned.stderr
  # Iterations 1-2 are optimizer steps 1-4; iteration 3's steps 5-6 and 4's 7-8 are skipped.
  assert ("training stopped: stopping at iteration 4: 4 consecutive optimizer updates were "
          "skipped (optim.max_nonfinite_updates=3), the first at optimizer step 5 (non-finite "
          "loss_value=nan, grad_norm=nan); the last good checkpoint, iteration 2, is in") in err
  assert "Traceback" not in err, err
  assert checkpoint_steps(run)[-1] == 2
  assert [r["nonfinite_updates"] for r in metrics(run)[1:]] == [0, 0, 2, 2]
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # the newest checkpoint, iteration 2, loads as it is.
    _, params = train_lib.load_run(run)
  assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(params))


# ---------------------------------------------------------------------------------------------
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
                                             "model.context=7 is shorter than prompt + answer "
                                             "(4 + 4 = 8 tokens)"),
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
                                        "model.context=40 is shorter than prompt + answer "
                                        "(81 + 16 = 97 tokens)"),
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
  saved = train_lib.build(config_lib.resolve(overrides=FAULT + ["iterations=3"])).config
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


def test_default_top_k_fits_any_vocabulary():
  config = config_lib.resolve(overrides=TINY)
  assert config.search.top_k == 0
  train_lib.build(config)  # vocab 13 < 16: no error.
  train_lib.build(config_lib.resolve(overrides=TINY + ["search.top_k=13"]))


@pytest.mark.parametrize("value,expected", [
    (None, Path("~/.cache/tokenzero/xla").expanduser()), ("", Path("~/.cache/tokenzero/xla")
                                                          .expanduser()),
    ("off", None), ("OFF", None), ("/tmp/x", Path("/tmp/x")),
])
def test_compilation_cache_dir_from_the_environment(value, expected):
  environ = {} if value is None else {compilation_cache.ENV_VAR: value}
  assert compilation_cache.cache_dir(environ) == expected
