"""Where decoding time goes, tokenzero and `transformers`, measured piece by piece on the models
of benchmarks/decode_vs_hf.py (whose builders and runners it imports).

Every figure is the best of `--repeats` runs after a warm-up (other jobs sharing the cores only
add time). tokenzero, each piece jitted on its own:
- `prefill`: `episode.start` (the prompt's forward into a fresh cache).
- `step`: one `episode.step` (a token's forward over the cache, then its cache writes), from a
  scan of n steps with fixed tokens, minus the prefill, over n.
- `lm_head`: the head's matmul alone, [R, M] @ [M, V], R rows (scan of n, over n).
- `decode` per method: the whole decoder (decode_vs_hf's runner); `rest` = decode - prefill -
  n x step(R rows): what the decoder adds around the network (sampling, beam bookkeeping,
  log-softmax, row gathers). Beam rows R = 4 B.
- what the decoders do to a step's logits, each alone (scan of n, over n): `argmax` and
  `log_softmax` of [B, V] (greedy takes both: the token and its log-probability),
  `categorical` (`jax.random.categorical`: B x V Gumbel draws), and beam's `log_softmax` of
  [B C, V] and `top_k` of 2C among [B, C V].
transformers: `prefill` (a forward over the prompt, cache on, logits at the last position as
generate() asks), `step` (one-token forwards on that cache, the best), `generate` per method and
its `rest` likewise.
`matmul`: the model's own matmul shapes, XLA (`jnp.dot` under jit) against torch, one after
the other: prefill [B P, M] x [M, F], a step's [B, M] x [M, F] and [4 B, M] x [M, F], the LM head
[B, M] x [M, V]; and `read_bytes_per_s`, a 256 MiB sum on each side (the bandwidth a
weight-bound step is held to: B = 8 rows do ~4 FLOPs per float32 weight read).

  python benchmarks/decode_profile.py --threads 1 [--models gpt2-tiny,gpt2-6x384,smollm2-135m]
      [--batch 8] [--prompt-len 128] [--json benchmarks/decode_profile.json]
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
import torch

import decode_vs_hf as bench
from tokenzero import episode as episode_lib
from tokenzero.decoders.base import repeat_rows


def _best_s(fn, repeats: int) -> float:
  """Best of `repeats` after a warm-up: other jobs on the cores only ever add time."""
  fn()
  return min(bench.timed(fn)[0] for _ in range(repeats))


def _per_step(fn, new_tokens: int, repeats: int) -> float:
  """Seconds of one call of fn(x [R, ...], key) -> [R] in a jitted scan of n, over n (each
  call's input depends on the last one's output, so none is hoisted or skipped)."""
  return _best_s(fn, repeats) / new_tokens


def _scanned(fn, x, new_tokens: int):
  @jax.jit
  def run(x, key):
    def body(carry, step_key):
      return carry + 1e-9 * fn(x + carry[:, None], step_key).astype(jnp.float32), None
    return jax.lax.scan(body, jnp.zeros(x.shape[:1]), jax.random.split(key, new_tokens))[0]
  return lambda: jax.block_until_ready(run(x, jax.random.key(0)))


def tokenzero_pieces(model: bench.Model, prompt: np.ndarray, new_tokens: int,
                     repeats: int) -> dict:
  config, params = model.config, model.params
  batch, prompt_len = prompt.shape
  lengths = jnp.full((batch,), prompt_len, jnp.int32)
  jnp_prompt = jnp.asarray(prompt)

  def steps(rows):
    @jax.jit
    def run(params, prompt):
      state = episode_lib.start(params, config, prompt, lengths, new_tokens)
      if rows != batch:  # the beams' B*C rows, as `repeat_rows` makes them
        state = repeat_rows(state, rows // batch)
      token = jnp.broadcast_to(prompt[:1, 0], (rows,))
      state, _ = jax.lax.scan(
          lambda s, t: (episode_lib.step(params, config, s, (token + t) % config.vocab_size, -1),
                        None), state, jnp.arange(new_tokens))
      return state.logits
    return lambda: jax.block_until_ready(run(params, jnp_prompt))

  def lm_head(rows):
    # As the model runs it: the tied table transposed in the matmul, or the untied kernel.
    tied = config.tie_embeddings
    weight = params["embed"]["embedding"] if tied else params["lm_head"]["kernel"]
    x = jnp.ones((rows, config.d_model))
    return _scanned(lambda x, key: (x @ (weight.T if tied else weight))[:, 0], x, new_tokens)

  prefill = jax.jit(lambda p, x: episode_lib.start(p, config, x, lengths, new_tokens).logits)
  out = {"prefill_s": _best_s(lambda: jax.block_until_ready(prefill(params, jnp_prompt)),
                                repeats)}
  for label, rows in (("", batch), ("_beam", bench.BEAMS * batch)):
    out[f"step{label}_s"] = (_best_s(steps(rows), repeats) - out["prefill_s"]) / new_tokens
    out[f"lm_head{label}_s"] = _per_step(lm_head(rows), new_tokens, repeats)
  # What the decoders do to a step's logits [B, V] (beam: [B, C*V] and [B*C, V]).
  logits = jax.random.normal(jax.random.key(1), (batch, config.vocab_size))
  beam_logits = jnp.tile(logits, (1, bench.BEAMS))
  post = {"argmax": (lambda x, key: jnp.argmax(x, -1), logits),
          "log_softmax": (lambda x, key: jax.nn.log_softmax(x)[:, 0], logits),
          "categorical": (lambda x, key: jax.random.categorical(key, x), logits),
          "beam_log_softmax": (lambda x, key: jax.nn.log_softmax(
              x.reshape(-1, config.vocab_size)).reshape(batch, -1)[:, 0], beam_logits),
          "beam_top_k": (lambda x, key: jax.lax.top_k(x, 2 * bench.BEAMS)[0][:, 0],
                         beam_logits)}
  for name, (fn, x) in post.items():
    out[f"{name}_s"] = _per_step(_scanned(fn, x, new_tokens), new_tokens, repeats)
  for method in bench.METHODS:
    run, _ = bench.tokenzero_runner(model, method, prompt, new_tokens)
    seconds = _best_s(run, repeats)
    step = out["step_beam_s" if method == "beam4" else "step_s"]
    out[f"decode_{method}_s"] = seconds
    out[f"rest_{method}_s"] = seconds - out["prefill_s"] - new_tokens * step
  return out


def matmul_pieces(config, batch: int, prompt_len: int, repeats: int) -> dict:
  shapes = {"prefill_mlp": (batch * prompt_len, config.d_model, config.ff_dim),
            "step_mlp": (batch, config.d_model, config.ff_dim),
            "beam_step_mlp": (bench.BEAMS * batch, config.d_model, config.ff_dim),
            "lm_head": (batch, config.d_model, config.vocab_size)}
  out = {}
  rng = np.random.default_rng(0)
  dot = jax.jit(jnp.dot)
  for name, (m, k, n) in shapes.items():
    a, b = (rng.standard_normal(s).astype(np.float32) for s in ((m, k), (k, n)))
    ja, jb, ta, tb = jnp.asarray(a), jnp.asarray(b), torch.from_numpy(a), torch.from_numpy(b)
    jax_s = _best_s(lambda: jax.block_until_ready(dot(ja, jb)), repeats * 3)
    torch_s = _best_s(lambda: ta @ tb, repeats * 3)
    out[name] = {"shape": [m, k, n], "jax_flops_per_s": 2 * m * k * n / jax_s,
                 "torch_flops_per_s": 2 * m * k * n / torch_s,
                 "jax_over_torch_time": jax_s / torch_s}
  big = np.ones(64 * 2 ** 20, np.float32)
  total, jbig, tbig = jax.jit(jnp.sum), jnp.asarray(big), torch.from_numpy(big)
  out["read_bytes_per_s"] = {
      "jax": big.nbytes / _best_s(lambda: jax.block_until_ready(total(jbig)), repeats * 3),
      "torch": big.nbytes / _best_s(lambda: tbig.sum(), repeats * 3)}
  return out


def hf_pieces(model: bench.Model, prompt: np.ndarray, new_tokens: int, repeats: int) -> dict:
  ids = torch.as_tensor(prompt, dtype=torch.long)
  hf_model = model.hf_model

  def prefill():
    with torch.no_grad():
      return hf_model(ids, use_cache=True, logits_to_keep=1)  # as generate() runs it

  def steps():
    with torch.no_grad():
      out = hf_model(ids, use_cache=True, logits_to_keep=1)
      cache, token, times = out.past_key_values, ids[:, :1], []
      for _ in range(new_tokens):
        start = time.perf_counter()
        out = hf_model(token, past_key_values=cache, use_cache=True)
        times.append(time.perf_counter() - start)
        cache = out.past_key_values
      return min(times)

  out = {"prefill_s": _best_s(prefill, repeats), "step_s": steps()}
  for method in bench.METHODS:
    seconds = _best_s(bench.hf_runner(model, method, prompt, new_tokens), repeats)
    prefill_rows = bench.BEAMS if method == "beam4" else 1  # generate() expands before prefill
    out[f"generate_{method}_s"] = seconds
    out[f"rest_{method}_s"] = seconds - prefill_rows * out["prefill_s"] - new_tokens * (
        out["step_s"] * (1 if method != "beam4" else bench.BEAMS))
  out["note"] = ("rest for beam4 counts 4x the prefill and 4x the B-row step (generate() runs "
                 "its B*4 rows; a B*4-row step is not 4x a B-row one, so this is a rough split)")
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="gpt2-tiny,gpt2-6x384,smollm2-135m")
  parser.add_argument("--gguf", default=bench.DEFAULT_GGUF)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--prompt-len", type=int, default=128)
  parser.add_argument("--new-tokens", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--note", default="")
  parser.add_argument("--json", default="benchmarks/decode_profile.json")
  args = parser.parse_args(argv)
  bench.set_threads(args.threads)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    builders = {"gpt2-tiny": lambda: bench.gpt2_model("gpt2-tiny", layers=2, width=64, heads=4,
                                                      tmp=Path(tmp)),
                "gpt2-6x384": lambda: bench.gpt2_model("gpt2-6x384", layers=6, width=384,
                                                       heads=6, tmp=Path(tmp)),
                "smollm2-135m": lambda: bench.smollm_model(Path(args.gguf))}
    for name in args.models.split(","):
      model = builders[name]()
      if model is None:
        continue
      rng = np.random.default_rng(0)
      prompt = rng.integers(0, model.config.vocab_size,
                            (args.batch, args.prompt_len)).astype(np.int32)
      row = {"model": name, "batch": args.batch, "prompt_len": args.prompt_len,
             "new_tokens": args.new_tokens,
             "tokenzero": tokenzero_pieces(model, prompt, args.new_tokens, args.repeats),
             "transformers": hf_pieces(model, prompt, args.new_tokens, args.repeats),
             "matmul": matmul_pieces(model.config, args.batch, args.prompt_len, args.repeats),
             "param_bytes": sum(x.nbytes for x in jax.tree.leaves(model.params))}
      print(json.dumps(row, indent=1), flush=True)
      rows.append(row)
  result = {"benchmark": "decode_profile", "threads": args.threads, "note": args.note,
            "load_average": os.getloadavg(), "rows": rows}
  if args.json:
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
  return result


if __name__ == "__main__":
  main()
