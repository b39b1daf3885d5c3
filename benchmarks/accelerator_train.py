"""One training iteration (self-play, then the learner's steps) as the loop runs it, timed, with
its model-FLOP utilisation: part of `benchmarks/accelerator_check.sh`.

The run's config is experiments/sort.toml with KEY=VALUE overrides (the check passes
`selfplay.batch_size=1024` and the model). `loop.run_iteration` runs twice on fresh prompts:
iteration 1 compiles (its seconds include compilation), iteration 2 is the timed one (its
compilations are counted, and 0 is expected). The trajectory is read by a spy around
`selfplay.self_play` (the package is not edited for a benchmark). Evaluation and checkpoints
are not part of an iteration's time and are not run.

Useful FLOPs (what the iteration must run; padding and finished rows are not useful work):
  self-play: every live decision runs S simulations of one token each, each
  2 W + 2 M V + A a with a = P + T / 2 + D / 2 attended positions (the prompt, half the answer,
  half the search depth: a mean, not a count), and the prompts' prefill,
  B x (2 W P + 2 M V + A P (P + 1) / 2);
  learner: steps x B x 3 x (2 W L + 2 M V T + A L (L + 1) / 2) (forward + backward ~ 3
  forwards; the blocks over the L = P + T tokens, the head at the T decision states);
where W = the blocks' 2-D kernels (not the embeddings nor the value head), M V the LM head,
A = 4 Y H E (QK^T and AV per query-key pair). `mfu` = useful FLOPs / seconds / the peak of a
square matmul in the model's compute dtype (`--peak-size`, best of 10) measured in this run.

  python benchmarks/accelerator_train.py [KEY=VALUE ...] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from tokenzero import checkpoint as ckpt_lib
from tokenzero import compiles as compiles_lib
from tokenzero import config as config_lib
from tokenzero import learner, prompts, selfplay
from tokenzero import loop as loop_lib
from tokenzero import run as run_lib
from tokenzero import search as search_lib

EXPERIMENT = Path(__file__).resolve().parent.parent / "experiments" / "sort.toml"


def matmul_peak(dtype, size: int) -> float:
  """FLOP/s of a jitted [size, size] @ [size, size] in `dtype`, best of 10."""
  a = jnp.ones((size, size), dtype)
  dot = jax.jit(lambda a: a @ a)
  jax.block_until_ready(dot(a))
  best = float("inf")
  for _ in range(10):
    t0 = time.perf_counter()
    jax.block_until_ready(dot(a))
    best = min(best, time.perf_counter() - t0)
  return 2 * size ** 3 / best


def _flop_terms(config, params):
  """(2 W, 2 M V, A): a token's FLOPs in the blocks' and the head's matmuls, and the attention
  FLOPs per attended position."""
  matmul = sum(x.size for path, x in jax.tree_util.tree_leaves_with_path(params)
               if x.ndim == 2 and "embed" not in jax.tree_util.keystr(path)
               and "value_head" not in jax.tree_util.keystr(path)
               and "lm_head" not in jax.tree_util.keystr(path))
  return (2.0 * matmul, 2.0 * config.d_model * config.vocab_size,
          4.0 * config.num_layers * config.num_heads * config.dim_per_head)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
  parser.add_argument("--json", help="where to save the results")
  parser.add_argument("--peak-size", type=int, default=0,
                      help="matmul side for the peak (0: 8192 on an accelerator, 1024 on CPU)")
  args = parser.parse_args(argv)

  config = config_lib.resolve(str(EXPERIMENT), args.overrides)
  setup = run_lib.build(config)
  config = setup.config
  optimizer = learner.make_optimizer(config.optim,
                                     config.iterations * config.optim.steps_per_iteration)
  params = run_lib.initial_params(config)
  blocks, head, attention = _flop_terms(config.model, params)
  state = ckpt_lib.TrainState.create(params, optimizer, jax.random.key(config.seed))
  eval_texts = prompts.eval_texts(setup.task, config.seed, 1, split=config.eval.split)
  loop = loop_lib.Loop(
      setup=setup, optimizer=optimizer,
      eval_batch=prompts.encode_batch(setup.tokenizer, eval_texts, setup.task.prompt_len),
      stream=prompts.training_stream(setup.task, config.seed, split=config.eval.split,
                                     eval_texts=eval_texts),
      anchor_demos=None, reference=None)

  seen = []
  real_self_play = selfplay.self_play

  def spy(*a, **k):
    seen.append(real_self_play(*a, **k))
    return seen[-1]

  batch, prompt_len = config.selfplay.batch_size, setup.task.prompt_len
  answer, simulations = setup.max_new_tokens, config.search.num_simulations
  depth = search_lib.search_depth(config.search, answer)
  length = prompt_len + answer
  iterations = []
  selfplay.self_play = spy
  counter = compiles_lib.Counter()
  try:
    for iteration in (1, 2):
      t0 = time.perf_counter()
      state, metrics, row = loop_lib.run_iteration(loop, state, iteration)
      jax.block_until_ready(state.params)
      seconds = time.perf_counter() - t0
      live = int(np.sum(np.asarray(seen[-1].step_mask)))
      attended = prompt_len + answer / 2 + depth / 2
      selfplay_flops = (live * simulations * (blocks + head + attention * attended)
                        + batch * (blocks * prompt_len + head
                                   + attention * prompt_len * (prompt_len + 1) / 2))
      steps = config.optim.steps_per_iteration
      learner_flops = steps * batch * 3 * (blocks * length + head * answer
                                           + attention * length * (length + 1) / 2)
      iterations.append({"iteration": iteration, "seconds": seconds,
                         "selfplay_s": row["selfplay_s"], "train_s": row["train_s"],
                         "compiles": counter.lap(), "live_decisions": live,
                         "selfplay_flops": selfplay_flops, "learner_flops": learner_flops,
                         "selfplay_reward": row["selfplay_reward"],
                         "loss_policy": row["loss_policy"],
                         "nonfinite_updates": row["nonfinite_updates"]})
  finally:
    selfplay.self_play = real_self_play

  on_cpu = jax.default_backend() == "cpu"
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.model.dtype]
  peak = matmul_peak(dtype, args.peak_size or (1024 if on_cpu else 8192))
  timed = iterations[-1]
  sims = live_sims = timed["live_decisions"] * simulations / timed["selfplay_s"]
  result = {
      "benchmark": "accelerator_train", "device": jax.devices()[0].device_kind,
      "backend": jax.default_backend(), "platform": platform.machine(),
      "overrides": args.overrides, "batch": batch, "prompt_len": prompt_len,
      "max_new_tokens": answer, "num_simulations": simulations,
      "model": {k: getattr(config.model, k) for k in (
          "arch", "num_layers", "d_model", "num_heads", "vocab_size", "dtype")},
      "params": int(sum(x.size for x in jax.tree.leaves(params))),
      "matmul_peak_flops": peak, "matmul_peak_dtype": config.model.dtype,
      "iterations": iterations,
      "selfplay_sims_per_s": sims,
      "selfplay_mfu": timed["selfplay_flops"] / timed["selfplay_s"] / peak,
      "learner_mfu": timed["learner_flops"] / timed["train_s"] / peak,
      "iteration_mfu": (timed["selfplay_flops"] + timed["learner_flops"]) / timed["seconds"]
                       / peak,
      "load_average": os.getloadavg(), "cpu_count": os.cpu_count()}
  print(f"{result['device']}: B={batch}, S={simulations}, P={prompt_len}, T={answer}, "
        f"{config.model.num_layers} layers d={config.model.d_model} {config.model.dtype}, "
        f"{result['params'] / 1e6:.2f}M params; {config.model.dtype} matmul peak "
        f"{peak / 1e9:,.0f} GFLOP/s")
  for it in iterations:
    print(f"  iteration {it['iteration']}: {it['seconds']:.2f} s (self-play {it['selfplay_s']:.2f}"
          f" s, learner {it['train_s']:.2f} s), {it['compiles']} compilations"
          f"; reward {it['selfplay_reward']:.3f}, loss_policy {it['loss_policy']:.4f}")
  print(f"  self-play {live_sims:,.0f} sims/s (live decisions x S / s), MFU self-play "
        f"{result['selfplay_mfu']:.4f}, learner {result['learner_mfu']:.4f}, iteration "
        f"{result['iteration_mfu']:.4f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
    print(f"saved {args.json}")
  return result


if __name__ == "__main__":
  main()
