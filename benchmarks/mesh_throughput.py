"""One training iteration's seconds and self-play tokens/s on 1 vs 4 forced CPU devices.

Each device count runs in its own process (`XLA_FLAGS=--xla_force_host_platform_device_count=N`,
the run's default mesh: every device on "data"), on the same config, seed and global batch:
- `iteration_s`: `loop.run_iteration` (self-play, the learner's steps, the metrics row), after
  one warm-up iteration that compiles; the median of `--repeats`;
- `selfplay_tokens_per_s`: answer tokens decided (the search ran for each) per second of one
  `selfplay.self_play` call, median of `--repeats`;
- the same two on the process's CPU clock, all threads (`iteration_cpu_s`,
  `selfplay_tokens_per_cpu_s`): on a machine shared with other jobs, the steadier measure of
  the work the mesh adds;
- `collectives` (first round): the cross-device ops in the compiled self-play and learner
  programs (kind, shape and the op that made them, from XLA's metadata), the answer to "does
  the search stay on its device?".

The device counts alternate for `--rounds` rounds (1, 4, 1, 4, ...), so that a change in the
machine's load falls on both; the ratios are of the medians over rounds. Forced CPU devices
share the machine's cores: on the 2-core machine, 4 devices cannot be faster than 1, so the
ratio measures the mesh's overhead (partitioned programs, collectives, threads), not a
speed-up. The load average is saved beside the figures (other jobs share the cores).

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


def _timed(fn):
  """(result, wall seconds, CPU seconds of every thread of this process)."""
  wall, cpu = time.monotonic(), time.process_time()
  result = fn()
  return result, time.monotonic() - wall, time.process_time() - cpu


def child(repeats: int, hlo: bool) -> dict:
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
  (state, _, _), warmup_s, _ = _timed(lambda: loop_lib.run_iteration(loop, state, 1))  # compiles
  iteration_s, iteration_cpu_s = [], []
  for iteration in range(2, 2 + repeats):
    (state, _, _), wall, cpu = _timed(lambda: loop_lib.run_iteration(loop, state, iteration))
    iteration_s.append(wall)
    iteration_cpu_s.append(cpu)

  batch = prompts.encode_batch(setup.tokenizer, loop.stream.draw(99, config.selfplay.batch_size),
                               setup.task.prompt_len)
  args = (state.params, *mesh.place_batch((batch.tokens, batch.lengths)),
          jax.random.fold_in(jax.random.wrap_key_data(state.rng), 99), jnp.float32(1.0),
          setup.allowed)
  kwargs = dict(config=config.model, search_config=config.search,
                selfplay_config=config.selfplay, reward_fn=setup.reward_fn,
                max_new_tokens=setup.max_new_tokens, eos_id=setup.tokenizer.eos_id, mesh=mesh)
  rates, cpu_rates = [], []
  for _ in range(repeats):
    traj, wall, cpu = _timed(
        lambda: jax.block_until_ready(selfplay.self_play(*args, **kwargs)))
    tokens = float(np.asarray(traj.completion_len).sum())
    rates.append(tokens / wall)
    cpu_rates.append(tokens / cpu)
  result = {
      "devices": jax.device_count(), "mesh": dict(mesh.mesh.shape),
      "warmup_iteration_s": round(warmup_s, 2),
      "iteration_s": round(statistics.median(iteration_s), 4),
      "iteration_s_all": [round(s, 4) for s in iteration_s],
      "iteration_cpu_s": round(statistics.median(iteration_cpu_s), 4),
      "selfplay_tokens_per_s": round(statistics.median(rates), 1),
      "selfplay_tokens_per_s_all": [round(r, 1) for r in rates],
      "selfplay_tokens_per_cpu_s": round(statistics.median(cpu_rates), 1),
  }
  if hlo:  # compiles both programs again, for their text
    train_kwargs = dict(config=config.model, optimizer=loop.optimizer,
                        num_steps=config.optim.steps_per_iteration,
                        weights=learner.LossWeights.from_config(config.optim), mesh=mesh)
    result["collectives"] = {
        "self_play": collectives(selfplay.self_play.lower(*args, **kwargs).compile().as_text()),
        "train_steps": collectives(learner.train_steps.lower(
            state.params, state.opt_state, traj, **train_kwargs).compile().as_text()),
    }
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--devices", type=int, nargs="+", default=[1, 4])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--json", default=str(Path(__file__).with_suffix(".json")))
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--hlo", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.repeats, args.hlo)))
    return
  results = []
  for round_index, devices in ((r, d) for r in range(args.rounds) for d in args.devices):
    env = dict(os.environ, TOKENZERO_COMPILATION_CACHE="off",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""),
                                 f"--xla_force_host_platform_device_count={devices}"]).strip()
    load_before = os.getloadavg()
    done = subprocess.run([sys.executable, __file__, "--child", "--repeats", str(args.repeats)]
                          + (["--hlo"] if round_index == 0 else []),
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode:
      sys.exit(f"the {devices}-device run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(round=round_index, xla_flags=env["XLA_FLAGS"],
                  load_before=[round(x, 2) for x in load_before],
                  load_after=[round(x, 2) for x in os.getloadavg()])
    results.append(result)
    print(f"round {round_index}, {devices} device(s): iteration {result['iteration_s']:.3f} s "
          f"({result['iteration_cpu_s']:.3f} CPU s), self-play "
          f"{result['selfplay_tokens_per_s']:.0f} tokens/s "
          f"({result['selfplay_tokens_per_cpu_s']:.0f} per CPU s), load {load_before[0]:.1f}")
  keys = ("iteration_s", "iteration_cpu_s", "selfplay_tokens_per_s", "selfplay_tokens_per_cpu_s")
  medians = {devices: {key: statistics.median(r[key] for r in results if r["devices"] == devices)
                       for key in keys} for devices in args.devices}
  base = medians[args.devices[0]]
  report = {
      "what": "one training iteration (after warm-up) and self-play tokens/s, 1 vs N forced "
              "CPU devices, same config and global batch, each in its own process",
      "note": f"forced CPU devices share this machine's {os.cpu_count()} cores: more devices "
              "cannot be faster here; the ratios measure the mesh's overhead, not a speed-up",
      "overrides": OVERRIDES, "cpu_count": os.cpu_count(), "machine": platform.processor(),
      "results": results, "medians": medians,
      # N devices' figure over 1 device's: > 1 is slower for seconds, faster for tokens/s.
      "ratios": {devices: {key: round(m[key] / base[key], 3) for key in keys}
                 for devices, m in medians.items()},
  }
  Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
