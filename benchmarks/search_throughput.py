"""Simulations per second of the KV-incremental search vs the full-recompute reference.

Same random-init model, batch, key and roots for both; roots sit at several depths of the
answer (tokens already decoded). Prints a table and saves JSON; `speedup` is the geometric mean
over root depths of incremental / recompute simulations per second.

  python benchmarks/search_throughput.py [--json PATH] [--batch 128] [--simulations 32]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from tokenzero import episode as episode_lib
from tokenzero import model as model_lib
from tokenzero import search as search_lib
from tokenzero.config import ModelConfig, SearchConfig


def _reward(prompt, prompt_len, completion, completion_len):
  del prompt, prompt_len, completion_len
  return jnp.mean((completion % 7 == 3).astype(jnp.float32), axis=-1)


def compile_search(config: ModelConfig, search_config: SearchConfig, *, batch: int,
                   prompt_len: int, answer_len: int, root_depth: int):
  """A ready-to-time search closure for one (config, root depth), and its compile seconds."""
  params = model_lib.init_params(config, jax.random.key(0))
  prompt = jax.random.randint(jax.random.key(1), (batch, prompt_len), 3, config.vocab_size)
  lengths = jnp.full((batch,), prompt_len, jnp.int32)
  allowed = jnp.ones((config.vocab_size,), bool).at[0].set(False)

  @jax.jit
  def make_root(params, prompt):
    state = episode_lib.start(params, config, prompt, lengths, answer_len)
    for t in range(root_depth):
      state = episode_lib.step(params, config, state, (prompt[:, t] + 1) % config.vocab_size, 2)
    return state

  root = jax.block_until_ready(make_root(params, prompt))
  search = jax.jit(lambda params, root, key: search_lib.run_search(
      params, config, search_config, root, key, reward_fn=_reward, allowed=allowed, eos_id=2))
  t0 = time.perf_counter()
  jax.block_until_ready(search(params, root, jax.random.key(0)))
  compile_s = time.perf_counter() - t0

  def run(i):
    t0 = time.perf_counter()
    jax.block_until_ready(search(params, root, jax.random.key(i)))
    return time.perf_counter() - t0

  return run, compile_s


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", help="where to save the results")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--simulations", type=int, default=32)
  parser.add_argument("--max-depth", type=int, default=8, help="search depth bound D")
  parser.add_argument("--depths", default="0,8,16,24", help="root depths (tokens decoded)")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)

  prompt_len, context = 32, 64
  config = ModelConfig(vocab_size=256, num_layers=4, num_heads=4, d_model=128, context=context)
  rows = []
  print(f"model: 4 layers, d=128, context {context}, prompt {prompt_len}; batch {args.batch}, "
        f"{args.simulations} Gumbel simulations, max depth {args.max_depth}")
  print(f"{'root depth':>10} {'incremental sims/s':>19} {'recompute sims/s':>17} {'speedup':>8}")
  for depth in [int(d) for d in args.depths.split(",")]:
    runs, row = {}, {"root_depth": depth}
    for name, incremental in (("incremental", True), ("recompute", False)):
      search_config = SearchConfig(num_simulations=args.simulations, top_k=16,
                                   max_depth=args.max_depth, incremental=incremental)
      runs[name], compile_s = compile_search(
          config, search_config, batch=args.batch, prompt_len=prompt_len,
          answer_len=context - prompt_len, root_depth=depth)
      row[name] = {"compile_s": compile_s, "seconds": []}
    # Interleaved repeats: both paths see the same machine load; the median is reported.
    for i in range(args.repeats):
      for name in runs:
        row[name]["seconds"].append(runs[name](i + 1))
    for name in runs:
      seconds = statistics.median(row[name]["seconds"])
      row[name]["seconds_per_search"] = seconds
      row[name]["simulations_per_s"] = args.batch * args.simulations / seconds
    row["speedup"] = (row["incremental"]["simulations_per_s"]
                      / row["recompute"]["simulations_per_s"])
    rows.append(row)
    print(f"{depth:>10} {row['incremental']['simulations_per_s']:>19.0f} "
          f"{row['recompute']['simulations_per_s']:>17.0f} {row['speedup']:>7.1f}x", flush=True)
  speedup = math.exp(sum(math.log(r["speedup"]) for r in rows) / len(rows))
  result = {"benchmark": "search_throughput", "device": jax.devices()[0].device_kind,
            "platform": platform.machine(), "batch": args.batch,
            "num_simulations": args.simulations, "max_depth": args.max_depth,
            "model": {"num_layers": 4, "d_model": 128, "context": context,
                      "prompt_len": prompt_len},
            "rows": rows, "speedup": speedup}
  print(f"speedup (geometric mean over root depths): {speedup:.1f}x")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
    print(f"saved {args.json}")
  return result


if __name__ == "__main__":
  main()
