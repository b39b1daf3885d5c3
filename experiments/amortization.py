"""Amortization: does the loop put into the raw policy what search and sampling find?

AlphaZero's claim, per task: the network's greedy answer after training (1 forward token per
answer token) is at least as good as best-of-16 and search-16 (16x the compute) with the network
the loop started from. Two starting points are measured: the random initialisation (the run's
iteration-0 checkpoint) and a weak network (`--weak-iteration`, default the one
`experiments/all_tasks.py` sweeps). Every cell is on the same held-out prompts of the run (its
hash split), with the run's own reward, answer budget and search settings, costs measured.

Reads the runs `experiments/all_tasks.py` trained (`<results>/<task>/run/`, checkpoints every
`--weak-iteration` kept); writes `<results>/amortization.json` and `amortization.png`, and prints
the table. A verdict is *yes* when greedy-after's mean reward is at least the other's within one
standard error of the difference (as `all_tasks.at_least`).

  python experiments/amortization.py --tasks sort,reverse,addition,anagram,parentheses,countdown
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tokenzero import harness, report  # noqa: E402

from all_tasks import at_least  # noqa: E402  the results pages' verdict

HERE = Path(__file__).resolve().parent
BEFORE = [("greedy", 1), ("best_of_n", 16), ("mcts", 16)]


def _row(rows, method, budget):
  return next(r for r in rows if r.method == method and r.budget == budget)


def _cell(row: report.Row) -> dict:
  return {"mean_reward": row.mean_reward, "stderr": row.stderr,
          "success_rate": row.success_rate, "success_stderr": row.success_stderr,
          "forward_tokens_per_answer": row.forward_tokens_per_answer,
          "reward_calls_per_answer": row.reward_calls_per_answer}


def measure(task: str, run_dir: Path, args) -> dict:
  final = max(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
  cells, rows_by_net = {}, {}
  for name, iteration, jobs in [("initial", 0, BEFORE), ("weak", args.weak_iteration, BEFORE),
                                ("trained", final, [("greedy", 1)])]:
    methods = sorted({m for m, _ in jobs})
    budgets = sorted({b for _, b in jobs})
    rows, _ = harness.evaluate_run(run_dir, methods=methods, budgets=budgets,
                                   num_prompts=args.num_prompts, iteration=iteration,
                                   progress=False)
    rows_by_net[name] = rows
    for method, budget in jobs:
      cells[f"{name}/{method}@{budget}"] = _cell(_row(rows, method, budget))
  after = _row(rows_by_net["trained"], "greedy", 1)
  verdicts = {f"greedy after >= {net} {m}@{b}": at_least(after, _row(rows_by_net[net], m, b))
              for net in ("initial", "weak") for m, b in BEFORE[1:]}
  return {"task": task, "iterations": {"initial": 0, "weak": args.weak_iteration,
                                       "trained": final},
          "num_prompts": args.num_prompts, "cells": cells, "verdicts": verdicts}


def plot(results: dict, path: Path) -> None:
  tasks = list(results)
  keys = ["initial/best_of_n@16", "initial/mcts@16", "weak/best_of_n@16", "weak/mcts@16",
          "trained/greedy@1"]
  fig, ax = plt.subplots(figsize=(1.6 * len(tasks) + 2, 3.6))
  width = 0.8 / len(keys)
  for i, key in enumerate(keys):
    xs = [t + (i - len(keys) / 2 + 0.5) * width for t in range(len(tasks))]
    ys = [results[t]["cells"][key]["mean_reward"] for t in tasks]
    es = [results[t]["cells"][key]["stderr"] for t in tasks]
    ax.bar(xs, ys, width, yerr=es, label=key.replace("/", " "),
           hatch="//" if key.startswith("trained") else None)
  ax.set_xticks(range(len(tasks)), tasks)
  ax.set_ylabel("mean reward, held-out prompts")
  ax.set_title("greedy after the loop (1x) vs best-of-16 / search-16 before (16x)")
  ax.legend(fontsize=7, ncols=3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tasks", default="sort,reverse,addition,anagram,parentheses,countdown")
  parser.add_argument("--weak-iteration", type=int, default=10)
  parser.add_argument("--num-prompts", type=int, default=256)
  parser.add_argument("--results", type=Path, default=HERE / "results")
  args = parser.parse_args(argv)

  path = args.results / "amortization.json"
  results = json.loads(path.read_text()) if path.exists() else {}
  for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
    if task not in results:  # finished tasks are kept
      results[task] = measure(task, args.results / task / "run", args)
      path.write_text(json.dumps(results, indent=2) + "\n")
    cells = results[task]["cells"]
    print(task, " | ".join(f"{k} {v['mean_reward']:.3f}±{v['stderr']:.3f} "
                           f"(exact {v['success_rate']:.3f})" for k, v in cells.items()))
    for name, verdict in results[task]["verdicts"].items():
      print(f"  {name}: {verdict}")
  plot(results, args.results / "amortization.png")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
