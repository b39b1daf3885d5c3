"""A two-process `jax.distributed` run of `tokenzero train` on localhost: one run, one writer.

Two CPU processes (the coordinator on 127.0.0.1 at a free port, `JAX_NUM_PROCESSES=2`,
`JAX_PROCESS_ID` 0 and 1, each with `--devices-per-process` CPU devices) train the tiny config
of the tests into one run directory. Phases, each checked:

1. `train`: 2 iterations -> both processes exit 0; exactly one `metrics.jsonl` with one row per
   iteration 0..2 (no row twice), one `config.json`, one `checkpoints/` whose newest is 2 and
   whose topology record is 2 processes; the learning curve written.
2. `resume_on_one_process`: `--resume` on a single process -> exit 2 and the error names both
   topologies.
3. `resume_on_two_processes`: `--resume --iterations 3` on the same topology -> both exit 0,
   rows 0..3, checkpoint 3.
4. `sigterm_to_one`: a fresh run of many iterations; once iteration 1's row is written, SIGTERM
   to process 1 only -> both processes stop at the same boundary with exit 143, process 0's
   message names process 1, the newest checkpoint is the last row's iteration.
5. `eval`: `tokenzero eval` of the finished run on both processes (greedy, budget 1) -> both
   exit 0, one `eval.json`.

Each process plays its half of the global batch on its own device(s); the run's device mesh spans
both processes, so their rows make one global batch and the learner's gradient is reduced across
them: the parameters, and with them each process's evaluation summary, must be the same on both
(`same_result_on_both`). The script
measures no learning and no speed-up: it checks that the processes join, agree on when to stop,
and write one set of files and one set of checkpoints.

Prints and saves JSON (`--json`, default benchmarks/two_process.json): per phase its wall
time, exit codes and checks; the load average before and after (the machine is shared).

  python benchmarks/two_process.py [--devices-per-process 1] [--cache DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = ["task.params.length=3", "model.d_model=16", "model.num_heads=2", "model.num_layers=1",
        "selfplay.batch_size=8", "search.num_simulations=4", "eval.num_prompts=16",
        "optim.steps_per_iteration=2", "optim.decay_steps=50"]
TIMEOUT_S = 900  # one phase, both processes; a hang shows up as this.


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def environment(process_id: int | None, *, port: int, cache: Path, devices: int) -> dict:
  """A process's environment: process `process_id` of 2, or a process alone (None)."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  env.update(JAX_PLATFORMS="cpu", TOKENZERO_COMPILATION_CACHE=str(cache),
             PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  if process_id is not None:
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(process_id))
  return env


class Processes:
  """`tokenzero ARGS` in one process per environment, output in files."""

  def __init__(self, args: list[str], envs: list[dict], logs: Path, name: str):
    self.logs = [(logs / f"{name}.{i}.out", logs / f"{name}.{i}.err") for i in range(len(envs))]
    self.started = time.monotonic()
    self.procs = []
    for env, (out, err) in zip(envs, self.logs):
      with out.open("w") as stdout, err.open("w") as stderr:
        self.procs.append(subprocess.Popen([sys.executable, "-m", "tokenzero.cli", *args],
                                           cwd=REPO, env=env, stdout=stdout, stderr=stderr))

  def wait(self) -> list[int]:
    deadline = self.started + TIMEOUT_S
    codes = []
    for proc in self.procs:
      try:
        codes.append(proc.wait(max(1.0, deadline - time.monotonic())))
      except subprocess.TimeoutExpired:
        for other in self.procs:
          other.kill()
        codes.append(None)
    self.wall_s = round(time.monotonic() - self.started, 2)
    return codes

  def stderr(self, index: int) -> str:
    return self.logs[index][1].read_text()

  def stdout(self, index: int) -> str:
    return self.logs[index][0].read_text()

  def same_result(self) -> bool:
    """Both processes ended on the same evaluation summary (`done: {...}` less the clock)."""
    summaries = []
    for index in range(len(self.procs)):
      lines = [l for l in self.stdout(index).splitlines() if l.startswith("done: ")]
      summary = json.loads(lines[-1][len("done: "):]) if lines else None
      summaries.append(summary and {k: v for k, v in summary.items() if k != "elapsed_s"})
    return summaries[0] is not None and all(x == summaries[0] for x in summaries)

  def tails(self) -> list[str]:
    return [(out.read_text() + err.read_text())[-1500:] for out, err in self.logs]


def rows(run: Path) -> list[int]:
  path = run / "metrics.jsonl"
  return [json.loads(line)["iteration"] for line in path.read_text().splitlines()] \
      if path.exists() else []


def steps(run: Path) -> list[int]:
  directory = run / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) \
      if directory.is_dir() else []


def topology(run: Path, step: int) -> dict | None:
  """The checkpoint's topology item (orbax's JSON item: `<step>/topology/metadata`)."""
  for path in (run / "checkpoints" / str(step) / "topology").glob("*"):
    try:
      return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
      continue
  return None


