"""Many hosts: one `tokenzero` process per host, joined into one run by `jax.distributed`.

Every host runs the same command; what joins them is here, and it costs nothing on one process:
- `initialize()`, before any device use: joins the processes when the environment says how
  (`plan`), else leaves JAX alone.
- `is_writer()`: process 0 alone writes the run's files (config, metrics, plots, the lock);
  every process takes part in each checkpoint, which orbax coordinates.
- `gather` / `agree_stop` / `fail_together`: a decision one process takes (a deadline, a
  signal, a reward error) reaches every process before the next collective, so that no process
  waits forever in a collective another one has left.
- `Topology`: how many processes and devices wrote a checkpoint; a run resumes on the same.
- `local_share`: each process plays its share of a global batch (the run's mesh spans the
  processes: `mesh.place_process_rows` makes the shares one global array); `global_batch`
  gathers a batch each process holds only its own rows of (a no-op on global arrays).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from tokenzero.errors import ConfigError

# JAX's own names: `jax.distributed.initialize()` reads the address itself, not the other two.
ADDRESS_VAR, COUNT_VAR, ID_VAR = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                                  "JAX_PROCESS_ID")
# "auto": let JAX detect any cluster it knows (Cloud TPU pods, Kubernetes, mpi4py);
# "off": run alone whatever the environment says.
MODE_VAR = "TOKENZERO_DISTRIBUTED"
_OFF = ("off", "0", "false", "no")
# Schedulers JAX reads by itself: (name, the variables JAX's detection needs, of which the last
# is the process count). As jax/_src/clusters/ checks them.
_SCHEDULERS = (("SLURM", ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID",
                          "SLURM_LOCALID", "SLURM_NTASKS")),
               ("Open MPI", ("OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE")))


class Plan(NamedTuple):
  """How this process joins the others. None fields: JAX's cluster detection fills them."""
  coordinator_address: str | None  # host:port of process 0's coordinator
  num_processes: int | None
  process_id: int | None
  source: str  # where the plan came from: "environment", "SLURM", "Open MPI" or "auto"


def plan(environ: Mapping[str, str] = os.environ) -> Plan | None:
  """The plan the environment gives, or None to run alone (one process: nothing to join).

  `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` together name it; a SLURM
  or Open MPI job of several tasks is detected as JAX does; `TOKENZERO_DISTRIBUTED=auto` asks
  JAX to detect any other cluster, `off` runs alone. Half a plan is an error, never one
  process that silently trains alone."""
  mode = environ.get(MODE_VAR, "").strip().lower()
  if mode in _OFF:
    return None
  if mode not in ("", "auto"):
    raise ConfigError(f"{MODE_VAR}={environ[MODE_VAR]!r}: use 'auto' (let JAX detect the "
                      "cluster) or 'off' (run alone), or leave it unset")
  given = {name: environ.get(name, "").strip() for name in (ADDRESS_VAR, COUNT_VAR, ID_VAR)}
  if all(given.values()):
    count, index = _int(environ, COUNT_VAR), _int(environ, ID_VAR)
    if count < 1 or not 0 <= index < count:
      raise ConfigError(f"{ID_VAR}={index} with {COUNT_VAR}={count}: the ids are 0 to "
                        f"{COUNT_VAR} - 1")
    return None if count == 1 else Plan(given[ADDRESS_VAR], count, index, "environment")
  scheduler = next((name for name, needed in _SCHEDULERS
                    if all(v in environ for v in needed) and _int(environ, needed[-1]) > 1),
                   None)
  if scheduler is not None:  # JAX takes what it is not given from the scheduler.
    return Plan(given[ADDRESS_VAR] or None, None, None, scheduler)
  if any(given.values()):
    missing = [name for name, value in given.items() if not value]
    raise ConfigError(f"{', '.join(n for n, v in given.items() if v)} set but "
                      f"{', '.join(missing)} not: a run on several processes needs all of "
                      f"{ADDRESS_VAR} (process 0's host:port), {COUNT_VAR} and {ID_VAR}")
  return Plan(None, None, None, "auto") if mode == "auto" else None


def _int(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
  value = environ.get(name, "").strip()
  if not value and default is not None:
    return default
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f"{name}={value!r} is not a whole number") from None


