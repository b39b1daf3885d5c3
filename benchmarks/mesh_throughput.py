"""One training iteration's seconds and self-play tokens/s on 1 vs 4 forced CPU devices.

Each device count runs in its own process (`XLA_FLAGS=--xla_force_host_platform_device_count=N`,
the run's default mesh: every device on "data"), on the same config, seed and global batch:
- `iteration_s`: `loop.run_iteration` (self-play, the learner's steps, the metrics row), after
  one warm-up iteration that compiles; the median of `--repeats`;
- `selfplay_tokens_per_s`: answer tokens decided (the search ran for each) per second of one
  `selfplay.self_play` call, median of `--repeats`;
- `collectives`: the cross-device ops in the compiled self-play and learner programs (kind,
  shape and the op that made them, from XLA's metadata), the answer to "does the search stay on
  its device?".

Forced CPU devices share the machine's cores: on the 2-core machine, 4 devices cannot be faster
than 1, so the ratio measures the mesh's overhead (partitioned programs, collectives, threads),
not a speed-up. The load average is saved beside the figures (other jobs share the cores).

  python benchmarks/mesh_throughput.py [--json benchmarks/mesh_throughput.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OVERRIDES = ["selfplay.batch_size=64", "search.num_simulations=16", "optim.steps_per_iteration=4",
             "eval.num_prompts=64", "iterations=10"]  # sort 5 digits, 2 layers d=64 otherwise
COLLECTIVE = re.compile(r"= (.*?) (all-gather|all-reduce|reduce-scatter|all-to-all|"
                        r"collective-permute)(-start)?\(")


def collectives(hlo: str) -> list[dict]:
  """Cross-device ops of a compiled program's text, counted by (kind, shape, source op)."""
  found = collections.Counter()
  for line in hlo.splitlines():
    if match := COLLECTIVE.search(line):
      op = re.search(r'op_name="([^"]*)"', line)
      source = op.group(1).rsplit("/", 3)[-1] if op else ""
      found[(match.group(2), match.group(1)[:80], source)] += 1
  return [{"kind": k, "shape": s, "op": o, "count": n} for (k, s, o), n in found.most_common()]


def child(repeats: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from tokenzero import checkpoint as ckpt_lib
  from tokenzero import config as config_lib
  from tokenzero import learner, prompts, selfplay
  from tokenzero import loop as loop_lib
  from tokenzero.run import build, initial_params

  setup = build(config_lib.resolve(REPO / "experiments" / "sort.toml", OVERRIDES))
  config, mesh = setup.config, setup.mesh
  eval_texts = prompts.eval_texts(setup.task, config.seed, config.eval.num_prompts, split="hash")
  loop = loop_lib.Loop(
      setup=setup, optimizer=learner.make_optimizer(config.optim, 40),
      eval_batch=prompts.encode_batch(setup.tokenizer, eval_texts, setup.task.prompt_len),
      stream=prompts.training_stream(setup.task, config.seed, split="hash",
                                     eval_texts=eval_texts),
      anchor_demos=None, reference=None)
  state = ckpt_lib.place(ckpt_lib.TrainState.create(initial_params(config), loop.optimizer,
                                                    jax.random.key(config.seed)), mesh)
  t0 = time.monotonic()
  state, _, _ = loop_lib.run_iteration(loop, state, 1)  # compiles
  warmup_s = time.monotonic() - t0
  iteration_s = []
  for iteration in range(2, 2 + repeats):
    t0 = time.monotonic()
    state, _, row = loop_lib.run_iteration(loop, state, iteration)
    iteration_s.append(time.monotonic() - t0)

  batch = prompts.encode_batch(setup.tokenizer, loop.stream.draw(99, config.selfplay.batch_size),
                               setup.task.prompt_len)
  args = (state.params, *mesh.place_batch((batch.tokens, batch.lengths)),
          jax.random.fold_in(jax.random.wrap_key_data(state.rng), 99), jnp.float32(1.0),
          setup.allowed)
  kwargs = dict(config=config.model, search_config=config.search,
                selfplay_config=config.selfplay, reward_fn=setup.reward_fn,
                max_new_tokens=setup.max_new_tokens, eos_id=setup.tokenizer.eos_id, mesh=mesh)
  rates = []
  for _ in range(repeats):
    t0 = time.monotonic()
    traj = jax.block_until_ready(selfplay.self_play(*args, **kwargs))
    rates.append(float(np.asarray(traj.completion_len).sum()) / (time.monotonic() - t0))
  train_kwargs = dict(config=config.model, optimizer=loop.optimizer,
                      num_steps=config.optim.steps_per_iteration,
                      weights=learner.LossWeights.from_config(config.optim), mesh=mesh)
  return {
      "devices": jax.device_count(), "mesh": dict(mesh.mesh.shape),
      "warmup_iteration_s": round(warmup_s, 2),
      "iteration_s": round(statistics.median(iteration_s), 4),
      "iteration_s_all": [round(s, 4) for s in iteration_s],
      "selfplay_tokens_per_s": round(statistics.median(rates), 1),
      "selfplay_tokens_per_s_all": [round(r, 1) for r in rates],
      "collectives": {
          "self_play": collectives(selfplay.self_play.lower(*args, **kwargs).compile().as_text()),
          "train_steps": collectives(learner.train_steps.lower(
              state.params, state.opt_state, traj, **train_kwargs).compile().as_text()),
      },
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--devices", type=int, nargs="+", default=[1, 4])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--json", default=str(Path(__file__).with_suffix(".json")))
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.repeats)))
    return
  results = []
  for devices in args.devices:
    env = dict(os.environ, TOKENZERO_COMPILATION_CACHE="off",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""),
                                 f"--xla_force_host_platform_device_count={devices}"]).strip()
    load_before = os.getloadavg()
    done = subprocess.run([sys.executable, __file__, "--child", "--repeats", str(args.repeats)],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode:
      sys.exit(f"the {devices}-device run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(xla_flags=env["XLA_FLAGS"], load_before=[round(x, 2) for x in load_before],
                  load_after=[round(x, 2) for x in os.getloadavg()])
    results.append(result)
    print(f"{devices} device(s): iteration {result['iteration_s']:.3f} s, self-play "
          f"{result['selfplay_tokens_per_s']:.0f} tokens/s (load {load_before[0]:.1f})")
  base = results[0]
  report = {
      "what": "one training iteration (after warm-up) and self-play tokens/s, 1 vs N forced "
              "CPU devices, same config and global batch, each in its own process",
      "note": f"forced CPU devices share this machine's {os.cpu_count()} cores: more devices "
              "cannot be faster here; the ratios measure the mesh's overhead, not a speed-up",
      "overrides": OVERRIDES, "cpu_count": os.cpu_count(), "machine": platform.processor(),
      "results": results,
      "iteration_s_ratio": {r["devices"]: round(r["iteration_s"] / base["iteration_s"], 3)
                            for r in results},
      "selfplay_tokens_per_s_ratio": {
          r["devices"]: round(r["selfplay_tokens_per_s"] / base["selfplay_tokens_per_s"], 3)
          for r in results},
  }
  Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
