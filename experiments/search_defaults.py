"""Which search defaults `mcts` gets at evaluation: tree reuse on/off x `search.select`.

On the networks experiments/all_tasks.py trained (its `<task>/run` checkpoints: the weak one at
iteration 10 and the newest), 128 held-out prompts, budgets 4 and 16: mcts (and mcts_value)
with a fresh tree per token, with one tree per answer, and with one tree per answer returning
the best verified answer; best-of-n beside them. Prints one JSON line per cell and saves them.

  python experiments/search_defaults.py sort,addition
"""
import dataclasses
import json
import sys
from pathlib import Path

from tokenzero import harness
from tokenzero.decoders import MethodOptions
from tokenzero.run import load_run

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {"fresh+visits": dict(reuse_tree=False, select="visits"),
            "reuse+visits": dict(reuse_tree=True, select="visits"),
            "reuse+best": dict(reuse_tree=True, select="best_terminal")}


def main(tasks: str) -> list[dict]:
  out = []
  for task in tasks.split(","):
    for iteration in (10, None):  # the weak network, then the newest
      setup, params = load_run(RESULTS / task / "run", iteration)
      run = setup.config
      for name, search in VARIANTS.items():
        options = MethodOptions(search=dataclasses.replace(run.search, **search))
        methods = ["mcts", "best_of_n"] if name == "reuse+best" else ["mcts", "mcts_value"]
        rows = harness.sweep_task(
            params, run.model, setup.task, num_prompts=128, prompt_seed=run.seed,
            split=run.eval.split, max_new_tokens=setup.max_new_tokens,
            reward_fn=setup.reward_fn, allowed=setup.allowed, methods=methods, budgets=[4, 16],
            options=options, progress=False)
        for row in rows:
          line = dict(task=task, net="weak" if iteration else "trained", variant=name,
                      method=row.method, budget=row.budget, reward=round(row.mean_reward, 3),
                      se=round(row.stderr, 3), succ=round(row.success_rate, 3),
                      fwd_per_tok=round(row.forward_tokens_per_token, 2))
          print(json.dumps(line), flush=True)
          out.append(line)
  (RESULTS / "search_defaults.json").write_text(json.dumps(out, indent=1))
  return out


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "sort,addition")
