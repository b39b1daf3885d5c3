"""Memory of the search tree at real shapes: bytes per node against one token's KV.

For GPT-2-small (12 layers, 12 heads x 64, vocabulary 50257) and SmolLM2-135M's Llama shape
(30 layers, d=576, 9 heads / 3 KV heads x 64, vocabulary 49152), the search's arrays are sized
with `jax.eval_shape` (nothing is allocated, no weights are needed) for the new engine
(`tokenzero.search`, one token of KV per node) and the old one (tests/search_reference.py, the
whole path's KV `[D, Y, Hkv, E]` per node). One JSON row per shape: the new engine's
`bytes_per_node` (tree arena bytes / (B x arena nodes), every array of the tree counted) beside
`token_kv_bytes` (one token's keys and values, 2 x Y x Hkv x E x 4 bytes, float32), its
`bookkeeping_bytes_per_node` (all but the KV), the check `bytes_per_node <= 1.1 *
token_kv_bytes + 4096` as pass/fail, and the old engine's figures at the same shape. Then
`answer_tree`: the total tree memory of a 32-token answer with 64 simulations per token at B=8,
GPT-2-small shape. One tree lives through the whole answer (`search.reuse_tree`, the default):
an arena of S + S + 1 = 129 nodes; without reuse it is a fresh arena of S + 1 = 65 nodes per
step; the old engine's is 65 nodes of path KV at depth 32.

  python benchmarks/tree_memory.py [--json benchmarks/tree_memory.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

from tokenzero import episode as episode_lib
from tokenzero import model as model_lib
from tokenzero import search as search_lib
from tokenzero.config import ModelConfig, SearchConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import search_reference  # noqa: E402  (the old engine lives on as the tests' reference)

SHAPES = {
    "gpt2-small": ModelConfig(vocab_size=50257, num_layers=12, num_heads=12, d_model=768,
                              context=128),
    "smollm2-135m": ModelConfig(arch="llama", vocab_size=49152, num_layers=30, num_heads=9,
                                num_kv_heads=3, d_model=576, d_ff=1536, context=128,
                                attn_bias=False, proj_bias=False),
}
PROMPT_LEN, ANSWER_LEN = 32, 32


def _zero_reward(prompt, prompt_len, completion, completion_len):
  del prompt, prompt_len, completion_len
  return jnp.zeros((completion.shape[0],), jnp.float32)


def tree_shapes(engine, config: ModelConfig, search_config: SearchConfig, batch: int):
  """The search tree's arrays (ShapeDtypeStructs) of one search from a fresh root."""
  run_search = search_reference.run_search if engine == "old" else search_lib.run_search

  def search(key):
    params = model_lib.init_params(config, key)
    prompt = jnp.zeros((batch, PROMPT_LEN), jnp.int32) + 3
    state = episode_lib.start(params, config, prompt, jnp.full((batch,), PROMPT_LEN),
                              ANSWER_LEN)
    return run_search(params, config, search_config, state, key, reward_fn=_zero_reward,
                      allowed=jnp.ones((config.vocab_size,), bool), eos_id=2).tree

  return jax.eval_shape(search, jax.random.key(0))


def measure(config: ModelConfig, engine: str, *, batch: int, simulations: int,
            max_depth: int, reuse_tree: bool) -> dict:
  """Arena size and bytes of one engine's tree at one shape."""
  search_config = SearchConfig(num_simulations=simulations, max_depth=max_depth,
                               reuse_tree=reuse_tree)
  tree = tree_shapes(engine, config, search_config, batch)
  nodes = tree.node_visits.shape[1]
  fields = {jax.tree_util.keystr(path): x.size * x.dtype.itemsize
            for path, x in jax.tree_util.tree_leaves_with_path(tree)}
  total = sum(fields.values())
  kv_fields = sum(b for k, b in fields.items() if k.endswith(".k") or k.endswith(".v")
                  or "path_k" in k or "path_v" in k)
  return {"nodes": nodes, "tree_bytes": total, "bytes_per_node": total / (batch * nodes),
          "bookkeeping_bytes_per_node": (total - kv_fields) / (batch * nodes),
          "largest_fields": dict(sorted(fields.items(), key=lambda kv: -kv[1])[:4])}


