"""The learner's target choices against each other: same task, seed and number of iterations.

Each variant trains from random init with the settings of `experiments/all_tasks.py` (the
default experiment's) for `--iterations` iterations (a count, not minutes: the cores may be
shared, and a variant must not win by getting more of them), in a process of its own. Recorded
per variant: the held-out greedy success and reward at every evaluation (curves), the self-play
tokens and seconds it took, and the value-head diagnostics (`value_error`, `return_std`).
Writes `<out>/<task>/<variant>-seed<seed>/run/`, `<out>/results.json` and `<out>/<task>.png`
(the variants' curves on the same axes: against iterations and against seconds).

  python experiments/targets.py --task addition --iterations 120
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tokenzero import loop as train_lib  # noqa: E402

from all_tasks import task_config  # noqa: E402  the same settings as every task's run

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "return": [],  # the episode's return, the search's improved policy (PLAIN below)
    "lambda0.8": ["selfplay.value_target=lambda", "selfplay.td_lambda=0.8"],
    "lambda0.5": ["selfplay.value_target=lambda", "selfplay.td_lambda=0.5"],
    "cut_explored": ["selfplay.cut_explored=true"],
    "visits": ["selfplay.policy_target=visits"],
    # Replay (issue 12, item 2): each iteration's learner batch is the 256 fresh answers plus 256
    # drawn from the last 8 iterations' (2048 rows); reanalyze refreshes the drawn rows' targets
    # with the current network's search (counted in the forward tokens).
    "replay": ["replay.capacity=2048", "replay.sample_old=256"],
    "reanalyze": ["replay.capacity=2048", "replay.sample_old=256", "replay.reanalyze=true"],
    # Expert iteration beside the search-policy target: + the next-token loss on the best answer
    # each row's searches verified, where it is exact (optim.found_min_reward=1).
    "found": ["optim.found_weight=1.0"],
    "found_replay": ["optim.found_weight=1.0", "replay.capacity=2048", "replay.sample_old=256"],
    # ... on every row: the best answer its searches verified, exact or not (best-of-search).
    "found_all": ["optim.found_weight=1.0", "optim.found_min_reward=0"],
    "found_all_replay": ["optim.found_weight=1.0", "optim.found_min_reward=0",
                         "replay.capacity=2048", "replay.sample_old=256"],
}
CURVE_KEYS = ("iteration", "elapsed_s", "eval_greedy_success", "eval_greedy_reward",
              "selfplay_reward", "value_error", "return_std")


# The learner these variants were measured against: no found answers, no replay (the defaults
# before both were measured here and turned on). A variant's own overrides come after it.
PLAIN = ["optim.found_weight=0", "replay.capacity=0"]


def run_one(task: str, variant: str, args) -> dict:
  overrides = [f"iterations={args.iterations}", f"seed={args.seed}",
               f"eval.every={args.eval_every}"] + PLAIN + VARIANTS[variant] + args.set
  return train_and_summarize(task, overrides, args.out / task / f"{variant}-seed{args.seed}")


def train_and_summarize(task: str, overrides: list[str], out: Path) -> dict:
  """Trains (or resumes) `<out>/run` and sums it up: the evaluations as a curve, with the
  self-play (and reanalyze) forward tokens the run had spent by each, counted by the search."""
  run_dir = out / "run"
  rows = train_lib.train(task_config(task, overrides), run_dir, progress=False,
                         resume=(run_dir / "config.json").exists(), log=lambda s: None)
  spent, curve = 0, []
  for r in rows:
    spent += (r.get("selfplay_forward_tokens") or 0) + (r.get("reanalyze_forward_tokens") or 0)
    if r.get("eval_greedy_success") is not None:
      curve.append({**{k: r.get(k) for k in CURVE_KEYS}, "forward_tokens": spent})
  tail = [r for r in rows[-10:] if r.get("value_error") is not None]
  return {"overrides": overrides, "iterations": rows[-1]["iteration"],
          "elapsed_s": rows[-1]["elapsed_s"],
          "final_greedy_success": curve[-1]["eval_greedy_success"],
          "final_greedy_reward": curve[-1]["eval_greedy_reward"],
          "best_greedy_success": max(r["eval_greedy_success"] for r in curve),
          # The last five evaluations' mean: one evaluation's exact match swings by 2-5 points.
          "last5_eval_greedy_success": sum(r["eval_greedy_success"] for r in curve[-5:])
                                       / len(curve[-5:]),
          "last5_eval_greedy_reward": sum(r["eval_greedy_reward"] for r in curve[-5:])
                                      / len(curve[-5:]),
          "last10_value_error": sum(r["value_error"] for r in tail) / max(len(tail), 1),
          "last10_return_std": sum(r["return_std"] for r in tail) / max(len(tail), 1),
          "curve": curve}


def run_child(argv: list[str], results: dict, key: str, path: Path) -> None:
  """Runs one variant in a process of its own (its compiled programs and memory go with it) and
  keeps its summary, the child's last line of output, in `results`, saved to `path` at once."""
  done = subprocess.run([sys.executable] + argv, check=True, capture_output=True, text=True)
  results[key] = json.loads(done.stdout.strip().splitlines()[-1])
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(results, indent=2) + "\n")


