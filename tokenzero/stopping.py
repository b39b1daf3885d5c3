"""Reasons a training run stops early: a signal, a streak of non-finite updates, a failure.

The loop asks at each iteration boundary, and on several processes every process asks every
other (`agree_at_boundary`): one process's reason stops them all at the same boundary.
Checkpoints are never lost to any of them.
"""

from __future__ import annotations

import math
import signal
from typing import NamedTuple

import numpy as np

from tokenzero import distributed
from tokenzero.learner import TrainMetrics


class TrainingError(RuntimeError):
  """The run cannot go on (non-finite updates, a failing reward...). Checkpoints are kept."""


class Interrupted(Exception):
  """SIGINT or SIGTERM stopped the run at an iteration boundary; the message says how to resume."""

  def __init__(self, message: str, *, signum: int):
    super().__init__(message)
    self.signum = signum


class NonfiniteStreak:
  """Consecutive skipped optimizer updates, across iterations, and where the streak began."""

  def __init__(self):
    self.length = 0
    self.start = ""  # its first skipped step and that step's non-finite metrics

  def update(self, metrics: TrainMetrics, first_step: int) -> None:
    for index, was_skipped in enumerate(np.asarray(metrics.skipped)):
      if not was_skipped:
        self.length, self.start = 0, ""
        continue
      if not self.length:
        self.start = _describe_nonfinite(metrics, index, first_step + index)
      self.length += 1


class StopFlag:
  """SIGINT/SIGTERM ask the loop to stop at the next iteration boundary."""

  def __init__(self):
    self.signal_name: str | None = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: signals stay as they are.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signal_name is not None:  # a second Ctrl-C: stop now.
      raise KeyboardInterrupt
    self.signal_name = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class Boundary(NamedTuple):
  """What every process of a run does at an iteration boundary: the same on each."""
  failure: str | None  # a streak of skipped updates reached the limit: the run fails
  stop_reason: str | None  # stop after this iteration's checkpoint, and why
  signum: int  # the signal behind `stop_reason`, 0 for none
  skipping: bool  # some process's last update was skipped: checkpoint nothing


def agree_at_boundary(stop: StopFlag, streak: NonfiniteStreak, *, out_of_time: bool,
                      max_nonfinite: int, minutes: float) -> Boundary:
  """This process's reasons to stop, and every other process's (one all-gather on several
  processes): a reason anywhere is a reason everywhere, and a message names the process it came
  from when it is another one."""
  signum = signal.Signals[stop.signal_name].value if stop.signal_name else 0
  failed = streak.length >= max_nonfinite
  votes = distributed.gather([failed, streak.length > 0, signum, out_of_time])  # [processes, 4]
  failure = None
  if failed:
    failure = (f"{streak.length} consecutive optimizer updates were skipped "
               f"(optim.max_nonfinite_updates={max_nonfinite}), the first at {streak.start}")
  elif votes[:, 0].any():
    failure = (f"process {_first(votes[:, 0])}'s last {max_nonfinite} optimizer updates were "
               "skipped (optim.max_nonfinite_updates); its output says which")
  agreed_signum = int(votes[:, 2].max())
  stop_reason = None
  if agreed_signum:
    name = signal.Signals(agreed_signum).name
    stop_reason = (f"received {name}" if signum == agreed_signum
                   else f"process {_first(votes[:, 2] == agreed_signum)} received {name}")
  elif votes[:, 3].any():
    stop_reason = f"reached the {minutes:g}-minute budget"
  return Boundary(failure, stop_reason, agreed_signum, bool(votes[:, 1].any()))


def _first(flags: np.ndarray) -> int:
  return int(np.flatnonzero(flags)[0])


def _describe_nonfinite(metrics: TrainMetrics, index: int, step: int) -> str:
  """'optimizer step 7 (non-finite loss_value=nan, grad_norm=nan)' for a skipped update."""
  values = {name: float(np.asarray(getattr(metrics, name))[index])
            for name in ("loss_policy", "loss_value", "loss_anchor", "grad_norm")}
  bad = [f"{name}={value}" for name, value in values.items() if not math.isfinite(value)]
  return f"optimizer step {step} (non-finite {', '.join(bad) or 'update'})"
