"""The LM head under `model.dtype=bfloat16`: what each way of getting float32 logits costs.

Three heads, swapped into `tokenzero.model._head_matmul` while a function is traced (the package
is not edited for a benchmark), on the same params:
- `bf16_f32acc` (the package's): x and the kernel in bf16, accumulated and returned in float32
  (`preferred_element_type`).
- `f32`: x cast up to float32, a float32 matmul against the float32 params.
- `bf16_out` (before issue 14): a bf16 matmul whose bf16 result is cast to float32.

Shape: GPT-2 with 6 layers, d=384, 6 heads, GPT-2's vocabulary of 50257 (tied head), random
init with its weights sharpened (+ N(0, 0.05) on every weight, as tests/test_model.py does) so
that logits spread over several units. Cases: a prefill (B=8, P=128: heads at the last token)
and one decoding step (B=8, one token over a 160-slot cache), each timed as the whole model
call and as the head alone ([B, M] @ [M, V]). Every function is compiled and run once, then the
three heads alternate (`--repeats`, median reported); the whole model in float32 is timed
beside them for scale (`float32_model`). `over_package` = seconds / the package's
head's seconds. Accuracy: max |logits - the float32 model's logits| over the prefill's rows, and
how many rows' argmax equals the float32 model's.

  python benchmarks/lm_head_dtype.py [--json benchmarks/lm_head_dtype.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from tokenzero import model as model_lib
from tokenzero.config import ModelConfig

CONFIG = ModelConfig(vocab_size=50257, num_layers=6, num_heads=6, d_model=384, context=256,
                     dtype="bfloat16")
HEADS = {
    "bf16_f32acc": model_lib._head_matmul,
    "f32": lambda x, kernel: jnp.dot(x.astype(jnp.float32), kernel.astype(jnp.float32)),
    "bf16_out": lambda x, kernel: jnp.dot(x, kernel.astype(x.dtype)).astype(jnp.float32),
}


def _traced_with(head, fn, *args):
  """`fn` jitted and compiled with `head` as the model's LM head."""
  real = model_lib._head_matmul
  model_lib._head_matmul = head
  try:
    # A fresh function each time: jit caches a trace per function, and the same `fn` would
    # reuse the first head's.
    compiled = jax.jit(lambda *a: fn(*a)).lower(*args).compile()
  finally:
    model_lib._head_matmul = real
  jax.block_until_ready(compiled(*args))
  return compiled


