"""Checkpoints with orbax: atomic (temporary directory, then rename), the last K kept.

Each checkpoint holds the train state (params, optimizer state, optimizer step, iteration,
base RNG key) and the resolved config as JSON. `restore_latest` takes the newest checkpoint that
loads; one that is truncated or corrupt is skipped with a warning, never half-loaded.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

# orbax logs every save at INFO through absl; keep the console for the progress bar.
logging.getLogger("absl").setLevel(logging.WARNING)


class TrainState(NamedTuple):
  params: Any
  opt_state: Any
  step: Any  # [] int32 optimizer steps taken
  iteration: Any  # [] int32 loop iterations finished
  rng: Any  # [2] uint32 base key data; iteration i uses fold_in(base, i)


def _manager(directory: Path, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory.absolute(), options=options)


class Checkpointer:
  """Saves and restores `TrainState`s under `directory/<iteration>`."""

  def __init__(self, directory: str | Path, keep: int = 3):
    self.directory = Path(directory)
    self._manager = _manager(self.directory, keep)

  def save(self, state: TrainState, config: dict[str, Any]) -> None:
    iteration = int(state.iteration)
    if iteration in self._manager.all_steps():
      return
    self._manager.save(iteration, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config)))
    self._manager.wait_until_finished()

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, iteration: int, template: TrainState) -> tuple[TrainState, dict[str, Any]]:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    restored = self._manager.restore(iteration, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), config=ocp.args.JsonRestore()))
    return TrainState(*restored["state"]), dict(restored["config"])

  def restore_latest(self, template: TrainState):
    """Newest checkpoint that loads -> (state, config) or None when there is none."""
    for iteration in reversed(self.steps()):
      try:
        state, config = self.restore(iteration, template)
        leaves = jax.tree.leaves(state.params)
        if not all(np.all(np.isfinite(np.asarray(x))) for x in leaves):
          raise ValueError("non-finite parameters")
        return state, config
      except Exception as err:  # noqa: BLE001 -- any failure means "do not trust this one".
        warnings.warn(f"skipping checkpoint {self.directory / str(iteration)}: it could not be "
                      f"loaded ({type(err).__name__}: {str(err)[:200]})", stacklevel=2)
    return None

  def close(self) -> None:
    self._manager.close()