def plot(results: dict, task: str, path: Path) -> None:
  fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
  names = sorted({key.split("/")[1] for key in results if key.startswith(task + "/")},
                 key=list(VARIANTS).index)
  for key, result in results.items():
    if not key.startswith(task + "/"):
      continue
    name, seed = key.split("/")[1:]
    # One colour per variant in every panel; seeds other than 0 dashed.
    style = dict(color=plt.cm.tab20(names.index(name) % 20), label=f"{name} {seed}",
                 linestyle="-" if seed == "seed0" else "--", linewidth=1.2)
    curve = result["curve"]
    its = [r["iteration"] for r in curve]
    rewards = [r["eval_greedy_reward"] for r in curve]
    axes[0].plot(its, [r["eval_greedy_success"] for r in curve], **style)
    axes[1].plot(its, rewards, **style)
    axes[2].plot([r["elapsed_s"] for r in curve], rewards, **style)
    if curve[-1].get("forward_tokens"):  # runs recorded before the count have none
      axes[3].plot([r["forward_tokens"] / 1e6 for r in curve], rewards, **style)
  for ax, (x, y) in zip(axes, [("iteration", "held-out greedy exact match"),
                               ("iteration", "held-out greedy reward"),
                               ("seconds (cores shared for some)", "held-out greedy reward"),
                               ("self-play + reanalyze forward tokens (M, counted)",
                                "held-out greedy reward")]):
    ax.set_xlabel(x)
    ax.set_ylabel(y)
  axes[0].legend(fontsize=6, ncol=2)
  fig.suptitle(f"{task}: value and policy targets, found answers, replay and reanalyze")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--task", default="addition")
  parser.add_argument("--variants", default=",".join(VARIANTS), help=", ".join(VARIANTS))
  parser.add_argument("--iterations", type=int, default=120)
  parser.add_argument("--eval-every", type=int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--out", type=Path, default=HERE / "results" / "targets")
  parser.add_argument("--one", metavar="VARIANT", help=argparse.SUPPRESS)  # a child
  args = parser.parse_args(argv)

  if args.one:
    print(json.dumps(run_one(args.task, args.one, args)))
    return 0
  path = args.out / "results.json"
  results = json.loads(path.read_text()) if path.exists() else {}
  for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
    key = f"{args.task}/{variant}/seed{args.seed}"
    if key not in results:  # finished variants are kept
      run_child([__file__, "--one", variant, "--task", args.task, "--iterations",
                 str(args.iterations), "--eval-every", str(args.eval_every), "--seed",
                 str(args.seed), "--out", str(args.out)] + [f"--set={s}" for s in args.set],
                results, key, path)
    r = results[key]
    print(f"{key}: greedy exact {r['final_greedy_success']:.3f} (best "
          f"{r['best_greedy_success']:.3f}), reward {r['final_greedy_reward']:.3f}, value error "
          f"{r['last10_value_error']:.3f} of return std {r['last10_return_std']:.3f}, "
          f"{r['elapsed_s']:.0f} s", flush=True)
  plot(results, args.task, args.out / f"{args.task}.png")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
