"""A short `tokenzero train --init-from` run on SmolLM2-135M-Instruct (the real-models issue's
required run): its peak memory and seconds per iteration.

It runs, as a subprocess under `/usr/bin/time -v` (peak RSS of the whole process):

  tokenzero train --init-from SmolLM2-135M-Instruct.Q4_1.gguf \\
      --prompts benchmarks/smollm/digit_prompts.txt \\
      --reward benchmarks/smollm/digit_reward.py:has_digit --iterations 2 ... (`OVERRIDES`)

12 prompts that ask for a number and a reward of 1 for an answer holding a digit, at a small
shape (4 prompts a batch, 2 simulations a token, 8-token answers, one optimizer step an
iteration) so that it finishes in minutes on a CPU. From the run's metrics.jsonl: each
iteration's wall-clock (`elapsed_s` differences: self-play, the optimizer step, the evaluation
on 4 held-out prompts that every iteration ends with, the checkpoint; iteration 1 also compiles
the programs and runs the evaluation before training), its `selfplay_s` and `train_s`, and
`compiles` (0 is expected after the first iteration). CPU seconds beside the wall-clock say how
much of the machine the run had (other jobs share its cores). Needs the GGUF (see
benchmarks/decode_vs_hf.py's docstring for how to fetch it).

  python benchmarks/smollm_train.py [--gguf PATH] [--note TEXT] [--json benchmarks/smollm_train.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SMOLLM = REPO / "benchmarks" / "smollm"
DEFAULT_GGUF = "/tmp/smolgguf/SmolLM2-135M-Instruct.Q4_1.gguf"
OVERRIDES = ("selfplay.batch_size=4", "search.num_simulations=2", "task.max_new_tokens=8",
             "optim.steps_per_iteration=1", "optim.warmup_steps=0", "optim.learning_rate=1e-5",
             "eval.num_prompts=4")


def command(gguf: str, out: Path) -> list[str]:
  return [sys.executable, "-m", "tokenzero.cli", "train", "--init-from", gguf,
          "--prompts", str(SMOLLM / "digit_prompts.txt"),
          "--reward", f"{SMOLLM / 'digit_reward.py'}:has_digit", "--out", str(out),
          "--iterations", "2", "--no-progress", *OVERRIDES]


def time_v_field(report: str, name: str) -> str:
  match = re.search(rf"^\s*{re.escape(name)}: (.*)$", report, re.MULTILINE)
  if match is None:
    raise RuntimeError(f"/usr/bin/time -v printed no {name!r}:\n{report}")
  return match.group(1).strip()


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--gguf", default=DEFAULT_GGUF)
  parser.add_argument("--note", default="", help="saved in the JSON (who else was running)")
  parser.add_argument("--json", default="benchmarks/smollm_train.json")
  args = parser.parse_args(argv)
  if not Path(args.gguf).exists():
    raise SystemExit(f"{args.gguf} is missing (see benchmarks/decode_vs_hf.py for how to fetch)")
  env = dict(os.environ, PYTHONPATH=str(REPO), TOKENZERO_COMPILATION_CACHE="off")
  with tempfile.TemporaryDirectory() as tmp:
    out, report = Path(tmp) / "run", Path(tmp) / "time.txt"
    cmd = command(args.gguf, out)
    load_start = os.getloadavg()
    start = time.monotonic()
    done = subprocess.run(["/usr/bin/time", "-v", "-o", str(report), *cmd], env=env, cwd=REPO,
                          capture_output=True, text=True)
    wall_s = time.monotonic() - start
    load_end = os.getloadavg()
    if done.returncode != 0:
      raise SystemExit(f"the run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    time_report = report.read_text()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  iterations = []
  for before, row in zip(rows, rows[1:]):
    iterations.append({"iteration": row["iteration"],
                       "seconds": round(row["elapsed_s"] - before["elapsed_s"], 3),
                       "selfplay_s": row["selfplay_s"], "train_s": row["train_s"],
                       "compiles": row["compiles"], "selfplay_reward": row["selfplay_reward"],
                       "loss_policy": row["loss_policy"]})
  peak_kib = int(time_v_field(time_report, "Maximum resident set size (kbytes)"))
  result = {
      "benchmark": "smollm_train",
      "command": " ".join(["tokenzero", *cmd[3:]]).replace(str(REPO) + "/", "").replace(
          str(out), "RUN_DIR"),
      "gguf": Path(args.gguf).name,
      "peak_rss_mib": round(peak_kib / 1024, 1),
      "wall_s": round(wall_s, 1),
      "cpu_user_s": float(time_v_field(time_report, "User time (seconds)")),
      "cpu_system_s": float(time_v_field(time_report, "System time (seconds)")),
      "iterations": iterations,
      "seconds_per_iteration_warm": iterations[-1]["seconds"],
      "load_average_start": load_start, "load_average_end": load_end,
      "cores": len(os.sched_getaffinity(0)), "note": args.note,
  }
  print(json.dumps({k: v for k, v in result.items() if k != "iterations"}, indent=1))
  for it in iterations:
    print(it)
  if args.json:
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.json}")
  return result


if __name__ == "__main__":
  main()