def phase(name: str, procs: Processes, codes: list[int], checks: dict[str, bool]) -> dict:
  result = {"phase": name, "wall_s": procs.wall_s, "exit_codes": codes, "checks": checks,
            "ok": all(checks.values())}
  if not result["ok"]:
    result["output_tails"] = procs.tails()
  print(json.dumps({k: v for k, v in result.items() if k != "output_tails"}), flush=True)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--devices-per-process", type=int, default=1)
  parser.add_argument("--json", default=str(REPO / "benchmarks" / "two_process.json"))
  parser.add_argument("--cache", help="persistent XLA compilation cache of the processes "
                      "(default: a fresh one, so the first phase compiles everything)")
  args = parser.parse_args()
  work = Path(tempfile.mkdtemp(prefix="tokenzero-two-process-"))
  logs = work / "logs"
  cache = Path(args.cache) if args.cache else work / "xla-cache"
  logs.mkdir()
  load_before = os.getloadavg()

  def both() -> list[dict]:  # a fresh port per launch: the coordinator's is not reused at once.
    port = free_port()
    return [environment(i, port=port, cache=cache, devices=args.devices_per_process)
            for i in (0, 1)]

  alone = [environment(None, port=0, cache=cache, devices=args.devices_per_process)]
  results = []

  run = work / "run"
  train = ["train", "--no-progress", "--out", str(run)]
  procs = Processes(train + ["--iterations", "2"] + TINY, both(), logs, "train")
  codes = procs.wait()
  newest = steps(run)[-1] if steps(run) else None
  results.append(phase("train", procs, codes, {
      "both_exit_0": codes == [0, 0],
      "same_result_on_both": procs.same_result(),
      "one_row_per_iteration_0_to_2": rows(run) == [0, 1, 2],
      "one_config_json": (run / "config.json").is_file() and not list(run.glob("config.*.tmp")),
      "learning_curve_written": (run / "learning_curve.png").is_file(),
      "newest_checkpoint_2": newest == 2,
      "topology_recorded": newest is not None and topology(run, newest) == {
          "processes": 2, "devices": 2 * args.devices_per_process},
  }))

  procs = Processes(train + ["--resume", "--iterations", "3"], alone, logs, "resume_one")
  codes = procs.wait()
  message = procs.stderr(0)
  results.append(phase("resume_on_one_process", procs, codes, {
      "exit_2": codes == [2],
      "no_checkpoint_skipped": "skipping checkpoint" not in message,
      "names_both_topologies": "2 processes with" in message and "1 process with" in message,
      "rows_untouched": rows(run) == [0, 1, 2],
  }))

  procs = Processes(train + ["--resume", "--iterations", "3"], both(), logs, "resume_two")
  codes = procs.wait()
  results.append(phase("resume_on_two_processes", procs, codes, {
      "both_exit_0": codes == [0, 0],
      "both_resumed_from_2": all("resumed from iteration 2 " in procs.stdout(i) for i in (0, 1)),
      "same_result_on_both": procs.same_result(),
      "one_row_per_iteration_0_to_3": rows(run) == [0, 1, 2, 3],
      "newest_checkpoint_3": steps(run)[-1:] == [3],
  }))

  stopped = work / "stopped"
  procs = Processes(["train", "--no-progress", "--out", str(stopped), "--iterations", "1000"]
                    + TINY, both(), logs, "sigterm")
  while len(rows(stopped)) < 2 and all(p.poll() is None for p in procs.procs) \
      and time.monotonic() - procs.started < TIMEOUT_S:
    time.sleep(0.2)
  signalled_after = rows(stopped)[-1] if rows(stopped) else None
  procs.procs[1].send_signal(signal.SIGTERM)
  codes = procs.wait()
  last = rows(stopped)[-1] if rows(stopped) else None
  results.append(phase("sigterm_to_one", procs, codes, {
      "both_exit_143": codes == [128 + signal.SIGTERM] * 2,
      "process_0_names_process_1": "process 1 received SIGTERM" in procs.stderr(0),
      "process_1_received_it": "(received SIGTERM)" in procs.stderr(1),
      "stopped_soon": last is not None and signalled_after is not None
                      and last <= signalled_after + 2,
      "newest_checkpoint_is_last_row": steps(stopped)[-1:] == [last],
  }) | {"signalled_after_iteration": signalled_after, "stopped_after_iteration": last})

  eval_json = run / "eval.json"
  procs = Processes(["eval", str(run), "--methods", "greedy", "--budgets", "1",
                     "--num-prompts", "8", "--no-progress"], both(), logs, "eval")
  codes = procs.wait()
  results.append(phase("eval", procs, codes, {
      "both_exit_0": codes == [0, 0],
      "one_eval_json": eval_json.is_file() and not list(run.glob("eval.*.tmp")),
  }))

  report = {
      "what": "two jax.distributed CPU processes on 127.0.0.1 training one tiny run",
      "devices_per_process": args.devices_per_process,
      "compilation_cache": "given" if args.cache else "fresh",
      "all_ok": all(r["ok"] for r in results),
      "total_wall_s": round(sum(r["wall_s"] for r in results), 2),
      "phases": results,
      "config": TINY,
      "cpu_count": os.cpu_count(),
      "load_average_before": [round(x, 2) for x in load_before],
      "load_average_after": [round(x, 2) for x in os.getloadavg()],
      "python": platform.python_version(),
      "note": ("each process plays half of the global batch; the device mesh spans both "
               "processes, so the learner's gradient is reduced across them"),
  }
  Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
  print(json.dumps({k: report[k] for k in ("all_ok", "total_wall_s", "load_average_before",
                                           "load_average_after")}))
  print(f"wrote {args.json}; logs in {logs}")
  sys.exit(0 if report["all_ok"] else 1)


if __name__ == "__main__":
  main()
