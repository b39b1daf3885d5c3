"""Which search defaults `mcts` gets at evaluation: tree reuse, `search.select`, and more.

On the networks experiments/all_tasks.py trained (its `<task>/run` checkpoints: the weak one at
iteration 10 and the newest), 128 held-out prompts, budgets 4 and 16: `mcts` (and `mcts_value`,
or best-of-n beside "reuse+best") with each variant of `VARIANTS` (a fresh tree per token; one
tree per answer; `best_terminal`; terminal reselection; an evaluation `value_scale` of 0.1;
adaptive allocation). Prints one JSON line per cell and saves them.

  python experiments/search_defaults.py [TASKS [VARIANTS [BUDGETS [OUT.json]]]]
  python experiments/search_defaults.py sort,addition reuse+best,reuse+best+adaptive 4,16
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
            "reuse+best": dict(reuse_tree=True, select="best_terminal"),
            "reuse+best+reselect4": dict(reuse_tree=True, select="best_terminal",
                                         terminal_reselect=4),
            "reuse+best+vs0.1": dict(reuse_tree=True, select="best_terminal", value_scale=0.1),
            "reuse+best+reselect4+vs0.1": dict(reuse_tree=True, select="best_terminal",
                                               terminal_reselect=4, value_scale=0.1),
            "reuse+best+adaptive": dict(reuse_tree=True, select="best_terminal",
                                        allocation="adaptive")}


def main(tasks: str, variants: str = ",".join(VARIANTS), budgets: str = "4,16") -> list[dict]:
  out = []
  for task in tasks.split(","):
    for iteration in (10, None):  # the weak network, then the newest
      setup, params = load_run(RESULTS / task / "run", iteration)
      run = setup.config
      for name in variants.split(","):
        search = VARIANTS[name]
        options = MethodOptions(search=dataclasses.replace(run.search, **search))
        methods = {"fresh+visits": ["mcts", "mcts_value"], "reuse+visits": ["mcts", "mcts_value"],
                   "reuse+best": ["mcts", "best_of_n"]}.get(name, ["mcts", "mcts_value"])
        rows = harness.sweep_task(
            params, run.model, setup.task, num_prompts=128, prompt_seed=run.seed,
            split=run.eval.split, max_new_tokens=setup.max_new_tokens,
            reward_fn=setup.reward_fn, allowed=setup.allowed, methods=methods,
            budgets=[int(b) for b in budgets.split(",")],
            options=options, progress=False)
        for row in rows:
          line = dict(task=task, net="weak" if iteration else "trained", variant=name,
                      method=row.method, budget=row.budget, reward=round(row.mean_reward, 3),
                      se=round(row.stderr, 3), succ=round(row.success_rate, 3),
                      fwd_per_tok=round(row.forward_tokens_per_token, 2))
          print(json.dumps(line), flush=True)
          out.append(line)
  return out


if __name__ == "__main__":
  # python experiments/search_defaults.py TASKS [VARIANTS [BUDGETS [OUT.json]]]
  args = sys.argv[1:] + [None] * 4
  lines = main(args[0] or "sort,addition", args[1] or ",".join(VARIANTS), args[2] or "4,16")
  (Path(args[3]) if args[3] else RESULTS / "search_defaults.json").write_text(
      json.dumps(lines, indent=1))
