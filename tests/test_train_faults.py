"""Faults, tested the hard way: `kill -9` and resume, corrupt checkpoints, SIGTERM and SIGINT,
a planted NaN, a run whose checkpoints all fail to load.

The tests drive `python -m tokenzero.cli train` in subprocesses that share one persistent XLA
compilation cache (TOKENZERO_COMPILATION_CACHE), so only the first process compiles. Their config
makes the run independent of `iterations` (constant temperature, a fixed LR horizon), so a run
may be resumed with a larger `--iterations` and still be compared row by row with a run that
never stopped.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from tokenzero import config as config_lib
from tokenzero import run as run_lib
from tokenzero import loop as train_lib
from tokenzero.stopping import TrainingError

REPO = Path(__file__).resolve().parents[1]
TINY = ["task.params.length=3", "model.d_model=16", "model.num_heads=2", "model.num_layers=1",
        "selfplay.batch_size=8", "search.num_simulations=4", "eval.num_prompts=16",
        "optim.steps_per_iteration=2", "optim.decay_steps=50"]
# Iteration-independent schedule; a checkpoint every iteration.
FAULT = TINY + ["checkpoint_every=1", "selfplay.final_temperature=1.0"]  # the default learner
# What differs between two processes running the same iterations: the timings, and the
# compilations (a resumed process compiles, or loads from the cache, what the killed one had).
PER_PROCESS = ("elapsed_s", "selfplay_s", "train_s", "replay_s", "compiles")
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
  """Rows without their timings and compilations, up to a last line that a kill may have cut."""
  rows = []
  for line in (run / "metrics.jsonl").read_text().splitlines():
    try:
      rows.append({k: v for k, v in json.loads(line).items() if k not in PER_PROCESS})
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


def test_kill_9_six_times_then_resume_matches_an_uninterrupted_run(tmp_path, cli_env):
  rng = random.Random(6)  # kill points are random but the same on every run of the test.
  run = tmp_path / "killed"
  argv = ["--out", str(run), "--iterations", "1000"] + FAULT
  newest, kill_points = -1, []
  for attempt in range(6):  # six random kill points (ten cost the suite ~30 s more)
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
  # A fresh process that loads every program from the cache: the loads count, and after the
  # first iteration nothing is compiled or loaded.
  compiled = [json.loads(line)["compiles"]
              for line in (reference_run / "metrics.jsonl").read_text().splitlines()]
  assert compiled[0] > 0 and compiled[1] > 0 and not any(compiled[2:]), compiled
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
    run_lib.load_run(run, iteration=after_sigint)


def test_resume_refuses_to_start_over_when_no_checkpoint_loads(tmp_path):
  config = config_lib.resolve(overrides=FAULT + ["iterations=3"])
  (tmp_path / "config.json").write_text(json.dumps(
      config_lib.to_dict(run_lib.build(config).config)))
  (tmp_path / "checkpoints" / "2" / "state").mkdir(parents=True)
  (tmp_path / "checkpoints" / "2" / "state" / "_METADATA").write_text("{not json")
  with pytest.warns(UserWarning, match="skipping checkpoint"):
    with pytest.raises(TrainingError, match=r"none of the checkpoints \[2\]"):
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
    nan = float("nan")  # the value targets too: replay's batch carries them filled in
    traj = traj._replace(reward=traj.reward * nan, value_target=None if traj.value_target is None
                         else traj.value_target * nan)
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
    _, params = run_lib.load_run(run)
  assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(params))