def shape_row(name: str, config: ModelConfig, *, batch: int, simulations: int,
              max_depth: int) -> dict:
  """One row per shape: the new engine's bytes per node (one tree per answer, its default)
  beside one token's KV, and the old engine's at the same shape."""
  new = measure(config, "new", batch=batch, simulations=simulations, max_depth=max_depth,
                reuse_tree=True)
  old = measure(config, "old", batch=batch, simulations=simulations, max_depth=max_depth,
                reuse_tree=False)
  token_kv = 2 * config.num_layers * config.kv_heads * config.dim_per_head * 4
  bound = 1.1 * token_kv + 4096
  return {"shape": name, "num_layers": config.num_layers, "kv_heads": config.kv_heads,
          "head_dim": config.dim_per_head, "vocab_size": config.vocab_size, "batch": batch,
          "num_simulations": simulations, "max_depth": max_depth, "nodes": new["nodes"],
          "bytes_per_node": new["bytes_per_node"], "token_kv_bytes": token_kv,
          "bookkeeping_bytes_per_node": new["bookkeeping_bytes_per_node"],
          "bound_bytes": bound, "check": "pass" if new["bytes_per_node"] <= bound else "fail",
          "tree_bytes": new["tree_bytes"], "largest_fields": new["largest_fields"],
          "old": {k: old[k] for k in ("nodes", "tree_bytes", "bytes_per_node",
                                      "bookkeeping_bytes_per_node")},
          "old_over_new_bytes_per_node": old["bytes_per_node"] / new["bytes_per_node"]}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--simulations", type=int, default=64)
  parser.add_argument("--max-depth", type=int, default=ANSWER_LEN)
  args = parser.parse_args(argv)
  sizes = dict(batch=args.batch, simulations=args.simulations, max_depth=args.max_depth)
  print(f"B={args.batch}, {args.simulations} simulations per token, depth {args.max_depth}, "
        f"answer {ANSWER_LEN} tokens; float32 KV")
  print(f"{'shape':>14} {'nodes':>6} {'bytes/node':>11} {'token KV':>9} {'bookkeep':>9} "
        f"{'<=1.1KV+4K':>11} {'tree MiB':>9} | {'old nodes':>9} {'old B/node':>11} "
        f"{'old MiB':>8}")
  rows = []
  for name, config in SHAPES.items():
    row = shape_row(name, config, **sizes)
    rows.append(row)
    old = row["old"]
    print(f"{name:>14} {row['nodes']:>6} {row['bytes_per_node']:>11.0f} "
          f"{row['token_kv_bytes']:>9} {row['bookkeeping_bytes_per_node']:>9.0f} "
          f"{row['check']:>11} {row['tree_bytes'] / 2**20:>9.1f} | {old['nodes']:>9} "
          f"{old['bytes_per_node']:>11.0f} {old['tree_bytes'] / 2**20:>8.1f}", flush=True)
  # The whole answer's tree: one tree lives through all 32 steps, so its memory is the arena's.
  answer = {"shape": "gpt2-small", "answer_len": ANSWER_LEN, **sizes}
  for label, engine, reuse in (("new_reuse", "new", True), ("new_fresh", "new", False),
                               ("old", "old", False)):
    m = measure(SHAPES["gpt2-small"], engine, reuse_tree=reuse, **sizes)
    answer[label] = {"arena_nodes": m["nodes"], "tree_bytes": m["tree_bytes"],
                     "tree_mib": m["tree_bytes"] / 2**20}
    print(f"32-token answer at gpt2-small, {label:>9}: arena {m['nodes']} nodes, "
          f"{m['tree_bytes'] / 2**20:.1f} MiB", flush=True)
  result = {"benchmark": "tree_memory", "answer_len": ANSWER_LEN, "prompt_len": PROMPT_LEN,
            "rows": rows, "answer_tree": answer}
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
    print(f"saved {args.json}")
  return result


if __name__ == "__main__":
  main()
