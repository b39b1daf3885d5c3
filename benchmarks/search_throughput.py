"""Simulations per second of three search engines, in one run, on the same model and roots.

- `fair`: our loop, but each expansion recomputes the node's path (prompt cache kept): the path
  tokens and the new one, padded to D + 1, run causally over the episode's cache, heads at the
  new token only. No KV is stored in the tree. (`search.incremental=false`, the tests'
  reference, recomputes the prompt too, which is not a fair baseline.) It is the new engine
  with `tree_nodes._recompute` swapped for `_fair_recompute` while it is traced: the package is
  not edited for a benchmark.
- `old`: the engine before ours (tests/search_reference.py, imported): `mctx.gumbel_muzero_policy`
  with a recurrent_fn whose nodes carry their whole path's KV, `[D, Y, Hkv, E]` per node.
- `new`: `tokenzero.search.run_search`: one token of KV per node, ancestors gathered by index.
- `forward_only` (a floor, not an engine): S one-token forwards per row over the cache and a
  D-slot path source, with the top-K of the logits and no tree: the network's share of a search.
  `new_over_forward_only` says how close the new engine's loop comes to it.

All three run Gumbel search with K = 16 candidates, a fresh arena of S + 1 nodes
(`reuse_tree=False`: one step's search is what is timed) and no terminal re-selection.

Cases: the reference model (4 layers, d=128, context 64, prompt 32) at B = 8, 32, 128, and a
GPT-2-small shape (12 layers, 12 heads x 64, vocabulary 50257, random init, context 64) at
B = 8. Same params, roots and keys for the three engines of a case. Roots sit `--root-depth`
tokens into a 32-token answer; search depth `--max-depth`. Each engine is compiled and run once
before timing (block_until_ready), and that first run's root policies are compared
(`max_abs_weight_diff_vs_new`: the engines must run the same search); the repeats interleave
the engines (same machine load) and the median is reported (GPT-2-small: `--gpt2-repeats`).
`sims_per_s` = B x S / seconds per search.

Per engine: `tree_bytes` (every array of the returned tree) and `bytes_per_node` =
tree_bytes / (B x arena nodes). Useful FLOPs per simulation (one new token per row; the fair
engine's recomputed path tokens are not useful work):
  2 x (non-embedding matmul params: every 2-D kernel but the token/position tables)
  + 2 x d x V (the tied LM head, which the prior needs)
  + 4 x Y x H x E x attended, attended = prompt + root depth + the mean depth of the new
    engine's expanded nodes (QK^T and AV over the cache, the ancestors and itself).
`flop_fraction` = sims_per_s x useful FLOPs / a float32 GEMM peak (2048^3 `jnp.dot` under jit,
best of 10; `--peak-size`: a GPU needs a larger one to reach its peak) measured at the start of
the same run.

  python benchmarks/search_throughput.py [--json benchmarks/search_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
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

  stats = {"compile_s": round(compile_s, 2), "tree_bytes": _tree_bytes(out.tree),
           "arena_nodes": out.tree.node_visits.shape[1],
           "bytes_per_node": _tree_bytes(out.tree) / nodes,
           "forward_tokens": int(out.forward_tokens.sum())}
  if name == "new":
    # Depth below the root of the nodes this search expanded: an expansion at depth d attends
    # to the episode's cache plus d positions (its ancestors and itself).
    expanded = (jnp.arange(out.tree.node_visits.shape[1])[None, :] >= 1) & (
        jnp.arange(out.tree.node_visits.shape[1])[None, :] < out.num_nodes[:, None])
    stats["mean_expanded_depth"] = float(
        jnp.sum(jnp.where(expanded, out.tree.embeddings.depth, 0)) / jnp.sum(expanded))
  return run, stats, out.action_weights


def compile_forward_only(config, params, root, allowed, simulations, max_depth):
  """No tree at all: S one-token forwards per row over the episode's cache plus a D-token
  path source, each followed by the top-K of its logits. The network's share of a search:
  no engine can beat it at one forward per simulation."""
  batch = root.prompt.shape[0]
  kv_shape = (config.num_layers, batch, max_depth, config.kv_heads, config.dim_per_head)
  path_mask = jnp.arange(max_depth)[None, :] < max_depth // 2  # half a path, on average
  path = model_lib.KVSource(jnp.zeros(kv_shape), jnp.zeros(kv_shape),
                            jnp.broadcast_to(path_mask, (batch, max_depth)))

  @jax.jit
  def fn(params, root):
    def body(i, total):
      token = (root.prompt[:, 0] + i) % config.vocab_size
      out, _ = model_lib.extend(params, config, token, root.cache.length + max_depth // 2,
                                [root.cache.as_source(), path])
      prior, _, _ = tree_nodes.top_k(out.logits, allowed, 16)
      return total + jnp.sum(prior[:, 0]) + jnp.sum(out.value)
    return jax.lax.fori_loop(0, simulations, body, jnp.float32(0))

  t0 = time.perf_counter()
  jax.block_until_ready(fn(params, root))
  compile_s = time.perf_counter() - t0

  def run(i):
    del i
    return _timed(lambda: jax.block_until_ready(fn(params, root)))

  return run, {"compile_s": round(compile_s, 2)}


def gemm_peak_flops(size: int = 2048) -> float:
  a = jnp.ones((size, size), jnp.float32)
  dot = jax.jit(lambda a: a @ a)
  jax.block_until_ready(dot(a))
  seconds = min(_timed(lambda: jax.block_until_ready(dot(a))) for _ in range(10))
  return 2 * size ** 3 / seconds


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
  engines, weights, row = {}, {}, {"case": label, "batch": batch, "simulations": simulations}
  for name in ("fair", "old", "new"):
    engines[name], row[name], weights[name] = compile_engine(
        name, config, params, root, allowed, simulations, args.max_depth)
    row[name]["seconds"] = []
  # The three engines run the same search: their root policies (same key) must agree.
  row["max_abs_weight_diff_vs_new"] = {
      name: float(jnp.max(jnp.abs(weights[name] - weights["new"]))) for name in ("fair", "old")}
  engines["forward_only"], row["forward_only"] = compile_forward_only(
      config, params, root, allowed, simulations, args.max_depth)
  row["forward_only"]["seconds"] = []
  for i in range(args.repeats if config is REFERENCE else args.gpt2_repeats):
    for name in engines:
      row[name]["seconds"].append(engines[name](i + 1))
  attended = PROMPT_LEN + args.root_depth + row["new"]["mean_expanded_depth"]
  flops = useful_flops_per_simulation(config, params, attended)
  for name in engines:
    seconds = statistics.median(row[name]["seconds"])
    sims = batch * simulations / seconds
    row[name].update(seconds_per_search=seconds, sims_per_s=sims,
                     flop_fraction=sims * flops / peak)
  row["speedup_vs_old"] = row["new"]["sims_per_s"] / row["old"]["sims_per_s"]
  row["speedup_vs_fair"] = row["new"]["sims_per_s"] / row["fair"]["sims_per_s"]
  row["useful_flops_per_simulation"] = flops
  row["attended_positions"] = attended
  row["new_over_forward_only"] = row["new"]["sims_per_s"] / row["forward_only"]["sims_per_s"]
  print(f"{label:>10} {batch:>4} {simulations:>3} " + " ".join(
      f"{row[n]['sims_per_s']:>8.0f}" for n in ("fair", "old", "new", "forward_only"))
      + f" {row['speedup_vs_old']:>7.2f}x {row['speedup_vs_fair']:>8.2f}x "
      + " ".join(f"{row[n]['flop_fraction']:>6.3f}" for n in ("fair", "old", "new"))
      + " " + " ".join(f"{row[n]['bytes_per_node'] / 1024:>8.1f}" for n in ("fair", "old", "new"))
      + " " + " ".join(f"{row[n]['tree_bytes'] / 2**20:>8.2f}" for n in ("fair", "old", "new")),
      flush=True)
  return row


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", help="where to save the results")
  parser.add_argument("--batches", default="8,32,128", help="batches on the reference model")
  parser.add_argument("--simulations", type=int, default=32)
  parser.add_argument("--gpt2-simulations", type=int, default=8)
  parser.add_argument("--max-depth", type=int, default=8, help="search depth bound D")
  parser.add_argument("--root-depth", type=int, default=8, help="tokens decoded before the root")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--gpt2-repeats", type=int, default=3)
  parser.add_argument("--no-gpt2", action="store_true", help="skip the GPT-2-small shape")
  parser.add_argument("--peak-size", type=int, default=2048,
                      help="side of the float32 GEMM whose rate is the peak (8192 on a GPU)")
  args = parser.parse_args(argv)

  peak = gemm_peak_flops(args.peak_size)
  print(f"float32 GEMM peak: {peak / 1e9:.1f} GFLOP/s; prompt {PROMPT_LEN}, root "
        f"{args.root_depth} tokens into a {ANSWER_LEN}-token answer, max depth {args.max_depth}")
  print(f"{'case':>10} {'B':>4} {'S':>3} {'sims/s:':>8} {'':>8} {'':>8} {'':>8} "
        f"{'new/old':>8} {'new/fair':>9} {'FLOP fraction':>20} {'KiB per node':>26} "
        f"{'tree MiB':>26}")
  print(f"{'':>10} {'':>4} {'':>3} {'fair':>8} {'old':>8} {'new':>8} {'fwd only':>8} {'':>8} "
        f"{'':>9} {'fair':>6} {'old':>6} {'new':>6} {'fair':>8} {'old':>8} {'new':>8} "
        f"{'fair':>8} {'old':>8} {'new':>8}", flush=True)
  rows = [bench_case("reference", REFERENCE, int(b), args, peak)
          for b in args.batches.split(",")]
  if not args.no_gpt2:
    rows.append(bench_case("gpt2-small", GPT2_SMALL, 8, args, peak))
  result = {"benchmark": "search_throughput", "device": jax.devices()[0].device_kind,
            "platform": platform.machine(), "gemm_peak_flops": peak,
            "gemm_peak_size": args.peak_size, "max_depth": args.max_depth, "root_depth": args.root_depth,
            "prompt_len": PROMPT_LEN, "answer_len": ANSWER_LEN,
            "load_average": os.getloadavg(), "cpu_count": os.cpu_count(), "rows": rows}
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
    print(f"saved {args.json}")
  return result


if __name__ == "__main__":
  main()
