"""`task.curriculum=true` against the same run without it: same seed, same wall-clock budget.

Each task trains from random init with the settings of `experiments/all_tasks.py` (the default
experiment's, `experiments/<task>.toml` when present) for at most `--minutes`, once as is and
once with the curriculum. Recorded per run: greedy success and reward on the full task's held-out
prompts (`eval_greedy_*`) at the end, their best, and the curriculum's levels over time (the
iteration and the elapsed seconds at which each size started, and the level success that moved
it). Every run has a process of its own, so each pays its own compilations inside its budget
(a second run in one process would reuse the first one's programs). Writes
`<out>/<task>/<variant>-seed<seed>/run/` and `<out>/results.json` (printed too).

  python experiments/curriculum.py --tasks addition,parentheses --minutes 6
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tokenzero import evaluate, prompts
from tokenzero import loop as train_lib
from tokenzero.run import load_run
from tokenzero.tasks import brackets

from all_tasks import task_config  # the same settings as every task's from-zero run

HERE = Path(__file__).resolve().parent
# A held-out prompt's size: the smallest curriculum size whose generator draws it.
SIZE_OF = {
    "addition": lambda p: max(len(x) for x in p.split("+")),
    "parentheses": lambda p: (len(p) + len(brackets.closing(p))) // 2,
}
VARIANTS = {"baseline": [], "curriculum": ["task.curriculum=true"],
            "curriculum_t05": ["task.curriculum=true", "task.curriculum_threshold=0.5"]}


def levels_over_time(rows: list[dict]) -> list[dict]:
  """Where each curriculum size started: iteration, elapsed seconds, and the success on the
  size before that moved it up."""
  out, previous = [], None
  for before, row in zip([None] + rows[:-1], rows):
    size = row.get("curriculum_level")
    if size is not None and size != previous:
      out.append({"size": size, "iteration": row["iteration"], "elapsed_s": row["elapsed_s"],
                  "moved_by_success": before and before.get("curriculum_success")})
      previous = size
  return out


def summary(rows: list[dict], wall_s: float, overrides: list[str]) -> dict:
  evaluated = [r for r in rows if r.get("eval_greedy_success") is not None]
  last = evaluated[-1]
  return {
      "overrides": overrides, "wall_s": round(wall_s, 1), "iterations": rows[-1]["iteration"],
      "train_elapsed_s": rows[-1]["elapsed_s"],
      "eval_greedy_success": last["eval_greedy_success"],
      "eval_greedy_reward": last["eval_greedy_reward"],
      "best_eval_greedy_success": max(r["eval_greedy_success"] for r in evaluated),
      # The greedy success on the held-out prompts every minute of the run.
      "eval_greedy_success_by_minute": {
          minute: next((r["eval_greedy_success"] for r in reversed(evaluated)
                        if r["elapsed_s"] <= 60 * minute), None)
          for minute in range(1, int(rows[-1]["elapsed_s"] // 60) + 2)},
      "levels": levels_over_time(rows),
      "last_curriculum_success": rows[-1].get("curriculum_success"),
  }


def success_by_size(run_dir: Path) -> dict[str, dict]:
  """The final network's greedy success on the run's held-out prompts, by their size (how much
  of the full task's success comes from its small instances)."""
  setup, params = load_run(run_dir)
  config = setup.config
  texts = prompts.eval_texts(setup.task, config.seed, config.eval.num_prompts,
                             split=config.eval.split)
  batch = prompts.encode_batch(setup.tokenizer, texts, setup.task.prompt_len)
  result = evaluate.evaluate_greedy(
      params, batch.tokens, batch.lengths, setup.allowed, config=config.model,
      reward_fn=setup.reward_fn, max_new_tokens=setup.max_new_tokens,
      eos_id=setup.tokenizer.eos_id, success_threshold=config.task.success_threshold)
  success = np.asarray(result.success)
  sizes = np.asarray([SIZE_OF[config.task.name](p) for p in texts])
  return {str(size): {"prompts": int((sizes == size).sum()),
                      "greedy_success": float(success[sizes == size].mean())}
          for size in sorted(set(sizes.tolist()))}


def run_one(task: str, variant: str, args) -> dict:
  overrides = [f"minutes={args.minutes}", f"iterations={args.iterations}",
               f"seed={args.seed}"] + VARIANTS[variant] + args.set
  run_dir = args.out / task / f"{variant}-seed{args.seed}" / "run"
  started = time.time()
  rows = train_lib.train(task_config(task, overrides), run_dir, progress=False,
                         log=lambda s: None)
  result = summary(rows, time.time() - started, overrides)
  if task in SIZE_OF:
    result["success_by_size"] = success_by_size(run_dir)
  return result


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tasks", default="addition")
  parser.add_argument("--variants", default="baseline,curriculum", help=", ".join(VARIANTS))
  parser.add_argument("--minutes", type=float, default=6.0)
  parser.add_argument("--iterations", type=int, default=300, help="schedule length")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--out", type=Path, default=HERE / "results" / "curriculum")
  parser.add_argument("--one", metavar="TASK/VARIANT", help=argparse.SUPPRESS)  # a child
  args = parser.parse_args(argv)

  if args.one:
    print(json.dumps(run_one(*args.one.split("/"), args)))
    return 0
  results_path = args.out / "results.json"
  results = json.loads(results_path.read_text()) if results_path.exists() else {}
  for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
      key = f"{task}/{variant}/seed{args.seed}"
      if key in results:  # finished stages are kept
        continue
      child = [sys.executable, __file__, "--one", f"{task}/{variant}", "--minutes",
               str(args.minutes), "--iterations", str(args.iterations), "--seed", str(args.seed),
               "--out", str(args.out)] + [f"--set={item}" for item in args.set]
      done = subprocess.run(child, check=True, capture_output=True, text=True)
      results[key] = json.loads(done.stdout.strip().splitlines()[-1])
      print(key, json.dumps(results[key]), flush=True)
      args.out.mkdir(parents=True, exist_ok=True)
      results_path.write_text(json.dumps(results, indent=2) + "\n")
  for key, result in results.items():  # runs recorded before the breakdown existed
    task, variant, seed = key.split("/")
    if task in SIZE_OF and "success_by_size" not in result:
      result["success_by_size"] = success_by_size(args.out / task / f"{variant}-{seed}" / "run")
      print(key, "success_by_size", json.dumps(result["success_by_size"]), flush=True)
  results_path.write_text(json.dumps(results, indent=2) + "\n")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
