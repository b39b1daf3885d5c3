"""Forwards a search runs per row: the previous engine (mctx's policy, kept as
`tests/search_reference.py`) against ours, counted by each engine, on a tiny random sort model.

From the answer's start and from one token before its end (where most of a step's simulations
reach the end of the answer), S simulations, K candidates, batch B. Run from the repository root:

  python benchmarks/engine_forward_counts.py [--json benchmarks/engine_forward_counts.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import search_reference  # noqa: E402  (the previous engine lives with the tests)

from tokenzero import episode as episode_lib  # noqa: E402
from tokenzero import model as model_lib  # noqa: E402
from tokenzero import prompts  # noqa: E402
from tokenzero import search as search_lib  # noqa: E402
from tokenzero.config import ModelConfig, SearchConfig  # noqa: E402
from tokenzero.tasks import Sort  # noqa: E402
from tokenzero.tokenizer import answer_mask  # noqa: E402

ENGINES = {"mctx_policy": search_reference, "ours": search_lib}


def count(engine, params, config, task, batch, search_config, played: int, seed: int) -> dict:
  tokenizer = task.tokenizer
  allowed = jnp.asarray(answer_mask(tokenizer, tokenizer.vocab_size))
  rows = batch.tokens.shape[0]

  @jax.jit
  def run(key):
    state = episode_lib.start(params, config, batch.tokens, batch.lengths, task.max_new_tokens)
    for _ in range(played):  # a fixed non-EOS token, so every row stays live
      state = episode_lib.step(params, config, state, jnp.full((rows,), 4), tokenizer.eos_id)
    return engine.run_search(params, config, search_config, state, key,
                             reward_fn=task.jax_reward(), allowed=allowed,
                             eos_id=tokenizer.eos_id)

  out = run(jax.random.key(seed))
  return {"forward_tokens_per_row": float(np.mean(out.forward_tokens)),
          "reward_calls_per_row": float(np.mean(out.reward_calls))}


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--simulations", type=int, default=32)
  parser.add_argument("--top-k", type=int, default=6)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", type=Path, help="also save the rows here")
  args = parser.parse_args(argv)

  task = Sort(length=3)
  config = ModelConfig(vocab_size=task.tokenizer.vocab_size, num_layers=2, num_heads=2,
                       d_model=16, context=task.prompt_len + task.max_new_tokens)
  params = model_lib.init_params(config, jax.random.key(args.seed))
  batch = prompts.encode_batch(task.tokenizer,
                               task.sample(np.random.default_rng(args.seed), args.batch),
                               task.prompt_len)
  search_config = SearchConfig(num_simulations=args.simulations, top_k=args.top_k)
  results = []
  for played in (0, task.max_new_tokens - 1):
    for name, engine in ENGINES.items():
      row = {"engine": name, "tokens_played": played, "simulations": args.simulations,
             "top_k": args.top_k, "batch": args.batch,
             **count(engine, params, config, task, batch, search_config, played, args.seed)}
      print(json.dumps(row), flush=True)
      results.append(row)
  if args.json:
    args.json.write_text(json.dumps(results, indent=2) + "\n")
  return results


if __name__ == "__main__":
  main()
