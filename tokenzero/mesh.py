"""The device mesh a run computes on: `mesh.data` x `mesh.model` devices, built from the config.

Batch sizes in the config are global. Every batch (prompts, trajectories, anchor demos, the
held-out prompts) is split along its first axis over the "data" axis; every sequence's search
tree is independent, so self-play and search run on each slice alone, and the learner's mean
over the global batch is one all-reduce that jit inserts. Parameters (and the optimizer's
moments) are replicated, or with `mesh.model > 1` each is split along its largest axis that
`mesh.model` divides (FSDP style: jit gathers a weight where it is used). Random numbers do not
depend on the mesh: JAX's partitionable threefry draws the same bits for an array however it
is split, so a seed and a global batch give the same run on 1 device and on 4, up to the order
of float reductions.

The mesh takes the first `data * model` devices of `jax.devices()`, which spans every process
of a multi-host run. On one device nothing is placed or pinned: the programs are exactly those
of a run without a mesh (the same compiled code, the same persistent-cache entries).

Dimension letters: B batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tokenzero.config import ConfigError, RunConfig

AXES = ("data", "model")


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def mesh_shape(config: RunConfig, num_devices: int) -> tuple[int, int]:
  """(data, model) for `config.mesh` on `num_devices` devices, and every batch of the config
  checked to divide over `data`; raises ConfigError naming the numbers to change."""
  data, model = config.mesh.data, config.mesh.model
  if model < 1:
    raise ConfigError(f"mesh.model must be >= 1, got {model}")
  if data < 0:
    raise ConfigError(f"mesh.data must be >= 0 (0: all the devices), got {data}")
  if not data:
    if num_devices % model:
      raise ConfigError(f"mesh.model={model} does not divide the {num_devices} devices: give "
                        f"one of {_divisors(num_devices)}")
    data = num_devices // model
  if data * model > num_devices:
    raise ConfigError(f"mesh.data={data} x mesh.model={model} needs {data * model} devices; "
                      f"there are {num_devices}")
  batches = [("selfplay.batch_size", config.selfplay.batch_size)]
  if config.optim.anchor_weight > 0:
    batches.append(("optim.anchor_batch_size",
                    config.optim.anchor_batch_size or config.selfplay.batch_size))
  for key, size in batches:
    if size % data:
      near = " or ".join(str(n) for n in sorted({size // data * data, -(-size // data) * data})
                         if n > 0)
      raise ConfigError(
          f"{key}={size} does not divide over the mesh's {data} data devices (batch sizes are "
          f"global, split evenly): set {key} to a multiple of {data} ({near}), or mesh.data "
          f"to a divisor of {size} ({', '.join(map(str, _divisors(size)))})")
  return data, model


@dataclasses.dataclass(frozen=True)
class DeviceMesh:
  """A [data, model] mesh and where arrays go on it. Hashable: a static argument of jit."""
  mesh: Mesh

  @property
  def data(self) -> int:
    return self.mesh.shape["data"]

  @property
  def model(self) -> int:
    return self.mesh.shape["model"]

  @property
  def single(self) -> bool:
    """One device: placing and pinning are no-ops."""
    return self.mesh.size == 1

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def batch(self) -> NamedSharding:
    """The first axis split over "data" (the rows), the rest whole."""
    return NamedSharding(self.mesh, P("data"))

  def param_spec(self, shape: Sequence[int]) -> P:
    """A parameter's split: its largest axis that `model` divides, over "model" (none: whole)."""
    if self.model == 1:
      return P()
    fits = [axis for axis, size in enumerate(shape) if size % self.model == 0]
    if not fits:
      return P()
    axis = max(fits, key=lambda a: shape[a])
    return P(*[("model" if a == axis else None) for a in range(len(shape))])

  def param_shardings(self, tree) -> Any:
    """A pytree of `NamedSharding`s for params (or their optimizer state), leaf by leaf."""
    return jax.tree.map(lambda x: NamedSharding(self.mesh, self.param_spec(np.shape(x))), tree)

  def _put(self, tree, shardings):
    if self.single:
      return tree
    if jax.process_count() > 1:
      # device_put of a process-local jax.Array onto several processes' devices builds a
      # malformed array in JAX 0.10 (orbax then fails on its shards); numpy, the same value on
      # every process, goes in whole. A global array is only resharded.
      tree = jax.tree.map(
          lambda x: np.asarray(x) if not isinstance(x, jax.Array) or x.is_fully_addressable
          else x, tree)
    return jax.device_put(tree, shardings)

  def place_params(self, tree):
    return self._put(tree, self.param_shardings(tree))

  def place_batch(self, tree):
    return self._put(tree, jax.tree.map(lambda _: self.batch, tree))

  def place_process_rows(self, tree):
    """Each process's own rows (`[B / processes, ...]` leaves, process p's being rows p * B /
    processes onwards) -> global `[B, ...]` arrays split by rows; one process: `place_batch`.
    `make` lays the mesh out so that a process's devices hold exactly its own rows."""
    if jax.process_count() == 1:
      return self.place_batch(tree)

    def one(x):
      x = np.asarray(x)
      shape = (x.shape[0] * jax.process_count(), *x.shape[1:])
      return jax.make_array_from_process_local_data(self.batch, x, shape)

    return jax.tree.map(one, tree)

  def place_replicated(self, tree):
    return self._put(tree, jax.tree.map(lambda _: self.replicated, tree))

  def constrain_params(self, tree):
    """Inside jit: pins params (or same-shaped optimizer state) to their shardings, so that a
    jitted step hands back what it took (no resharding, no recompile next time)."""
    if self.single:
      return tree
    return jax.lax.with_sharding_constraint(tree, self.param_shardings(tree))

  def constrain_batch(self, tree):
    if self.single:
      return tree
    return jax.lax.with_sharding_constraint(tree, jax.tree.map(lambda _: self.batch, tree))

  def padded(self, rows: int) -> int:
    """The batch size to pad `rows` to so that it splits over the data devices."""
    return math.ceil(rows / self.data) * self.data


