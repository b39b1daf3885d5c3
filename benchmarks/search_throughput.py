"""Simulations per second of three search engines, in one run, on the same model and roots.

- `fair`: our loop, but each expansion recomputes the node's path (prompt cache kept): the path
  tokens and the new one run causally over the episode's cache, heads at the last one only. No
  KV is stored in the tree. (The tests' `search.incremental=false` reference recomputes the
  prompt too; that is not a fair baseline.)
- `old`: the engine before ours (tests/search_reference.py): `mctx.gumbel_muzero_policy` with a
  recurrent_fn whose nodes carry their whole path's KV, `[D, Y, Hkv, E]` per node.
- `new`: `tokenzero.search.run_search`: one token of KV per node, ancestors gathered by index.

Cases: the reference model (4 layers, d=128, context 64, prompt 32) at B = 8, 32, 128, and a
GPT-2-small shape (12 layers, 12 heads x 64, vocabulary 50257, random init) at B = 8. Roots sit
`--root-depth` tokens into a 32-token answer; search depth `--max-depth`. Repeats interleave the
engines (same load) and the median is reported. Useful FLOPs per simulation are one token's
forward at the root's position: 2 x (non-embedding matmul params) + 2 x d x V (the LM head) +
4 x Y x (attended positions) x H x E (scores and values); `flop_fraction` divides the rate by a
float32 GEMM peak (2048^3 `jnp.dot`) measured in the same run.

  python benchmarks/search_throughput.py [--json benchmarks/search_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from tokenzero import episode as episode_lib
from tokenzero import model as model_lib
from tokenzero import search as search_lib
from tokenzero import tree_nodes
from tokenzero.config import ModelConfig, SearchConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import search_reference  # noqa: E402  (the old engine lives on as the tests' reference)

PROMPT_LEN, ANSWER_LEN = 32, 32
REFERENCE = ModelConfig(vocab_size=256, num_layers=4, num_heads=4, d_model=128, context=64)
GPT2_SMALL = ModelConfig(vocab_size=50257, num_layers=12, num_heads=12, d_model=768, context=64)


def _reward(prompt, prompt_len, completion, completion_len):
  del prompt, prompt_len, completion_len
  return jnp.mean((completion % 7 == 3).astype(jnp.float32), axis=-1)


def _fair_recompute(params, config, episode, path_tokens, depth, token):
  """The path and the new token over the episode's cache (kept), causally; heads at the new
  token only. Stands in for `tree_nodes._recompute` in the `fair` engine."""
  batch, max_depth = path_tokens.shape
  steps = jnp.arange(max_depth + 1)
  tokens = jnp.concatenate([path_tokens, jnp.zeros((batch, 1), path_tokens.dtype)], axis=1)
  tokens = jnp.where(steps[None, :] == depth[:, None], token[:, None], tokens)
  positions = episode.cache.length[:, None] + steps[None, :]
  causal = (steps[None, :, None] >= steps[None, None, :]) & (steps[None, None, :]
                                                              <= depth[:, None, None])
  out, _ = model_lib.Transformer(config).apply(
      {"params": params}, tokens, positions, [episode.cache.as_source()], causal,
      output_index=depth)
  return model_lib.ModelOutput(out.logits[:, 0], out.value[:, 0])


def _engine(name):
  if name == "old":
    return search_reference.run_search, True
  if name == "fair":
    return search_lib.run_search, False
  return search_lib.run_search, True


def _tree_bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def compile_engine(name, config, params, root, allowed, simulations, max_depth):
  run_search, incremental = _engine(name)
  search_config = SearchConfig(num_simulations=simulations, top_k=16, max_depth=max_depth,
                               incremental=incremental, reuse_tree=False)
  fn = jax.jit(lambda params, root, key: run_search(
      params, config, search_config, root, key, reward_fn=_reward, allowed=allowed, eos_id=2))
  real = tree_nodes._recompute
  if name == "fair":
    tree_nodes._recompute = _fair_recompute  # traced once, here
  try:
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(params, root, jax.random.key(0)))
    compile_s = time.perf_counter() - t0
  finally:
    tree_nodes._recompute = real
  nodes = out.tree.node_visits.shape[0] * out.tree.node_visits.shape[1]

  def run(i):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(params, root, jax.random.key(i)))
    return time.perf_counter() - t0

  return run, {"compile_s": round(compile_s, 2), "tree_bytes": _tree_bytes(out.tree),
               "bytes_per_node": _tree_bytes(out.tree) / nodes,
               "forward_tokens": int(out.forward_tokens.sum())}


def gemm_peak_flops() -> float:
  a = jnp.ones((2048, 2048), jnp.float32)
  dot = jax.jit(lambda a: a @ a)
  jax.block_until_ready(dot(a))
  seconds = min(_timed(lambda: jax.block_until_ready(dot(a))) for _ in range(5))
  return 2 * 2048 ** 3 / seconds


def _timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def useful_flops_per_simulation(config: ModelConfig, params, attended: int) -> float:
  matmul = sum(x.size for path, x in jax.tree_util.tree_leaves_with_path(params)
               if x.ndim == 2 and "embed" not in jax.tree_util.keystr(path))
  head = config.d_model * config.vocab_size
  attention = 4 * config.num_layers * attended * config.num_heads * config.dim_per_head
  return 2.0 * matmul + 2.0 * head + attention


def bench_case(label, config, batch, args, peak) -> dict:
  params = model_lib.init_params(config, jax.random.key(0))
  prompt = jax.random.randint(jax.random.key(1), (batch, PROMPT_LEN), 3, config.vocab_size)
  lengths = jnp.full((batch,), PROMPT_LEN, jnp.int32)
  allowed = jnp.ones((config.vocab_size,), bool).at[0].set(False)

  @jax.jit
  def make_root(params, prompt):
    state = episode_lib.start(params, config, prompt, lengths, ANSWER_LEN)
    for t in range(args.root_depth):
      state = episode_lib.step(params, config, state, (prompt[:, t] + 1) % config.vocab_size, 2)
    return state

  root = jax.block_until_ready(make_root(params, prompt))
  simulations = args.simulations if config is REFERENCE else args.gpt2_simulations
  engines, row = {}, {"case": label, "batch": batch, "simulations": simulations}
  for name in ("fair", "old", "new"):
    engines[name], row[name] = compile_engine(name, config, params, root, allowed, simulations,
                                              args.max_depth)
    row[name]["seconds"] = []
  for i in range(args.repeats):
    for name in engines:
      row[name]["seconds"].append(engines[name](i + 1))
  flops = useful_flops_per_simulation(
      config, params, PROMPT_LEN + args.root_depth + args.max_depth // 2)
  for name in engines:
    seconds = statistics.median(row[name]["seconds"])
    sims = batch * simulations / seconds
    row[name].update(seconds_per_search=seconds, sims_per_s=sims,
                     flop_fraction=sims * flops / peak)
  row["speedup_vs_old"] = row["new"]["sims_per_s"] / row["old"]["sims_per_s"]
  row["speedup_vs_fair"] = row["new"]["sims_per_s"] / row["fair"]["sims_per_s"]
  row["useful_flops_per_simulation"] = flops
  print(f"{label:>12} B={batch:<4} " + " ".join(
      f"{n} {row[n]['sims_per_s']:8.0f}/s {row[n]['bytes_per_node'] / 1024:8.1f} KiB/node"
      for n in engines) + f"  new/old {row['speedup_vs_old']:.2f}x  new/fair "
      f"{row['speedup_vs_fair']:.2f}x  FLOP fraction new {row['new']['flop_fraction']:.3f}",
      flush=True)
  return row


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", help="where to save the results")
  parser.add_argument("--batches", default="8,32,128", help="batches on the reference model")
  parser.add_argument("--simulations", type=int, default=32)
  parser.add_argument("--gpt2-simulations", type=int, default=16)
  parser.add_argument("--max-depth", type=int, default=8, help="search depth bound D")
  parser.add_argument("--root-depth", type=int, default=8, help="tokens decoded before the root")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--no-gpt2", action="store_true", help="skip the GPT-2-small shape")
  args = parser.parse_args(argv)

  peak = gemm_peak_flops()
  print(f"float32 GEMM peak: {peak / 1e9:.1f} GFLOP/s; prompt {PROMPT_LEN}, root "
        f"{args.root_depth} tokens into a {ANSWER_LEN}-token answer, max depth {args.max_depth}")
  rows = [bench_case("reference", REFERENCE, int(b), args, peak)
          for b in args.batches.split(",")]
  if not args.no_gpt2:
    rows.append(bench_case("gpt2-small", GPT2_SMALL, 8, args, peak))
  result = {"benchmark": "search_throughput", "device": jax.devices()[0].device_kind,
            "platform": platform.machine(), "gemm_peak_flops": peak,
            "max_depth": args.max_depth, "root_depth": args.root_depth,
            "prompt_len": PROMPT_LEN, "answer_len": ANSWER_LEN, "rows": rows}
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
    print(f"saved {args.json}")
  return result


if __name__ == "__main__":
  main()
