"""Reasons a training run stops early: a signal, a streak of non-finite updates, a failure.

The loop asks at each iteration boundary; checkpoints are never lost to any of them.
"""

from __future__ import annotations

import math
import signal

import numpy as np

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


def _describe_nonfinite(metrics: TrainMetrics, index: int, step: int) -> str:
  """'optimizer step 7 (non-finite loss_value=nan, grad_norm=nan)' for a skipped update."""
  values = {name: float(np.asarray(getattr(metrics, name))[index])
            for name in ("loss_policy", "loss_value", "loss_anchor", "grad_norm")}
  bad = [f"{name}={value}" for name, value in values.items() if not math.isfinite(value)]
  return f"optimizer step {step} (non-finite {', '.join(bad) or 'update'})"
