"""Memory of the search tree on a loaded 50k-vocabulary GPT-2: bounded by K, not V.

Saves a random-init GPT-2 (vocabulary 50,257) with `transformers`, loads it with
`tokenzero.hf.load`, runs one Gumbel search over a batch of prompts, and prints the bytes of
every array in the mctx tree, next to what one [B, N, V] float32 array would cost.

  python benchmarks/tree_memory.py [--json PATH] [--batch 8] [--simulations 32]
"""

from __future__ import annotations

import argparse
import json
import tempfile

import jax
import jax.numpy as jnp

from tokenzero import episode as episode_lib
from tokenzero import hf
from tokenzero import search as search_lib
from tokenzero.config import SearchConfig


def _zero_reward(prompt, prompt_len, completion, completion_len):
  del prompt, prompt_len, completion_len
  return jnp.zeros((completion.shape[0],), jnp.float32)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--simulations", type=int, default=32)
  parser.add_argument("--max-depth", type=int, default=8)
  args = parser.parse_args(argv)

  import transformers  # a test dependency: only this script and the tests need it.
  with tempfile.TemporaryDirectory() as model_dir:
    hf_config = transformers.GPT2Config(vocab_size=50257, n_positions=64, n_embd=64,
                                        n_layer=2, n_head=2)
    transformers.GPT2LMHeadModel(hf_config).save_pretrained(model_dir)
    config, params = hf.load(model_dir)

  prompt = jax.random.randint(jax.random.key(0), (args.batch, 16), 0, config.vocab_size)
  state = episode_lib.start(params, config, prompt, jnp.full((args.batch,), 16), 16)
  search_config = SearchConfig(num_simulations=args.simulations, max_depth=args.max_depth)
  tree = search_lib.run_search(
      params, config, search_config, state, jax.random.key(1), reward_fn=_zero_reward,
      allowed=jnp.ones((config.vocab_size,), bool), eos_id=50256).tree
  fields = {"/".join(str(getattr(k, "name", getattr(k, "key", k))) for k in path):
            {"shape": list(x.shape), "bytes": int(x.size * x.dtype.itemsize)}
            for path, x in jax.tree_util.tree_leaves_with_path(tree)}
  total = sum(f["bytes"] for f in fields.values())
  nodes = args.simulations + 1
  one_vocab_array = args.batch * nodes * config.vocab_size * 4
  for name, f in sorted(fields.items(), key=lambda kv: -kv[1]["bytes"]):
    print(f"{name:40s} {str(f['shape']):32s} {f['bytes'] / 2**20:9.3f} MiB")
  print(f"tree total: {total / 2**20:.2f} MiB (batch {args.batch}, {nodes} nodes, "
        f"K={search_lib.num_candidates(search_config, config.vocab_size)}, "
        f"depth {args.max_depth}); one [B, N, V] float32 array: {one_vocab_array / 2**20:.1f} MiB")
  largest = max(max(f["shape"][2:] or [0]) for f in fields.values())
  assert largest < config.vocab_size, "a tree array has a vocabulary-sized axis"
  result = {"vocab_size": config.vocab_size, "batch": args.batch, "nodes": nodes,
            "tree_bytes": total, "bnv_float32_bytes": one_vocab_array, "fields": fields}
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == "__main__":
  main()
