"""The supervised ceiling: how fast could the loop's network learn a task from correct answers?

The loop can only distil what its searches find. This trains the same network (the default
experiment's settings, `all_tasks.task_config`) on the task's *reference* answers instead: each
iteration draws the same number of fresh training prompts as self-play does (from the same
training stream, held-out prompts excluded) and takes the learner's `optim.steps_per_iteration`
steps of next-token loss on them, with the learner's optimizer and schedule. Greedy exact match
on the same held-out prompts every `--eval-every` iterations. Where this curve is slow, no target
or buffer choice makes the loop fast: the network and schedule are the limit, not the search.

Tasks with a reference answer only (`answer`, or the first of `answers`): addition, anagram.
Writes `<out>/results.json` and `<out>/ceiling.png`.

  python experiments/ceiling.py --tasks addition,anagram --iterations 120
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tokenzero import demos as demos_lib  # noqa: E402
from tokenzero import evaluate, learner, prompts, rewards  # noqa: E402
from tokenzero import run as run_lib  # noqa: E402
from tokenzero.sft import sft_step  # noqa: E402  one jitted AdamW step on a DemoBatch

from all_tasks import task_config  # noqa: E402

HERE = Path(__file__).resolve().parent


def reference(task, prompt: str) -> str:
  return task.answer(prompt) if hasattr(task, "answer") else task.answers(prompt)[0]


def run_task(name: str, args) -> dict:
  config = task_config(name, [f"iterations={args.iterations}", f"seed={args.seed}"] + args.set)
  setup = run_lib.build(config)
  config = setup.config  # with the vocabulary and context filled in
  task, tok = setup.task, setup.tokenizer
  eval_texts = prompts.eval_texts(task, config.seed, config.eval.num_prompts,
                                  split=config.eval.split)
  eval_batch = prompts.encode_batch(tok, eval_texts, task.prompt_len)
  stream = prompts.training_stream(task, config.seed, split=config.eval.split,
                                   eval_texts=eval_texts)
  steps = config.optim.steps_per_iteration
  optimizer = learner.make_optimizer(config.optim, config.iterations * steps)
  params = run_lib.initial_params(config)
  opt_state = optimizer.init(params)

  def evaluate_now(params):
    result = evaluate.evaluate_greedy(
        params, eval_batch.tokens, eval_batch.lengths, setup.allowed, config=config.model,
        reward_fn=setup.reward_fn, max_new_tokens=setup.max_new_tokens, eos_id=tok.eos_id,
        success_threshold=config.task.success_threshold, mesh=setup.mesh)
    rewards.raise_pending()
    return float(result.success.mean()), float(result.reward.mean())

  started, curve = time.monotonic(), []
  for iteration in range(config.iterations + 1):
    if iteration % args.eval_every == 0 or iteration == config.iterations:
      success, reward = evaluate_now(params)
      curve.append({"iteration": iteration, "elapsed_s": round(time.monotonic() - started, 2),
                    "eval_greedy_success": success, "eval_greedy_reward": reward})
      print(f"{name} {iteration}: greedy exact {success:.3f}, reward {reward:.3f}", flush=True)
    if iteration == config.iterations:
      break
    texts = stream.draw(iteration, config.selfplay.batch_size)
    demos = demos_lib.encode_demos(
        tok, [demos_lib.Demo(p, reference(task, p)) for p in texts], context=config.model.context)
    # One width for every batch (no recompiles): the prompt slots plus the answer budget.
    width = task.prompt_len + setup.max_new_tokens
    pad = width - demos.tokens.shape[1]
    batch = demos_lib.DemoBatch(
        np.pad(demos.tokens, [(0, 0), (0, pad)], constant_values=tok.pad_id),
        np.pad(demos.target_mask, [(0, 0), (0, pad)]))
    for _ in range(steps):  # the learner's steps on one fresh batch, as in the loop
      params, opt_state, _ = sft_step(params, opt_state, batch, config=config.model,
                                      optimizer=optimizer)
  return {"task": name, "iterations": config.iterations, "steps_per_iteration": steps,
          "batch_size": config.selfplay.batch_size, "curve": curve,
          "final_greedy_success": curve[-1]["eval_greedy_success"],
          "final_greedy_reward": curve[-1]["eval_greedy_reward"],
          "best_greedy_success": max(r["eval_greedy_success"] for r in curve)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tasks", default="addition,anagram")
  parser.add_argument("--iterations", type=int, default=120)
  parser.add_argument("--eval-every", type=int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--out", type=Path, default=HERE / "results" / "ceiling")
  args = parser.parse_args(argv)
  path = args.out / "results.json"
  results = json.loads(path.read_text()) if path.exists() else {}
  for name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
    key = f"{name}/seed{args.seed}" + "".join(f"/{s}" for s in args.set)
    if key not in results:
      results[key] = run_task(name, args)
      args.out.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps(results, indent=2) + "\n")
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for key, r in results.items():
    its = [c["iteration"] for c in r["curve"]]
    axes[0].plot(its, [c["eval_greedy_success"] for c in r["curve"]], label=key)
    axes[1].plot([c["elapsed_s"] for c in r["curve"]], [c["eval_greedy_success"] for c in r["curve"]],
                 label=key)
  axes[0].set_xlabel("iteration (8 steps on 256 fresh reference answers)")
  axes[1].set_xlabel("seconds")
  for ax in axes:
    ax.set_ylabel("held-out greedy exact match")
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(args.out / "ceiling.png", dpi=110)
  plt.close(fig)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
