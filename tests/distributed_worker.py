"""One of the two processes of test_distributed's two-process test (not a test module itself).

Joins the other by the environment's `JAX_*` variables, then uses each agreement once and saves
and restores a checkpoint whose parameters differ between the processes; prints what it saw as
one JSON line. Usage: python tests/distributed_worker.py CHECKPOINT_DIR
"""

import json
import sys
from pathlib import Path

from tokenzero import distributed

distributed.initialize()  # before anything touches a device.

import jax.numpy as jnp  # noqa: E402

from tokenzero import checkpoint as ckpt_lib  # noqa: E402


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
  print(json.dumps(seen), flush=True)


if __name__ == "__main__":
  main(Path(sys.argv[1]))