def make(config: RunConfig, devices: Sequence[jax.Device] | None = None) -> DeviceMesh:
  """The run's mesh over the first data x model devices; raises ConfigError (see `mesh_shape`).
  `devices`: default every process's (`jax.devices()`); a process's own `jax.local_devices()`
  give a mesh it computes on alone (reading a finished run)."""
  spans = devices is None and jax.process_count() > 1
  devices = list(jax.devices() if devices is None else devices)
  data, model = mesh_shape(config, len(devices))
  if spans and data * model != len(devices):
    raise ConfigError(f"mesh.data={data} x mesh.model={model} must use all {len(devices)} "
                      f"devices of a {jax.process_count()}-process run")
  grid = np.array(devices[:data * model], dtype=object).reshape(data, model)
  if spans:
    _check_process_rows(grid, model)
  return DeviceMesh(Mesh(grid, AXES))


def _check_process_rows(grid: np.ndarray, model: int) -> None:
  """Each process plays its own rows of a batch (`place_process_rows`): its devices must be
  whole rows of the [data, model] grid, in process order, so a parameter split by
  `mesh.model` never spans two processes."""
  count = jax.process_count()
  owner = np.vectorize(lambda d: d.process_index)(grid)
  expected = np.repeat(np.arange(count), grid.shape[0] // count)[:, None]
  if grid.shape[0] % count or not (owner == expected).all():
    local = len(jax.local_devices())
    raise ConfigError(f"mesh.model={model} splits parameters across processes: each of the "
                      f"{count} processes plays its own rows of the batch on its own "
                      f"{local} devices, so mesh.model must divide {local} "
                      f"({', '.join(map(str, _divisors(local)))})")


def pad_rows(tree, rows: int):
  """Each leaf's first axis [B, ...] -> [rows, ...], repeating the last row (a real input, so
  that a reward or tokenizer never sees an empty one); the extra rows' results are dropped."""
  def pad(x):
    x = np.asarray(x)
    extra = rows - x.shape[0]
    return x if extra == 0 else np.concatenate([x, np.repeat(x[-1:], extra, axis=0)])
  return jax.tree.map(pad, tree)


def to_host(tree):
  """Numpy copies of (global) arrays, gathered from every process when one holds only its own
  rows: what metrics are computed from, so they are over the global batch."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
  return jax.tree.map(get, tree)
