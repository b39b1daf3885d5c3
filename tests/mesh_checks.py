"""The device-mesh checks, run by tests/test_mesh.py in a subprocess with 4 forced CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=4`), so that the rest of the suite keeps one.

Prints one JSON object (the last line of stdout) for the test to assert on:
- `rows_four` / `rows_one`: test_loop's tiny run (two iterations, 14 held-out prompts: padded to
  16 on 4 devices) on all 4 devices (the default mesh) and on `mesh.data=1`;
- `resumed_row`: iteration 2 again, resumed from the 4-device run's checkpoint 1 on 4 devices;
- `replicas`: after four more optimizer steps on 4 devices, is every parameter's copy on every
  device the same bytes;
- `fsdp`: the learner's two steps on a 2 x 2 mesh (params split over "model") against the same
  steps on 4 data devices, and a checkpoint of the split state restored onto the same mesh;
- `error`: the ConfigError of a self-play batch of 6 on 4 devices.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from test_loop import DEFAULT_LEARNER, TINY
from tokenzero import checkpoint as ckpt_lib
from tokenzero import config as config_lib
from tokenzero import learner, prompts, selfplay
from tokenzero import loop as loop_lib
from tokenzero import mesh as mesh_lib
from tokenzero import replay as replay_lib
from tokenzero.run import build, initial_params

BASE = TINY + DEFAULT_LEARNER + ["eval.num_prompts=14", "iterations=2", "checkpoint_every=1"]
quiet = lambda message: None


def _loop(setup) -> loop_lib.Loop:
  config = setup.config
  eval_texts = prompts.eval_texts(setup.task, config.seed, config.eval.num_prompts, split="hash")
  return loop_lib.Loop(
      setup=setup,
      optimizer=learner.make_optimizer(config.optim,
                                       config.iterations * config.optim.steps_per_iteration),
      eval_batch=prompts.encode_batch(setup.tokenizer, eval_texts, setup.task.prompt_len),
      stream=prompts.training_stream(setup.task, config.seed, split="hash",
                                     eval_texts=eval_texts),
      anchor_demos=None, reference=None)


def _template(setup, optimizer, mesh) -> ckpt_lib.TrainState:
  params = initial_params(setup.config)
  return ckpt_lib.place(ckpt_lib.TrainState.create(params, optimizer, jax.random.key(0),
                                                   replay=replay_lib.for_run(setup, params)), mesh)


def _same_on_every_device(tree) -> bool:
  return all(len(leaf.addressable_shards) == 4 and all(
      np.array_equal(np.asarray(shard.data), np.asarray(leaf.addressable_shards[0].data))
      for shard in leaf.addressable_shards) for leaf in jax.tree.leaves(tree))


def _fsdp(setup, state: ckpt_lib.TrainState, root: Path) -> dict:
  """Two learner steps from `state` on a self-play batch: 4 data devices vs 2 x 2 (FSDP)."""
  config, mesh4 = setup.config, setup.mesh
  loop = _loop(setup)
  batch = prompts.encode_batch(setup.tokenizer, loop.stream.draw(5, 8), setup.task.prompt_len)
  key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), 5)  # as the loop's: no compile
  traj = selfplay.self_play(
      state.params, *mesh4.place_batch((batch.tokens, batch.lengths)), key,
      jnp.float32(1.0), setup.allowed, config=config.model, search_config=config.search,
      selfplay_config=config.selfplay, reward_fn=setup.reward_fn,
      max_new_tokens=setup.max_new_tokens, eos_id=setup.tokenizer.eos_id, mesh=mesh4)
  mesh22 = mesh_lib.make(config_lib.resolve(overrides=BASE + ["mesh.data=2", "mesh.model=2"]))
  # The loop's very arguments (anchor and reference too): its compiled learner serves mesh4.
  steps = dict(config=config.model, optimizer=loop.optimizer, num_steps=2,
               weights=learner.LossWeights.from_config(config.optim), anchor=None,
               reference=None)
  copy = lambda tree: jax.tree.map(jnp.copy, tree)  # train_steps donates its params
  params4, _, metrics4 = learner.train_steps(copy(state.params), copy(state.opt_state), traj,
                                             mesh=mesh4, **steps)
  split = ckpt_lib.place(copy(state), mesh22)
  params22, opt22, metrics22 = learner.train_steps(split.params, split.opt_state,
                                                   mesh22.place_batch(traj), mesh=mesh22, **steps)
  specs = [leaf.sharding.spec for leaf in jax.tree.leaves(params22)]
  pinned = jax.tree.leaves(jax.tree.map(lambda x, s: x.sharding.is_equivalent_to(s, x.ndim),
                                        params22, mesh22.param_shardings(params22)))
  saved = split._replace(params=params22, opt_state=opt22)
  checkpointer = ckpt_lib.Checkpointer(root / "fsdp", writer=True)
  try:
    checkpointer.save(saved, {})
    restored, _ = checkpointer.restore(int(saved.iteration), _template(setup, loop.optimizer,
                                                                       mesh22))
  finally:
    checkpointer.close()
  return {
      "loss_four": np.asarray(metrics4.loss).tolist(),
      "loss_split": np.asarray(metrics22.loss).tolist(),
      "max_param_diff": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                            for a, b in zip(jax.tree.leaves(params4), jax.tree.leaves(params22))),
      "split_leaves": sum("model" in spec for spec in specs),
      "leaves": len(specs),
      "kept_layout": all(pinned),
      "restored_equal": all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
                            zip(jax.tree.leaves(saved), jax.tree.leaves(restored))),
      "restored_layout": all(a.sharding.is_equivalent_to(b.sharding, a.ndim) for a, b in
                             zip(jax.tree.leaves(saved.params),
                                 jax.tree.leaves(restored.params))),
  }


def main() -> dict:
  assert jax.device_count() == 4, jax.devices()
  root = Path(tempfile.mkdtemp(prefix="tokenzero-mesh-"))
  try:
    setup4 = build(config_lib.resolve(overrides=BASE))
    setup1 = build(config_lib.resolve(overrides=BASE + ["mesh.data=1"]))
    rows_four = loop_lib.train(setup4, root / "four", progress=False, log=quiet)
    rows_one = loop_lib.train(setup1, root / "one", progress=False, log=quiet)

    shutil.copytree(root / "four", root / "resumed")
    shutil.rmtree(root / "resumed" / "checkpoints" / "2")
    resumed = loop_lib.train(setup4, root / "resumed", resume=True, progress=False, log=quiet)

    loop4 = _loop(setup4)
    checkpointer = ckpt_lib.Checkpointer(root / "four" / "checkpoints")
    try:
      state, _ = checkpointer.restore(2, _template(setup4, loop4.optimizer, setup4.mesh))
    finally:
      checkpointer.close()
    restored_devices = [len(leaf.sharding.device_set) for leaf in jax.tree.leaves(state)]
    for iteration in (3, 4):  # four more optimizer steps
      state, _, _ = loop_lib.run_iteration(loop4, state, iteration)
    replicas = _same_on_every_device(state.params)
    fsdp = _fsdp(setup4, state, root)

    try:
      build(config_lib.resolve(overrides=BASE + ["selfplay.batch_size=6"]))
      error = None
    except config_lib.ConfigError as err:
      error = str(err)
    return {
        "devices": setup4.mesh.data, "rows_four": rows_four, "rows_one": rows_one,
        "resumed_row": resumed[-1], "restored_devices": restored_devices,
        "replicas": replicas, "steps": int(state.step),
        "fsdp": fsdp, "error": error,
    }
  finally:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  result = main()
  sys.stdout.flush()
  print(json.dumps(result))
