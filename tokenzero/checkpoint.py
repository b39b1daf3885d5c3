"""Checkpoints with orbax: atomic (temporary directory, then rename), the last K kept.

Each checkpoint holds the train state (params, optimizer state, optimizer step, iteration,
base RNG key), the resolved config as JSON, a SHA-256 digest of the state's bytes and the
topology (processes, devices) that wrote it. On several processes every process saves and
restores together, through orbax's multi-host path: process 0 writes the JSON items.
`restore_latest` takes the newest checkpoint that loads and matches its digest; one that is
truncated or corrupt is skipped with a warning, never half-loaded. The digest is ours because
orbax's own files do not catch everything: a flipped byte in its data files loads silently.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from tokenzero import distributed

# orbax logs every save at INFO through absl; keep the console for the progress bar.
logging.getLogger("absl").setLevel(logging.WARNING)


class TrainState(NamedTuple):
  """All a run needs to go on exactly where it stopped: what a checkpoint holds."""
  params: optax.Params  # the network's parameters (model.init_params' tree)
  opt_state: optax.OptState
  step: jax.Array  # [] int32 optimizer steps taken
  iteration: jax.Array  # [] int32 loop iterations finished
  rng: jax.Array  # [2] uint32 base key data; iteration i uses fold_in(base, i)
  replay: Any = None  # replay.Buffer when `replay.capacity` > 0 (None: no leaves, old layout)

  @classmethod
  def create(cls, params: optax.Params, optimizer: optax.GradientTransformation,
             key: jax.Array, replay: Any = None) -> TrainState:
    """The state before the first iteration: fresh optimizer state, counters at 0."""
    return cls(params=params, opt_state=optimizer.init(params), step=jnp.int32(0),
               iteration=jnp.int32(0), rng=jax.random.key_data(key), replay=replay)


def place(state: TrainState, mesh) -> TrainState:
  """`state` on a `mesh.DeviceMesh`: params and optimizer state in its parameter layout, the
  counters and key replicated. A template placed so restores onto the mesh (orbax reads each
  array's shards where the template's sharding puts them)."""
  return TrainState(params=mesh.place_params(state.params),
                    opt_state=mesh.place_params(state.opt_state),
                    **mesh.place_replicated(dict(step=state.step, iteration=state.iteration,
                                                 rng=state.rng, replay=state.replay)))


def _manager(directory: Path, keep: int, cleanup: bool) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=False,
                                         cleanup_tmp_directories=cleanup)
  return ocp.CheckpointManager(directory.absolute(), options=options)


class Checkpointer:
  """Saves and restores `TrainState`s under `directory/<iteration>`.

  `writer=True` (the training run, the directory's one writer) removes the temporary
  directories that a process killed mid-save left behind; a reader must not, since they may
  be a live run's save in progress.
  """

  def __init__(self, directory: str | Path, keep: int = 3, *, writer: bool = False):
    self.directory = Path(directory)
    self._manager = _manager(self.directory, keep, cleanup=writer)

  def save(self, state: TrainState, config: dict[str, Any]) -> None:
    iteration = int(state.iteration)
    if iteration in self._manager.all_steps():
      # Only a checkpoint that `restore_latest` skipped as corrupt, or the same state saved
      # twice, is here already: never keep a corrupt one in place of a good one.
      self._manager.delete(iteration)
    state = _process_0s(state)
    self._manager.save(iteration, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_global(state)), config=ocp.args.JsonSave(config),
        digest=ocp.args.JsonSave({"sha256": state_digest(state)}),
        topology=ocp.args.JsonSave(distributed.Topology.current()._asdict())))
    self._manager.wait_until_finished()

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, iteration: int, template: TrainState) -> tuple[TrainState, dict[str, Any]]:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _global(template, abstract=True))
    _drop_closed_loop_errors()
    items = dict(state=ocp.args.StandardRestore(abstract), config=ocp.args.JsonRestore())
    # Checkpoints written before digests existed have no digest item: load them unchecked.
    has_digest = (self.directory / str(iteration) / "digest").is_dir()
    if has_digest:
      items["digest"] = ocp.args.JsonRestore()
    restored = self._manager.restore(iteration, args=ocp.args.Composite(**items))
    # Named by the template's structure, not by position.
    state = jax.tree.unflatten(jax.tree.structure(template), jax.tree.leaves(restored["state"]))
    state = jax.tree.map(_like, state, template)
    if not has_digest:
      warnings.warn(f"checkpoint {self.directory / str(iteration)} has no digest (an older "
                    "tokenzero wrote it): loaded without the integrity check", stacklevel=2)
    elif restored["digest"].get("sha256") != state_digest(state):
      raise ValueError("the restored state does not match the digest saved with it")
    return state, dict(restored["config"])

  def topology(self, iteration: int) -> dict[str, int] | None:
    """The `distributed.Topology` that wrote a checkpoint, as a dict; None for one written
    before topologies were recorded."""
    if not (self.directory / str(iteration) / "topology").is_dir():
      return None
    restored = self._manager.restore(iteration, args=ocp.args.Composite(
        topology=ocp.args.JsonRestore()))
    return dict(restored["topology"])

  def restore_latest(self, template: TrainState):
    """Newest checkpoint that loads -> (state, config) or None when there is none."""
    for iteration in reversed(self.steps()):
      try:
        state, config = self.restore(iteration, template)
        leaves = jax.tree.leaves(state.params)
        if not all(np.all(np.isfinite(_host_value(x))) for x in leaves):
          raise ValueError("non-finite parameters")
        return state, config
      except Exception as err:  # noqa: BLE001 -- any failure means "do not trust this one".
        warnings.warn(f"skipping checkpoint {self.directory / str(iteration)}: it could not be "
                      f"loaded ({type(err).__name__}: {str(err)[:200]})", stacklevel=2)
    return None

  def close(self) -> None:
    self._manager.close()


def _host_local(leaf) -> bool:
  return not (isinstance(leaf, jax.Array) and not leaf.is_fully_addressable)


def _process_0s(state: TrainState) -> TrainState:
  """On several processes, process 0's values of the leaves each process holds whole: orbax
  writes a replicated array's parts from several processes, and the digest is process 0's, so
  the processes must agree to the bit on what they save. One process: `state` as is."""
  if jax.process_count() == 1:
    return state
  leaves, tree = jax.tree.flatten(state)
  local = [i for i, leaf in enumerate(leaves) if _host_local(leaf)]
  for i, value in zip(local, multihost_utils.broadcast_one_to_all([leaves[i] for i in local])):
    leaves[i] = value
  return jax.tree.unflatten(tree, leaves)


def _global(state: TrainState, *, abstract: bool = False) -> TrainState:
  """On several processes, the state as orbax saves it: global arrays only. A leaf each process
  holds whole (host-local; the same on every process after `_process_0s`) becomes a global
  array replicated over every device; a leaf that is global already stays as it is.
  `abstract`: only the shardings matter (a restore's template). One process: `state` as is."""
  if jax.process_count() == 1:
    return state
  replicated = jax.sharding.NamedSharding(
      jax.sharding.Mesh(np.array(jax.devices()), ("devices",)), jax.sharding.PartitionSpec())

  def one(leaf):
    if not _host_local(leaf):
      return leaf
    if abstract:
      return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, sharding=replicated)
    return jax.make_array_from_process_local_data(replicated, np.asarray(leaf))

  return jax.tree.map(one, state)


def _like(restored: jax.Array, template: jax.Array) -> jax.Array:
  """A restored leaf placed as the template's is (host-local again where `_global` made it
  global)."""
  if (isinstance(template, jax.Array) and template.is_fully_addressable
      and not restored.is_fully_addressable):
    return jax.device_put(restored.addressable_data(0), template.sharding)
  return restored


def _drop_closed_loop_errors() -> None:
  """orbax restores on an asyncio loop of its own; when one read fails, tensorstore still hands
  the other reads' results to that loop after it closed, and each prints a 'RuntimeError: Event
  loop is closed' traceback through `sys.unraisablehook`. The failure itself is reported (the
  checkpoint is skipped with a warning): drop exactly those tracebacks, pass on anything else."""
  previous = sys.unraisablehook
  if getattr(previous, "drops_closed_loop_errors", False):
    return

  def hook(unraisable):
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
      previous(unraisable)

  hook.drops_closed_loop_errors = True
  sys.unraisablehook = hook


def _host_value(leaf) -> np.ndarray:
  """A leaf's whole value in numpy. A global array that no process holds whole as one array
  (params split by `mesh.model` on a mesh over several processes) is put together from this
  process's shards when they cover it (each process holds a full copy across its own devices),
  else gathered from every process (a collective: every process calls it at the same point)."""
  if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable or leaf.is_fully_replicated:
    return np.asarray(jax.device_get(leaf))
  value = np.empty(leaf.shape, leaf.dtype)
  covered = {}
  for shard in leaf.addressable_shards:
    key = tuple((s.start, s.stop) for s in shard.index)
    if key not in covered:
      covered[key] = np.asarray(shard.data)
      value[shard.index] = covered[key]
  if sum(part.size for part in covered.values()) == value.size:
    return value
  return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))


def state_digest(state: TrainState) -> str:
  """SHA-256 over every leaf's dtype, shape and bytes, in tree order: the same for the same
  values however they are split over devices and processes."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(state):
    array = _host_value(leaf)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()
