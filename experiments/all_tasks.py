"""Every built-in task from zero under a wall-clock budget, then search vs the baselines.

For each task: train from random init with the default experiment's settings (or
`experiments/<task>.toml` when present) for at most `--minutes`, and record greedy success and
reward on the held-out prompts before (iteration 0) and after. Then sweep decoding methods over
budgets on a weak network (the checkpoint at `--weak-iteration`) and on the trained one.

Writes under `--out`: `<task>/run/` (the training run), `<task>/training.json`,
`<task>/{weak,trained}.{json,png}` and `results.md` (nothing else: this is the only script
writing there). Finished stages are kept, so an interrupted invocation picks up where it stopped.

  python experiments/all_tasks.py --tasks sort,reverse --minutes 8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tokenzero import config as config_lib
from tokenzero import harness, plots, report
from tokenzero import loop as train_lib
from tokenzero import methods
from tokenzero.tasks import TASKS

HERE = Path(__file__).resolve().parent


def task_config(task: str, overrides: list[str]) -> config_lib.RunConfig:
  own = HERE / f"{task}.toml"
  if own.exists():
    return config_lib.resolve(own, overrides)
  base = config_lib.load_toml(HERE / "sort.toml")
  base["task"] = {"name": task}
  return config_lib.resolve(None, overrides, base=base)


def train_task(task: str, out: Path, args) -> dict:
  record = out / "training.json"
  if record.exists():
    return json.loads(record.read_text())
  run_dir = out / "run"
  overrides = [f"minutes={args.minutes}", f"iterations={args.iterations}",
               f"checkpoint_every={args.weak_iteration}", "keep_checkpoints=1000"] + args.set
  config = task_config(task, overrides)
  started = time.time()
  rows = train_lib.train(config, run_dir, resume=(run_dir / "config.json").exists(),
                         progress=not args.no_progress)
  first, last = rows[0], rows[-1]
  result = {
      "task": task, "task_params": dict(config.task.params),
      "minutes_budget": args.minutes, "wall_s": round(time.time() - started, 1),
      "iterations": last["iteration"], "train_elapsed_s": last["elapsed_s"],
      "greedy_success_before": first["eval_greedy_success"],
      "greedy_success_after": last.get("eval_greedy_success"),
      "greedy_reward_before": first["eval_greedy_reward"],
      "greedy_reward_after": last.get("eval_greedy_reward"),
      "eval_prompts": config.eval.num_prompts,
  }
  record.write_text(json.dumps(result, indent=2) + "\n")
  return result


def sweep(task: str, out: Path, stage: str, iteration, args):
  path = out / f"{stage}.json"
  if path.exists():
    return report.load_json(path)[0]
  rows, meta = harness.evaluate_run(out / "run", methods=args.methods, budgets=args.budgets,
                                    num_prompts=args.num_prompts, iteration=iteration,
                                    progress=not args.no_progress)
  meta["network"] = stage
  report.save_json(path, rows, meta)
  plots.reward_vs_compute(rows, out / f"{stage}.png", title=f"{task} ({stage} network)")
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tasks", default=",".join(t for t in TASKS if t != "prompts"))
  parser.add_argument("--minutes", type=float, default=8.0, help="training budget per task")
  parser.add_argument("--iterations", type=int, default=300, help="schedule length")
  parser.add_argument("--weak-iteration", type=int, default=10)
  parser.add_argument("--methods", default=",".join(methods.SWEEP_METHODS),
                      type=methods.parse_methods)
  parser.add_argument("--budgets", default="1,4,16,64", type=methods.parse_budgets)
  parser.add_argument("--num-prompts", type=int, default=256)
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--out", type=Path, default=HERE / "results")
  parser.add_argument("--skip-sweeps", action="store_true")
  parser.add_argument("--no-progress", action="store_true")
  args = parser.parse_args(argv)

  for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
    out = args.out / task
    out.mkdir(parents=True, exist_ok=True)
    result = train_task(task, out, args)
    print(json.dumps(result), flush=True)
    if not args.skip_sweeps:
      sweep(task, out, "weak", args.weak_iteration, args)
      sweep(task, out, "trained", None, args)
  write_report(args.out)
  return 0


def _cell(rows, method, budget):
  return next((r for r in rows if r.method == method and r.budget == budget), None)


def at_least(a, b) -> str:
  """'a ≥ b' within one standard error of the difference (the two SEs combined as if
  independent, which overstates it: both ran on the same prompts)."""
  if a is None or b is None:
    return "–"
  diff = a.mean_reward - b.mean_reward
  se = (a.stderr ** 2 + b.stderr ** 2) ** 0.5
  verdict = "yes" if diff >= -se else "**no**"
  return f"{verdict} ({diff:+.3f} ± {se:.3f})"


def monotone(rows, method) -> str:
  """Each budget's reward ≥ the previous budget's within one standard error."""
  cells = sorted((r for r in rows if r.method == method), key=lambda r: r.budget)
  drops = [f"{a.budget}→{b.budget}" for a, b in zip(cells, cells[1:])
           if b.mean_reward < a.mean_reward - (a.stderr ** 2 + b.stderr ** 2) ** 0.5]
  return "–" if len(cells) < 2 else ("yes" if not drops else "**no** (" + ", ".join(drops) + ")")


# (column, verdict) over one sweep: the claims the results pages make, computed, not typed.
CHECKS = [
    ("mcts b=4 ≥ greedy", lambda rows: at_least(_cell(rows, "mcts", 4), _cell(rows, "greedy", 1))),
    ("mcts_value b=4 ≥ greedy",
     lambda rows: at_least(_cell(rows, "mcts_value", 4), _cell(rows, "greedy", 1))),
    ("mcts_puct b=4 ≥ greedy",
     lambda rows: at_least(_cell(rows, "mcts_puct", 4), _cell(rows, "greedy", 1))),
    ("mcts monotone", lambda rows: monotone(rows, "mcts")),
    ("mcts_puct monotone", lambda rows: monotone(rows, "mcts_puct")),
    ("mcts_value monotone", lambda rows: monotone(rows, "mcts_value")),
] + [(f"mcts ≥ best_of_n b={b}",
      lambda rows, b=b: at_least(_cell(rows, "mcts", b), _cell(rows, "best_of_n", b)))
     for b in (4, 16, 64)] + [
    (f"mcts_value ≥ best_of_n_value b={b}",
     lambda rows, b=b: at_least(_cell(rows, "mcts_value", b), _cell(rows, "best_of_n_value", b)))
    for b in (4, 16, 64)] + [
    (f"mcts_value ≥ beam b={b}",
     lambda rows, b=b: at_least(_cell(rows, "mcts_value", b), _cell(rows, "beam", b)))
    for b in (4, 16, 64)]


def write_report(out: Path) -> None:
  """results.md from whatever stages exist under `out`."""
  lines = ["# Results: every task from zero, then search vs baselines\n",
           "Produced by `python experiments/all_tasks.py` (see its docstring). Rewards are means "
           "over held-out prompts ± a standard error clustered by prompt; costs are measured per "
           "answer: forward tokens the decoder ran, completions handed to the reward (the task's "
           "exact verifier), wall-clock. *verifier = yes* marks methods that call the reward "
           "while decoding (best-of-n by reward, search with the reward in the tree).\n",
           "| task | iterations | train minutes | greedy success before | after | "
           "greedy reward before | after |", "|---|---|---|---|---|---|---|"]
  checks = ["\n## Checks, computed from the sweeps\n",
            "A verdict is *yes* when the first is at least the second within one standard error "
            "of the difference (diff ± SE).\n",
            "| task | network | " + " | ".join(name for name, _ in CHECKS) + " |",
            "|---|---|" + "---|" * len(CHECKS)]
  sections = []
  for task_dir in sorted(p for p in out.iterdir() if (p / "training.json").exists()):
    t = json.loads((task_dir / "training.json").read_text())
    lines.append(f"| {t['task']} | {t['iterations']} | {t['train_elapsed_s'] / 60:.1f} | "
                 f"{t['greedy_success_before']:.3f} | {t['greedy_success_after']:.3f} | "
                 f"{t['greedy_reward_before']:.3f} | {t['greedy_reward_after']:.3f} |")
    for stage in ("weak", "trained"):
      if (task_dir / f"{stage}.json").exists():
        rows, meta = report.load_json(task_dir / f"{stage}.json")
        checks.append(f"| {t['task']} | {stage} | "
                      + " | ".join(check(rows) for _, check in CHECKS) + " |")
        sections += [f"\n## {t['task']}, {stage} network (iteration {meta.get('iteration')})\n",
                     f"![{t['task']} {stage}]({task_dir.name}/{stage}.png)\n",
                     report.markdown_table(rows), "\nMeasured costs:\n",
                     report.markdown_costs(rows)]
  (out / "results.md").write_text("\n".join(lines + checks + sections) + "\n")


if __name__ == "__main__":
  raise SystemExit(main())
