"""Memory of the search tree at real shapes: bytes per node against one token's KV.

For GPT-2-small (12 layers, 12 heads x 64, vocabulary 50257) and SmolLM2-135M's Llama shape
(30 layers, d=576, 9 heads / 3 KV heads x 64, vocabulary 49152), the search's arrays are sized
with `jax.eval_shape` (nothing is allocated, no weights are needed) for the new engine
(`tokenzero.search`, one token of KV per node) and the old one (tests/search_reference.py, the
whole path's KV `[D, Y, Hkv, E]` per node). One JSON row per shape and engine: `bytes_per_node`
beside `token_kv_bytes` (one token's keys and values, float32) and the check
`bytes_per_node <= 1.1 * token_kv_bytes + 4096`; and the total tree memory of a 32-token answer
with 64 simulations per token at B=8 (one tree per answer: an arena of 2 x 64 + 1 nodes).

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


def measure(name: str, config: ModelConfig, engine: str, *, batch: int, simulations: int,
            max_depth: int) -> dict:
  search_config = SearchConfig(num_simulations=simulations, max_depth=max_depth,
                               reuse_tree=engine == "new")
  tree = tree_shapes(engine, config, search_config, batch)
  nodes = tree.node_visits.shape[1]
  fields = {jax.tree_util.keystr(path): x.size * x.dtype.itemsize
            for path, x in jax.tree_util.tree_leaves_with_path(tree)}
  total = sum(fields.values())
  per_node = total / (batch * nodes)
  token_kv = 2 * config.num_layers * config.kv_heads * config.dim_per_head * 4
  kv_fields = sum(b for k, b in fields.items() if k.endswith(".k") or k.endswith(".v")
                  or "path_k" in k or "path_v" in k)
  return {"shape": name, "engine": engine, "batch": batch, "num_simulations": simulations,
          "max_depth": max_depth, "nodes": nodes, "tree_bytes": total,
          "bytes_per_node": per_node, "token_kv_bytes": token_kv,
          "bookkeeping_bytes_per_node": (total - kv_fields) / (batch * nodes),
          "within_1.1x_token_kv_plus_4KiB": per_node <= 1.1 * token_kv + 4096,
          "largest_fields": dict(sorted(fields.items(), key=lambda kv: -kv[1])[:4])}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--simulations", type=int, default=64)
  parser.add_argument("--max-depth", type=int, default=ANSWER_LEN)
  args = parser.parse_args(argv)
  rows = []
  print(f"B={args.batch}, {args.simulations} simulations per token, depth {args.max_depth}, "
        f"answer {ANSWER_LEN} tokens")
  print(f"{'shape':>14} {'engine':>6} {'nodes':>6} {'bytes/node':>12} {'token KV':>10} "
        f"{'bookkeeping':>12} {'check':>6} {'tree MiB':>9}")
  for name, config in SHAPES.items():
    for engine in ("new", "old"):
      row = measure(name, config, engine, batch=args.batch, simulations=args.simulations,
                    max_depth=args.max_depth)
      rows.append(row)
      print(f"{name:>14} {engine:>6} {row['nodes']:>6} {row['bytes_per_node']:>12.0f} "
            f"{row['token_kv_bytes']:>10} {row['bookkeeping_bytes_per_node']:>12.0f} "
            f"{'pass' if row['within_1.1x_token_kv_plus_4KiB'] else 'FAIL':>6} "
            f"{row['tree_bytes'] / 2**20:>9.1f}", flush=True)
  result = {"benchmark": "tree_memory", "answer_len": ANSWER_LEN, "prompt_len": PROMPT_LEN,
            "rows": rows}
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
    print(f"saved {args.json}")
  return result


if __name__ == "__main__":
  main()
