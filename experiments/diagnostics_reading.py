"""Reads a training run's learning diagnostics, and measures how noisy the search's targets are.

1. From `metrics.jsonl`: the diagnostics (`tokenzero.diagnostics`) at the first, middle and last
   iteration and their mean over the last 20.
2. From the newest checkpoint: R self-plays of the same fresh prompts with different keys. At
   answer step 0 their states are identical, so their R policy targets differ only by the
   search's own randomness (Gumbel noise, which slots get visits). `noise_kl` = mean
   KL(target_r || mean target) is the part of `root_kl` no network can remove (the best fit to
   a noisy target is its mean); `top_agreement_between_searches`: how often two searches of the
   same root put their most weight on the same candidate.
3. The diagnostics per answer step, from the last of those self-plays.

  python experiments/diagnostics_reading.py RUN_DIR --json OUT.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from tokenzero import diagnostics, prompts, rundir, selfplay
from tokenzero.run import load_run

KEYS = ["temperature", "selfplay_reward", "eval_greedy_reward", "reward_gap", "selfplay_success",
        "eval_greedy_success", "found_success", "terminal_reached", "terminal_on_pick", "value_error",
        "search_value_error", "return_std", "target_entropy", "prior_entropy", "policy_entropy",
        "root_kl", "greedy_agreement", "explore_fraction", "offpolicy_fraction", "loss_policy",
        "elapsed_s"]


def longest_gap(rows: list[dict], above: float = 0.1) -> int:
  """The most iterations in a row over which every evaluated row's `reward_gap` (self-play
  reward - held-out greedy reward) exceeded `above`: the issue's "gap > 0.1 for 50 iterations"."""
  best, start = 0, None
  for r in rows:
    gap = r.get("reward_gap")
    if gap is None:
      continue
    if gap > above:
      start = r["iteration"] if start is None else start
      best = max(best, r["iteration"] - start + 1)
    else:
      start = None
  return best


def metrics_summary(run: Path) -> dict:
  rows = rundir.read_metrics(run / rundir.METRICS_FILE, upto=10**9)[1:]
  picks = [rows[i] for i in sorted({0, len(rows) // 2, len(rows) - 1})]
  last = rows[-20:]
  mean = lambda k: (float(np.mean([r[k] for r in last if r.get(k) is not None]))
                    if any(r.get(k) is not None for r in last) else None)
  return {"iterations": [r["iteration"] for r in picks],
          "rows": {k: [r.get(k) for r in picks] for k in KEYS},
          "mean_last_20": {k: mean(k) for k in KEYS},
          "longest_gap_over_0.1_iterations": longest_gap(rows)}


def target_noise(run: Path, repeats: int) -> dict:
  setup, params = load_run(run)
  config = setup.config
  # Prompts no iteration of the run trained on: another seed's stream.
  texts = prompts.training_stream(setup.task, config.seed + 1, split=config.eval.split,
                                  eval_texts=[]).draw(0, config.selfplay.batch_size)
  batch = prompts.encode_batch(setup.tokenizer, texts, setup.task.prompt_len)
  targets = []
  for r in range(repeats):
    traj = jax.device_get(selfplay.self_play(
        params, batch.tokens, batch.lengths, jax.random.key(100 + r), jnp.float32(0.5),
        setup.allowed, config=config.model, search_config=config.search,
        selfplay_config=config.selfplay, reward_fn=setup.reward_fn,
        max_new_tokens=setup.max_new_tokens, eos_id=setup.tokenizer.eos_id))
    targets.append(np.asarray(traj.policy_weights[:, 0], np.float64))  # [B, K] at step 0
  prior = np.asarray(traj.root_prior[:, 0], np.float64)  # the same root in every repeat
  targets = np.stack(targets)  # [R, B, K]
  mean_target = targets.mean(0)
  top = targets.argmax(-1)  # [R, B]
  pairs = [np.mean(top[r] == top[s]) for r in range(repeats) for s in range(repeats) if r != s]
  live = np.asarray(traj.step_mask)
  per_step = {"live_rows": live.sum(0).tolist()}
  for name, values in [("terminal_on_pick", traj.terminal_on_pick),
                       ("greedy_agreement", diagnostics.greedy_agreement(traj)),
                       ("target_entropy", diagnostics.entropy(traj.policy_weights)),
                       ("root_kl", diagnostics.kl_divergence(traj.policy_weights,
                                                             traj.root_prior))]:
    values = np.asarray(values, np.float64)
    per_step[name] = [float(values[live[:, t], t].mean()) if live[:, t].any() else None
                      for t in range(live.shape[1])]
  return {
      "repeats": repeats, "rows": int(targets.shape[1]),
      "step0_target_entropy": float(diagnostics.entropy(targets).mean()),
      "step0_prior_entropy": float(diagnostics.entropy(prior).mean()),
      "step0_root_kl": float(diagnostics.kl_divergence(targets, prior[None]).mean()),
      "step0_noise_kl": float(diagnostics.kl_divergence(targets, mean_target[None]).mean()),
      "step0_mean_target_kl_to_prior": float(diagnostics.kl_divergence(mean_target,
                                                                       prior).mean()),
      "step0_top_agreement_between_searches": float(np.mean(pairs)),
      "step0_mean_target_top_is_prior_top": float(np.mean(mean_target.argmax(-1) ==
                                                          prior.argmax(-1))),
      "per_step": per_step,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("run", type=Path)
  parser.add_argument("--repeats", type=int, default=4)
  parser.add_argument("--json", type=Path)
  args = parser.parse_args()
  result = {"run": str(args.run), "config": rundir.read_config(args.run),
            "metrics": metrics_summary(args.run),
            # --repeats 0: the metrics only (no checkpoint loaded, nothing compiled).
            "target_noise": target_noise(args.run, args.repeats) if args.repeats else None}
  metrics = result["metrics"]
  print(f"iterations {metrics['iterations']} (and the mean of the last 20)")
  for key in KEYS:
    values = " ".join("-" if v is None else f"{v:8.3f}" for v in metrics["rows"][key])
    last = metrics["mean_last_20"][key]
    print(f"  {key:20s} {values} | {'-' if last is None else f'{last:8.3f}'}")
  print(f"longest stretch with reward_gap > 0.1: {metrics['longest_gap_over_0.1_iterations']} "
        "iterations")
  print(json.dumps(result["target_noise"], indent=1))
  if args.json:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
  main()