def _timed(compiled, *args) -> float:
  t0 = time.perf_counter()
  jax.block_until_ready(compiled(*args))
  return time.perf_counter() - t0


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", help="where to save the results")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--prompt-len", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args(argv)

  params = model_lib.init_params(CONFIG, jax.random.key(0))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys)])
  batch, length = args.batch, args.prompt_len
  tokens = jax.random.randint(jax.random.key(2), (batch, length), 0, CONFIG.vocab_size)
  lengths = jnp.full((batch,), length, jnp.int32)
  cache_size = length + 32

  def prefill(params, tokens):
    out, cache = model_lib.prefill(params, CONFIG, tokens, lengths, cache_size)
    return out.logits, cache

  def step(params, token, cache):
    return model_lib.decode_step(params, CONFIG, token, cache)[0].logits

  hidden = jax.random.normal(jax.random.key(3), (batch, CONFIG.d_model), jnp.bfloat16)
  table = params["embed"]["embedding"]
  head_only = lambda head: (lambda x, table: head(x, table.T))

  f32_config = ModelConfig(**{**CONFIG.__dict__, "dtype": "float32"})
  f32_logits, _ = model_lib.prefill(params, f32_config, tokens, lengths, cache_size)
  f32_logits = np.asarray(f32_logits.logits)

  cases, row = {}, {}
  for name, head in HEADS.items():
    prefill_fn = _traced_with(head, prefill, params, tokens)
    logits, cache = prefill_fn(params, tokens)
    token = tokens[:, 0]
    step_fn = _traced_with(head, step, params, token, cache)
    head_fn = _traced_with(head, head_only(head), hidden, table)
    cases[name] = {"prefill": (prefill_fn, (params, tokens)),
                   "decode_step": (step_fn, (params, token, cache)),
                   "head_only": (head_fn, (hidden, table))}
    logits = np.asarray(logits)
    row[name] = {"logits_dtype": str(logits.dtype),
                 "max_abs_logit_err_vs_f32": float(np.max(np.abs(logits - f32_logits))),
                 "argmax_equal_rows": int(np.sum(logits.argmax(-1) == f32_logits.argmax(-1))),
                 "seconds": {case: [] for case in cases[name]}}
  # For scale: the whole model in float32 (the package's head, a float32 matmul there).
  f32_cases = {
      "prefill": (jax.jit(lambda p, t: model_lib.prefill(p, f32_config, t, lengths, cache_size)),
                  (params, tokens))}
  f32_cache = f32_cases["prefill"][0](params, tokens)[1]
  f32_cases["decode_step"] = (jax.jit(lambda p, t, c: model_lib.decode_step(p, f32_config, t, c)),
                              (params, tokens[:, 0], f32_cache))
  f32_cases["head_only"] = (jax.jit(lambda x, table: model_lib._head_matmul(x, table.T)),
                            (hidden.astype(jnp.float32), table))
  for fn, fn_args in f32_cases.values():
    jax.block_until_ready(fn(*fn_args))
  row["float32_model"] = {"seconds": {case: [] for case in f32_cases}}
  for _ in range(args.repeats):
    for case, (fn, fn_args) in f32_cases.items():
      row["float32_model"]["seconds"][case].append(_timed(fn, *fn_args))
    for name in HEADS:  # interleaved: the same machine load for the three heads
      for case, (fn, fn_args) in cases[name].items():
        row[name]["seconds"][case].append(_timed(fn, *fn_args))
  package = "bf16_f32acc"
  for name in row:
    row[name]["median_s"] = {case: statistics.median(s) for case, s in row[name]["seconds"].items()}
  for name in row:
    row[name]["over_package"] = {case: row[name]["median_s"][case] / row[package]["median_s"][case]
                                 for case in row[name]["median_s"]}
  print(f"6-layer d=384 GPT-2, V={CONFIG.vocab_size}, bfloat16 compute, B={batch}, P={length}; "
        f"float32 logits std {float(f32_logits.std()):.2f}")
  print(f"{'head':>12} {'prefill ms':>11} {'step ms':>8} {'head ms':>8} "
        f"{'prefill x':>10} {'step x':>7} {'head x':>7} {'max err':>8} {'argmax eq':>9}")
  for name in HEADS:
    r = row[name]
    print(f"{name:>12} " + " ".join(f"{r['median_s'][c] * 1e3:>{w}.2f}" for c, w in (
        ("prefill", 11), ("decode_step", 8), ("head_only", 8)))
          + " " + " ".join(f"{r['over_package'][c]:>{w}.2f}" for c, w in (
              ("prefill", 10), ("decode_step", 7), ("head_only", 7)))
          + f" {r['max_abs_logit_err_vs_f32']:>8.3f} {r['argmax_equal_rows']:>5}/{batch}")
  r = row["float32_model"]
  print(f"{'f32 model':>12} " + " ".join(f"{r['median_s'][c] * 1e3:>{w}.2f}" for c, w in (
      ("prefill", 11), ("decode_step", 8), ("head_only", 8)))
        + " " + " ".join(f"{r['over_package'][c]:>{w}.2f}" for c, w in (
            ("prefill", 10), ("decode_step", 7), ("head_only", 7))))
  result = {"benchmark": "lm_head_dtype", "device": jax.devices()[0].device_kind,
            "platform": platform.machine(), "batch": batch, "prompt_len": length,
            "float32_logit_std": float(f32_logits.std()), "repeats": args.repeats,
            "load_average": os.getloadavg(), "cpu_count": os.cpu_count(), "heads": row}
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
    print(f"saved {args.json}")
  return result


if __name__ == "__main__":
  main()