def initialize(environ: Mapping[str, str] = os.environ) -> Plan | None:
  """Joins this process to the others when `plan(environ)` says so (before any device use:
  JAX refuses afterwards); None and nothing done when it runs alone or has joined already."""
  joined = plan(environ)
  if joined is None or jax.distributed.is_initialized():
    return None
  if jax.config.jax_cpu_collectives_implementation is None:
    # CPU processes need a cross-process collective library of their own (accelerators have
    # theirs); gloo is the one every jaxlib build has.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(joined.coordinator_address, joined.num_processes,
                               joined.process_id)
  except ValueError as err:  # JAX's detection found no cluster: its words, and ours.
    where = f"{MODE_VAR}=auto" if joined.source == "auto" else f"the {joined.source} job"
    raise ConfigError(f"{where}: JAX could not join the processes ({err}); set "
                      f"{ADDRESS_VAR}, {COUNT_VAR} and {ID_VAR} instead") from None
  return joined


def process_index() -> int:
  return jax.process_index()


def process_count() -> int:
  return jax.process_count()


def is_writer() -> bool:
  """Whether this process writes the run's files: process 0, as orbax's primary host."""
  return jax.process_index() == 0


def local_share(total: int, name: str) -> int:
  """This process's share of a global batch of `total` (a config key's value, named `name`)."""
  count = jax.process_count()
  if total % count:
    lower = total // count * count
    raise ConfigError(f"{name}={total} does not divide over {count} processes (each plays an "
                      f"equal share of the global batch): use a multiple of {count}, such as "
                      f"{lower or count} or {lower + count}")
  return total // count


def gather(values: Sequence[int]) -> np.ndarray:
  """`values` of every process, `[processes, len(values)]` int32, in process order.

  Every process must call it at the same point of the run (it is a collective: a tiny
  all-gather); on one process it returns `values` without touching a device.
  """
  local = np.asarray([int(v) for v in values], np.int32)
  if jax.process_count() == 1:
    return local[None]
  return np.asarray(multihost_utils.process_allgather(local)).reshape(jax.process_count(), -1)


def global_batch(batch):
  """Every process's rows of a batch-major pytree (`[B_local, ...]` leaves), concatenated in
  process order, on every process: `[B_local * processes, ...]`. A leaf that is a global array
  already (spread over the processes' devices) makes it a no-op, as does one process."""
  leaves = jax.tree.leaves(batch)
  if jax.process_count() == 1 or any(isinstance(x, jax.Array) and not x.is_fully_addressable
                                     for x in leaves):
    return batch
  return jax.tree.map(jnp.asarray, multihost_utils.process_allgather(batch, tiled=True))


def agree_stop(flag: bool) -> bool:
  """True on every process when `flag` is true on any (see `gather`)."""
  return bool(gather([flag]).any())


class StoppedElsewhere(RuntimeError):
  """Another process stopped the run; that process's output says why."""


@contextlib.contextmanager
def fail_together(doing: str) -> Iterator[None]:
  """Runs a block that holds no collective; when it raises on any process, it raises on every
  one: the failing process its own error, the others `StoppedElsewhere` naming it (`doing`
  says what the block does, for that message). On one process it only runs the block."""
  if jax.process_count() == 1:
    yield
    return
  try:
    yield
  except Exception:
    gather([1])
    raise
  failed = np.flatnonzero(gather([0])[:, 0])
  if failed.size:
    raise StoppedElsewhere(f"process {failed[0]} of {jax.process_count()} failed {doing}; its "
                           "output says why")


class Topology(NamedTuple):
  """How many processes and devices a run is on; a checkpoint records the one that wrote it."""
  processes: int
  devices: int

  @classmethod
  def current(cls) -> Topology:
    return cls(jax.process_count(), jax.device_count())

  def describe(self) -> str:
    return (f"{self.processes} process{'es' * (self.processes != 1)} with {self.devices} "
            f"device{'s' * (self.devices != 1)}")


def check_topology(saved: Mapping[str, int] | None, current: Topology, *, where: str,
                   allow_change: bool = False) -> None:
  """Refuses to resume a checkpoint written on another topology: the training prompts (one
  stream per process) and the reductions over devices would not be the ones an uninterrupted
  run uses. `saved`: the checkpoint's record (None: written before topologies were recorded, by
  one process)."""
  saved = Topology(**saved) if saved is not None else Topology(1, current.devices)
  if saved == current or allow_change:
    return
  raise ConfigError(f"{where} was written by {saved.describe()}; this run is "
                    f"{current.describe()}: resume it on {saved.describe()}, or pass "
                    "--allow-config-change to go on anyway (its prompts then differ from an "
                    "uninterrupted run's)")
