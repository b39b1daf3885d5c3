"""One of the two processes of test_distributed's two-process test (not a test module itself).

Joins the other by the environment's `JAX_*` variables (two CPU devices each), then uses each
agreement once and saves and restores a checkpoint whose parameters differ between the
processes; then lays a mesh over the four devices: each process's own prompt rows make one
global batch, and a checkpoint of params split by `mesh.model` (held whole by each process)
saves, digests and restores. Prints what it saw as one JSON line.
Usage: python tests/distributed_worker.py CHECKPOINT_DIR
"""

import dataclasses
import json
import sys
from pathlib import Path

from tokenzero import distributed

distributed.initialize()  # before anything touches a device.

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from tokenzero import checkpoint as ckpt_lib  # noqa: E402
from tokenzero import mesh as mesh_lib  # noqa: E402
from tokenzero.config import ConfigError, MeshConfig, RunConfig, SelfPlayConfig  # noqa: E402


def _on_mesh(directory: Path, me: int) -> dict:
  """The mesh over both processes' devices: rows, a split-params checkpoint, a refused split."""
  config = RunConfig(selfplay=SelfPlayConfig(batch_size=4), mesh=MeshConfig(model=2))
  mesh = mesh_lib.make(config)
  rows = mesh.place_process_rows({"x": np.full((2, 3), me, np.int32)})["x"]
  w = np.arange(8 * 6, dtype=np.float32).reshape(8, 6)
  state = ckpt_lib.place(ckpt_lib.TrainState(
      params={"w": jnp.asarray(w)}, opt_state={}, step=jnp.int32(0), iteration=jnp.int32(2),
      rng=jnp.array([0, 7], jnp.uint32)), mesh)
  whole = ckpt_lib.TrainState(params={"w": w}, opt_state={}, step=np.int32(0),
                              iteration=np.int32(2), rng=np.array([0, 7], np.uint32))
  checkpointer = ckpt_lib.Checkpointer(directory, writer=True)
  checkpointer.save(state, {"seed": 0})
  restored = checkpointer.restore_latest(state)
  checkpointer.close()
  try:
    mesh_lib.make(dataclasses.replace(config, mesh=MeshConfig(model=4)))
    refused = None
  except ConfigError as err:
    refused = str(err)
  return {"mesh": [mesh.data, mesh.model], "rows_global": not rows.is_fully_addressable,
          "rows": mesh_lib.to_host(rows)[:, 0].tolist(),
          "w_split": not state.params["w"].is_fully_addressable
                     and not state.params["w"].is_fully_replicated,
          "digest_as_one_process": ckpt_lib.state_digest(state) == ckpt_lib.state_digest(whole),
          "split_restored": restored is not None
                            and restored[0].params["w"].sharding == state.params["w"].sharding
                            and np.array_equal(mesh_lib.to_host(restored[0].params["w"]), w),
          "model_4": refused, "devices": jax.device_count()}


def main(directory: Path) -> None:
  me = distributed.process_index()
  seen = {"process": me, "count": distributed.process_count(),
          "writer": distributed.is_writer(),
          "gather": distributed.gather([me, 10 + me]).tolist(),
          "stop": distributed.agree_stop(me == 1),
          "batch": distributed.global_batch({"x": jnp.full((2,), me)})["x"].tolist()}
  try:
    with distributed.fail_together("on purpose"):
      if me == 1:
        raise KeyError("process 1's own")
    seen["failed"] = None
  except (KeyError, distributed.StoppedElsewhere) as err:
    seen["failed"] = type(err).__name__
  # Process 0's values are the checkpoint's, digest included, whatever process 1 holds.
  state = ckpt_lib.TrainState(params={"w": jnp.full((3,), float(me))}, opt_state={},
                              step=jnp.int32(0), iteration=jnp.int32(1),
                              rng=jnp.array([0, 7], jnp.uint32))
  checkpointer = ckpt_lib.Checkpointer(directory, writer=True)
  checkpointer.save(state, {"seed": 0})
  restored = checkpointer.restore_latest(state)
  seen["restored_w"] = None if restored is None else restored[0].params["w"].tolist()
  seen["topology"] = checkpointer.topology(1)
  checkpointer.close()
  seen.update(_on_mesh(directory.with_name(directory.name + "_mesh"), me))
  print(json.dumps(seen), flush=True)


if __name__ == "__main__":
  main(Path(sys.argv[1]))
