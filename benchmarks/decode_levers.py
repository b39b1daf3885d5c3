"""Each decoding lever of the real-models issue's item 5, old against new, in one process.

For each model (benchmarks/decode_vs_hf.py's builders: the tiny GPT-2 with GPT-2's 50257-token
vocabulary, SmolLM2-135M from its GGUF when present), at batch B and prompt length P:

- whole decodes (`decoders.decode`, compiled ahead, `--new-tokens` tokens, EOS forbidden):
  `sample`: `Sample(draw="gumbel")` (jax.random.categorical, V Gumbels a row) against
  `Sample()` (vocab_ops.categorical, inverse CDF, two uniforms a row); `beam4`:
  `Beam(4, full_vocab=True)` (log-softmax then top-8 of [B, 4 V]) against `Beam(4)` (each beam's
  top-8 by vocab_ops.top_k, then top-8 of [B, 32]).
- the pieces alone, on a step's logits [R, V] in a jitted scan of n steps (per step):
  `draw` the two samplers' draws (R = B); `greedy_pick` argmax + log_softmax-then-take (as the
  rollout did) against vocab_ops.argmax + vocab_ops.log_prob (R = B); `beam_rank` the two beam
  rankings (R = 4 B); `search_top16` a search node's 16 candidates, jax.lax.top_k against
  vocab_ops.top_k (R = B); `top_k_filter` top-k sampling's filter at k = 50, two argsorts
  against vocab_ops.top_k and a scatter (R = B).

Old and new alternate `--repeats` times; each figure is the best run (other jobs on the cores
only add time), and `speedup` = old seconds / new seconds. The outputs are checked equal where
the lever is exact (beam tokens, greedy picks, top-k ids and filters).

  python benchmarks/decode_levers.py --threads 1 [--gguf PATH] [--json benchmarks/decode_levers.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import decode_vs_hf as bench
from tokenzero import decoders, vocab_ops


def _compiled_decode(model: bench.Model, decoder, prompt: np.ndarray, new_tokens: int):
  allowed = jnp.ones((model.config.vocab_size,), bool).at[jnp.asarray(model.eos_ids)].set(False)
  args = (model.params, jnp.asarray(prompt),
          jnp.full((prompt.shape[0],), prompt.shape[1], jnp.int32), jax.random.key(0), allowed)
  compiled = decoders.decode.lower(*args, decoder=decoder, config=model.config,
                                   max_new_tokens=new_tokens, eos_id=model.eos_ids[0]).compile()
  return lambda: jax.tree.map(np.asarray, jax.block_until_ready(compiled(*args)))


def _scanned(fn, x, new_tokens: int):
  """fn(x [R, V], key) -> pytree, n times in a jitted scan; each step's input depends on the
  last step's output, so nothing is hoisted. Returns run() -> the last output."""
  @jax.jit
  def run(x, key):
    def body(carry, step_key):
      shift, _ = carry
      out = fn(x + shift, step_key)
      # The output's max is finite (a token id, a top score, a kept logit).
      return (shift + 1e-9 * jnp.max(jax.tree.leaves(out)[0]).astype(jnp.float32), out), None
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, x, key))
    return jax.lax.scan(body, (jnp.float32(0), zeros), jax.random.split(key, new_tokens))[0][1]
  return lambda: jax.tree.map(np.asarray, jax.block_until_ready(run(x, jax.random.key(0))))


def _race(old, new, repeats: int) -> dict:
  """Old and new alternated; best seconds of each, and the last outputs."""
  old_out, new_out = old(), new()  # warm-up
  times = {"old": [], "new": []}
  for _ in range(repeats):
    for side, run in (("old", old), ("new", new)):
      start = time.perf_counter()
      out = run()
      times[side].append(time.perf_counter() - start)
      if side == "old":
        old_out = out
      else:
        new_out = out
  best_old, best_new = min(times["old"]), min(times["new"])
  return {"old_s": best_old, "new_s": best_new, "speedup": best_old / best_new,
          "old_runs_s": times["old"], "new_runs_s": times["new"]}, old_out, new_out


# --- the old pieces, as the code ran them before the levers -------------------------------------


def _old_greedy_pick(logits, key):
  del key
  token = jnp.argmax(logits, axis=-1)
  return token, jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], axis=1)[:, 0]


def _new_greedy_pick(logits, key):
  del key
  token = vocab_ops.argmax(logits)
  return token, vocab_ops.log_prob(logits, token)


def _old_top_k_filter(logits, k):
  order = jnp.argsort(-logits, axis=-1, stable=True)
  rank = jnp.argsort(order, axis=-1)
  return jnp.where(rank < k, logits, -jnp.inf)


