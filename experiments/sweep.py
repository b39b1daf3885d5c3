"""Model size and schedule, chosen by measurement: a small sweep under one wall-clock budget.

Each cell trains from random init with the default experiment's settings (`experiments/
all_tasks.py`'s `task_config`) changed by one thing, for `--minutes` of wall-clock, in a process
of its own, one cell after another: the cells compete for the same quiet cores one at a time, so
a bigger network pays for its slower iterations. Recorded per cell: the held-out greedy success
and reward at every evaluation (curves), iterations and counted self-play forward tokens.
Writes `<out>/<task>/<cell>-seed<seed>/run/`, `<out>/results.json` and `<out>/<task>.png`.

  python experiments/sweep.py --task addition --minutes 6
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from targets import run_child, train_and_summarize  # noqa: E402  as the targets' runs

HERE = Path(__file__).resolve().parent
CHANGES = {
    "": [],  # 2 layers x 64, 4 heads; 8 steps of 3e-3 a iteration, 256 answers of 32 simulations
    "wide": ["model.d_model=128"],
    "deep": ["model.num_layers=4"],
    "steps16": ["optim.steps_per_iteration=16"],
    "steps4": ["optim.steps_per_iteration=4"],
    "batch128": ["selfplay.batch_size=128"],
    "lr1e-3": ["optim.learning_rate=1e-3"],
    "sims16": ["search.num_simulations=16"],
}
# Two learners: "plain", the defaults before found answers and replay were measured (fresh
# trajectories, search-policy and return targets only), and "found_replay", today's defaults
# (experiments/targets.py's best variant), spelled out.
LEARNERS = {"plain": ["optim.found_weight=0", "replay.capacity=0"],
            "found_replay": ["optim.found_weight=1.0", "replay.capacity=2048",
                             "replay.sample_old=256"]}
CELLS = {learner + (f"_{name}" if name else ""): base + change
         for learner, base in LEARNERS.items() for name, change in CHANGES.items()}


def reached(curve: list[dict], level: float = 0.95):
  """(iteration, seconds) of the first evaluation at greedy exact match >= `level`, or None."""
  return next(((r["iteration"], r["elapsed_s"]) for r in curve
               if r["eval_greedy_success"] >= level), None)


def longest_plateau(curve: list[dict], band: float = 0.05, level: float = 0.95) -> int:
  """The most iterations the greedy exact match stayed within `band` (max - min) while below
  `level`: the issue's "no plateau longer than 30 iterations" (from random init, the first
  iterations at 0 count as one)."""
  best, start = 0, 0
  for end in range(len(curve)):
    if curve[end]["eval_greedy_success"] >= level:
      break
    while True:
      window = [r["eval_greedy_success"] for r in curve[start:end + 1]]
      if max(window) - min(window) < band:
        break
      start += 1
    best = max(best, curve[end]["iteration"] - curve[start]["iteration"])
  return best


def plot(results: dict, task: str, path: Path) -> None:
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for key, result in results.items():
    if not key.startswith(task + "/"):
      continue
    curve, (cell, seed) = result["curve"], key.split("/")[1:]
    # The learner before dashed; one colour per seed for a cell, per cell for seed 0.
    style = dict(label=f"{cell} {seed}", linestyle="--" if cell.startswith("plain") else "-",
                 color=plt.cm.tab10(int(seed[4:]) + list(CHANGES).index(
                     cell.removeprefix("found_replay").removeprefix("plain").lstrip("_"))))
    seconds = [r["elapsed_s"] for r in curve]
    axes[0].plot(seconds, [r["eval_greedy_success"] for r in curve], **style)
    axes[1].plot(seconds, [r["eval_greedy_reward"] for r in curve], **style)
  for ax, y in zip(axes, ["held-out greedy exact match", "held-out greedy reward"]):
    ax.set_xlabel("seconds (one cell at a time)")
    ax.set_ylabel(y)
  axes[0].legend(fontsize=7)
  fig.suptitle(f"{task}: model size and schedule under one budget")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--task", default="addition")
  parser.add_argument("--cells", default=",".join(CELLS), help=", ".join(CELLS))
  parser.add_argument("--minutes", type=float, default=6.0)
  parser.add_argument("--iterations", type=int, default=300,
                      help="schedule length (the learning rate's horizon), as all_tasks.py's")
  parser.add_argument("--eval-every", type=int, default=5)
  parser.add_argument("--seeds", default="0", help="comma-separated")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--out", type=Path, default=HERE / "results" / "sweep")
  parser.add_argument("--one", metavar="CELL", help=argparse.SUPPRESS)  # a child
  parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)  # the child's
  args = parser.parse_args(argv)

  if args.one:
    overrides = [f"minutes={args.minutes}", f"iterations={args.iterations}", f"seed={args.seed}",
                 f"eval.every={args.eval_every}"] + CELLS[args.one] + args.set
    out = args.out / args.task / f"{args.one}-seed{args.seed}"
    print(json.dumps(train_and_summarize(args.task, overrides, out)))
    return 0
  path = args.out / "results.json"
  results = json.loads(path.read_text()) if path.exists() else {}
  for seed in [int(s) for s in args.seeds.split(",")]:
    for cell in [c.strip() for c in args.cells.split(",") if c.strip()]:
      if cell not in CELLS:
        parser.error(f"unknown cell {cell!r}; known: {', '.join(CELLS)}")
      key = f"{args.task}/{cell}/seed{seed}"
      if key not in results:  # finished cells are kept
        run_child([__file__, "--one", cell, "--task", args.task, "--seed", str(seed),
                   "--minutes", str(args.minutes), "--iterations", str(args.iterations),
                   "--eval-every", str(args.eval_every), "--out", str(args.out)]
                  + [f"--set={s}" for s in args.set], results, key, path)
      r = results[key]
      print(f"{key}: {r['iterations']} iterations, greedy exact {r['final_greedy_success']:.3f} "
            f"(best {r['best_greedy_success']:.3f}, last five {r['last5_eval_greedy_success']:.3f})"
            f", reward {r['final_greedy_reward']:.3f}, {r['elapsed_s']:.0f} s; >= 0.95 at "
            f"{reached(r['curve'])} (iteration, s), longest plateau "
            f"{longest_plateau(r['curve'])} iterations", flush=True)
  plot(results, args.task, args.out / f"{args.task}.png")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
