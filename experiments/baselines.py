"""Results page: is search worth its compute? Every built-in task, a weak and a trained network.

For each task this trains a run (config `experiments/<task>.toml` if there is one, else
`experiments/sort.toml`'s settings with the task swapped in), sweeps every decoding method over
the budgets after `--weak-iterations` (the weak network) and again after `--iterations` (the
network after the closed loop, resumed from the same run), and writes under `--out`:
`<task>/{weak,trained}.json`, `<task>/{weak,trained}.png`, and `results.md` with one table per
task and network. A stage whose JSON exists is kept and a run that exists is resumed, so an
interrupted sweep picks up where it stopped.

  python experiments/baselines.py --tasks sort,reverse --budgets 1,4,16,64
  python experiments/baselines.py --tasks sort --iterations 4 --weak-iterations 2 \
      --budgets 1,2 --num-prompts 8 --set model.d_model=16 --set selfplay.batch_size=8  # smoke

This is hours of CPU at the default sizes; run it on an accelerator.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tokenzero import config as config_lib
from tokenzero import harness, plots, report
from tokenzero import loop as train_lib
from tokenzero import methods
from tokenzero.tasks import TASKS

HERE = Path(__file__).resolve().parent
DEFAULT_METHODS = "greedy,sample,top_p,best_of_n,beam,majority,mcts,mcts_puct"


def task_config(task: str, iterations: int, overrides: list[str]) -> config_lib.RunConfig:
  own = HERE / f"{task}.toml"
  if own.exists():
    return config_lib.resolve(own, [f"iterations={iterations}"] + overrides)
  base = config_lib.load_toml(HERE / "sort.toml")
  base["task"] = {"name": task}
  return config_lib.resolve(None, [f"iterations={iterations}"] + overrides, base=base)


def sweep_stage(run_dir: Path, out: Path, stage: str, args) -> list[report.Row]:
  rows, meta = harness.evaluate_run(run_dir, methods=args.methods, budgets=args.budgets,
                                    num_prompts=args.num_prompts, batch_size=args.batch_size,
                                    progress=not args.no_progress)
  meta["network"] = stage
  report.save_json(out / f"{stage}.json", rows, meta)
  plots.reward_vs_compute(rows, out / f"{stage}.png", title=f"{meta['task']} ({stage} network)")
  return rows


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tasks", default=",".join(t for t in TASKS if t != "prompts"))
  parser.add_argument("--iterations", type=int, default=400, help="the trained network")
  parser.add_argument("--weak-iterations", type=int, default=20, help="the weak network")
  parser.add_argument("--methods", default=DEFAULT_METHODS, type=methods.parse_methods)
  parser.add_argument("--budgets", default="1,4,16,64", type=methods.parse_budgets)
  parser.add_argument("--num-prompts", type=int, default=256)
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="config override for every task's run (repeatable)")
  parser.add_argument("--out", type=Path, default=HERE / "results")
  parser.add_argument("--no-progress", action="store_true")
  args = parser.parse_args(argv)

  sections = []
  for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
    out = args.out / task
    run_dir = out / "run"
    tables = [f"## {task}\n"]
    for stage, iterations in (("weak", args.weak_iterations), ("trained", args.iterations)):
      if (out / f"{stage}.json").exists():  # done by an earlier invocation.
        rows, _ = report.load_json(out / f"{stage}.json")
      else:
        config = task_config(task, iterations, args.set)
        resume = (run_dir / "config.json").exists()
        train_lib.train(config, run_dir, resume=resume, progress=not args.no_progress)
        rows = sweep_stage(run_dir, out, stage, args)
      tables += [f"### {stage} network ({iterations} iterations)\n",
                 f"![{task} {stage}]({task}/{stage}.png)\n", report.markdown_table(rows)]
    sections.append("\n".join(tables))
    # Rewritten after every task, so that a long sweep shows what it has so far.
    (args.out / "results.md").write_text(
        "# Decoding methods at matched compute\n\nMean reward ± standard error over held-out "
        "prompts; budget b = b forward tokens per generated token (best-of-b, beam-b, "
        "search with b-1 simulations).\n\n" + "\n".join(sections))
  return 0


if __name__ == "__main__":
  sys.exit(main())