def _equal(a, b) -> bool:
  """Integers equal, floats equal to float32 rounding (a fused sum may add in another order)."""
  return all(np.array_equal(x, y) if x.dtype.kind in "iub" else
             np.allclose(x, y, rtol=1e-6, atol=0, equal_nan=True)
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def levers(model: bench.Model, batch: int, prompt_len: int, new_tokens: int,
           repeats: int) -> dict:
  vocab, width = model.config.vocab_size, bench.BEAMS
  rng = np.random.default_rng(batch * 1000 + prompt_len)
  prompt = rng.integers(0, vocab, (batch, prompt_len)).astype(np.int32)
  out = {}
  for name, old, new, exact in (
      ("sample", decoders.Sample(1.0, draw="gumbel"), decoders.Sample(1.0), False),
      ("beam4", decoders.Beam(width, full_vocab=True), decoders.Beam(width), True)):
    row, old_out, new_out = _race(_compiled_decode(model, old, prompt, new_tokens),
                                  _compiled_decode(model, new, prompt, new_tokens), repeats)
    if exact:
      row["outputs_equal"] = _equal(old_out, new_out)
    row["tok_s_old"] = batch * new_tokens / row["old_s"]
    row["tok_s_new"] = batch * new_tokens / row["new_s"]
    out[f"decode_{name}"] = row
  logits = jax.random.normal(jax.random.key(1), (batch, vocab)) * 3
  beam_logits = jax.random.normal(jax.random.key(2), (width * batch, vocab)) * 3
  allowed = jnp.ones((vocab,), bool).at[jnp.asarray(model.eos_ids)].set(False)
  running = jnp.tile(jnp.asarray([0.0, -1.0, -2.0, -3.0])[:width], (batch, 1))
  beam_rank = lambda decoder: (lambda x, key: decoder._continuations(x, allowed, running))
  pieces = {
      "draw": (lambda x, key: jax.random.categorical(key, x),
               lambda x, key: vocab_ops.categorical(key, x), logits, False),
      "greedy_pick": (_old_greedy_pick, _new_greedy_pick, logits, True),
      "beam_rank": (beam_rank(decoders.Beam(width, full_vocab=True)),
                    beam_rank(decoders.Beam(width)), beam_logits, True),
      "search_top16": (lambda x, key: jax.lax.top_k(x, 16),
                       lambda x, key: vocab_ops.top_k(x, 16), logits, True),
      "top_k_filter": (lambda x, key: _old_top_k_filter(x, 50),
                       lambda x, key: decoders.top_k_logits(x, 50), logits, True),
  }
  for name, (old, new, x, exact) in pieces.items():
    row, old_out, new_out = _race(_scanned(old, x, new_tokens), _scanned(new, x, new_tokens),
                                  repeats)
    for side in ("old", "new"):
      row[f"{side}_per_step_s"] = row.pop(f"{side}_s") / new_tokens
    row["speedup"] = row["old_per_step_s"] / row["new_per_step_s"]
    if exact:
      row["outputs_equal"] = _equal(old_out, new_out)
    out[name] = row
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="gpt2-tiny,smollm2-135m")
  parser.add_argument("--gguf", default=bench.DEFAULT_GGUF)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--prompt-len", type=int, default=16)
  parser.add_argument("--new-tokens", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--note", default="")
  parser.add_argument("--json", default="benchmarks/decode_levers.json")
  args = parser.parse_args(argv)
  bench.set_threads(args.threads)
  load_start = os.getloadavg()
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    builders = {"gpt2-tiny": lambda: bench.gpt2_model("gpt2-tiny", layers=2, width=64, heads=4,
                                                      tmp=Path(tmp)),
                "smollm2-135m": lambda: bench.smollm_model(Path(args.gguf))}
    for name in args.models.split(","):
      model = builders[name]()
      if model is None:
        continue
      row = {"model": name, "vocab": model.config.vocab_size, "batch": args.batch,
             "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
             **levers(model, args.batch, args.prompt_len, args.new_tokens, args.repeats)}
      for key, value in row.items():
        if isinstance(value, dict):
          print(f"{name:>13} {key:>14} speedup {value['speedup']:6.2f}x "
                f"equal {value.get('outputs_equal', '-')}", flush=True)
      rows.append(row)
      del model
  result = {"benchmark": "decode_levers", "threads": args.threads, "note": args.note,
            "load_average_start": load_start, "load_average_end": os.getloadavg(),
            "rows": rows}
  if args.json:
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.json}")
  return result


if __name__ == "__main__":
  main()
