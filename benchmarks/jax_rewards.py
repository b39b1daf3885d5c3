"""Self-play iteration time of anagram and countdown with each way of computing their reward.

- `host`: the task's Python `score_batch` through the host callback, entered at every search
  simulation (what these tasks ran before their in-graph rewards: `skip_idle=False`);
- `host_skip`: the same callback behind the `lax.cond` that stays on the device when no answer
  ended in the simulation (what any Python reward gets now);
- `jax`: the task's in-graph reward (`Task.jax_reward`, what the task uses now).

The run is `experiments/all_tasks.py`'s default for the task (experiments/sort.toml with the
task swapped in: B = 256 prompts, 32 simulations, a 2-layer d=64 model at random init;
`--set` overrides any key, e.g. `--set selfplay.batch_size=64`). Each variant's first call
compiles and is timed apart; then `--repeats` calls of each, interleaved (same machine load),
each `selfplay.self_play` on the same prompts and key, timed to `block_until_ready` on the wall
clock and on this process's CPU clock (all threads: the steadier of the two on a shared
machine). `ratio_*` = host seconds / variant seconds (the median call). Host crossings per call
are counted by wrapping `jax.pure_callback` while the host variants trace. The three variants
must play the same trajectories (`same_trajectory`): the rewards are equal, float32 for float32.

  python benchmarks/jax_rewards.py [--tasks anagram,countdown] [--json benchmarks/jax_rewards.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from tokenzero import config as config_lib
from tokenzero import model as model_lib
from tokenzero import prompts, rewards, run, selfplay

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
VARIANTS = ("host", "host_skip", "jax")


def task_config(task: str, overrides: list[str]) -> config_lib.RunConfig:
  """`experiments/all_tasks.py`'s config for a task without its own .toml."""
  base = config_lib.load_toml(EXPERIMENTS / "sort.toml")
  base["task"] = {"name": task}
  return config_lib.resolve(None, overrides, base=base)


@contextlib.contextmanager
def counting_callbacks(counter: list[int]):
  """Every `jax.pure_callback` traced inside appends to `counter` each time it runs."""
  real = jax.pure_callback

  def counting(callback, *args, **kwargs):
    def counted(*values):
      counter.append(1)
      return callback(*values)
    return real(counted, *args, **kwargs)

  jax.pure_callback = counting
  try:
    yield
  finally:
    jax.pure_callback = real


def bench_task(name: str, *, overrides: list[str], repeats: int) -> dict:
  setup = run.build(task_config(name, overrides))
  config, task, tokenizer = setup.config, setup.task, setup.tokenizer
  assert task.jax_reward() is not None, f"{name} has no in-graph reward at these parameters"
  reward_fns = {
      "host": rewards.host_token_reward(task.reward_name, task.score_batch, tokenizer,
                                        skip_idle=False),
      "host_skip": rewards.host_token_reward(task.reward_name, task.score_batch, tokenizer),
      "jax": setup.reward_fn,
  }
  params = model_lib.init_params(config.model, jax.random.key(config.seed))
  texts = task.sample(np.random.default_rng(config.seed), config.selfplay.batch_size)
  batch = prompts.encode_batch(tokenizer, texts, task.prompt_len)
  key = jax.random.key(1)
  crossings = {variant: [] for variant in VARIANTS}

  def call(variant):
    with counting_callbacks(crossings[variant]):  # only a first call traces
      traj = selfplay.self_play(
          params, batch.tokens, batch.lengths, key, jnp.float32(config.selfplay.temperature),
          setup.allowed, config=config.model, search_config=config.search,
          selfplay_config=config.selfplay, reward_fn=reward_fns[variant],
          max_new_tokens=setup.max_new_tokens, eos_id=tokenizer.eos_id)
      traj = jax.block_until_ready(traj)
    rewards.raise_pending()
    return traj

  row = {"task": name, "task_params": dict(config.task.params),
         "batch": config.selfplay.batch_size, "num_simulations": config.search.num_simulations,
         "max_new_tokens": setup.max_new_tokens, "num_layers": config.model.num_layers,
         "d_model": config.model.d_model}
  trajectories = {}
  for variant in VARIANTS:
    t0 = time.perf_counter()
    trajectories[variant] = call(variant)
    row[variant] = {"first_call_s": round(time.perf_counter() - t0, 2), "seconds": [],
                    "cpu_seconds": []}
    del crossings[variant][:]
  for _ in range(repeats):
    for variant in VARIANTS:
      wall, cpu = time.perf_counter(), time.process_time()
      call(variant)
      row[variant]["seconds"].append(round(time.perf_counter() - wall, 4))
      row[variant]["cpu_seconds"].append(round(time.process_time() - cpu, 4))
  host = row["host"]
  for variant in VARIANTS:
    stats = row[variant]
    stats["median_s"] = statistics.median(stats["seconds"])
    stats["median_cpu_s"] = statistics.median(stats["cpu_seconds"])
    stats["ratio_wall"] = round(host["median_s"] / stats["median_s"], 3)
    stats["ratio_cpu"] = round(host["median_cpu_s"] / stats["median_cpu_s"], 3)
    stats["host_crossings_per_call"] = len(crossings[variant]) / repeats
    same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), trajectories["host"],
                        trajectories[variant])
    stats["same_trajectory"] = all(jax.tree.leaves(same))
  row["selfplay_reward_mean"] = float(trajectories["jax"].reward.mean())
  return row


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tasks", default="anagram,countdown")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--set", action="append", default=[], help="config override key=value")
  parser.add_argument("--json", default=str(Path(__file__).with_suffix(".json")))
  args = parser.parse_args(argv)
  out = {"benchmark": "jax_rewards", "config": "experiments/all_tasks.py default (sort.toml)",
         "overrides": args.set, "jax": jax.__version__, "device": jax.default_backend(),
         "platform": platform.machine(), "cpu_count": os.cpu_count(),
         "load_average_before": list(os.getloadavg()), "rows": []}
  for name in args.tasks.split(","):
    row = bench_task(name, overrides=args.set, repeats=args.repeats)
    out["rows"].append(row)
    print(f"{name}: " + ", ".join(
        f"{v} {row[v]['median_s']:.3f}s ({row[v]['median_cpu_s']:.3f} cpu-s, x{row[v]['ratio_wall']}"
        f" wall, x{row[v]['ratio_cpu']} cpu, {row[v]['host_crossings_per_call']:.0f} host "
        f"crossings, same={row[v]['same_trajectory']}, first {row[v]['first_call_s']}s)"
        for v in VARIANTS), flush=True)
  out["load_average_after"] = list(os.getloadavg())
  Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
  print(f"wrote {args.json}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
