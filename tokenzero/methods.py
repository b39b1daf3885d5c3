"""The names of the decoding methods and the parsing of `--methods` / `--budgets`.

Plain Python, no JAX: the command line lists and checks them before anything heavy is imported.
`tokenzero.decoders.make_decoder` turns a name and a budget into a decoder.
"""

from __future__ import annotations

# Fixed cost: one forward per generated token, whatever the budget.
FIXED_COST_METHODS = ("greedy", "sample", "top_k", "top_p")
BUDGETED_METHODS = ("best_of_n", "best_of_n_value", "majority", "beam", "beam_value", "mcts",
                    "mcts_puct", "mcts_value")
# They call the reward (a verifier) while decoding: best-of-n ranks by it, search scores the
# answers its tree finishes with it. The others see the network alone.
VERIFIER_METHODS = ("best_of_n", "mcts", "mcts_puct")
# What `tokenzero eval` and experiments/all_tasks.py sweep by default: the verifier-free methods
# (the network alone), then those that call the task's reward.
SWEEP_METHODS = ("greedy", "sample", "majority", "beam", "best_of_n_value", "mcts_value",
                 "best_of_n", "mcts", "mcts_puct")
METHODS = FIXED_COST_METHODS + BUDGETED_METHODS


def parse_methods(text: str) -> list[str]:
  """`"greedy,beam,mcts"` -> names, each checked."""
  names = [m.strip() for m in text.split(",") if m.strip()]
  unknown = [m for m in names if m not in METHODS]
  if unknown or not names:
    raise ValueError(f"unknown method(s) {unknown or text!r}; known: {', '.join(METHODS)}")
  return names


def parse_budgets(text: str) -> list[int]:
  """`"1,4,16"` -> sorted distinct budgets, each >= 1."""
  try:
    budgets = sorted({int(b) for b in text.split(",") if b.strip()})
  except ValueError:
    raise ValueError(f"budgets must be integers separated by commas, got {text!r}") from None
  if not budgets or budgets[0] < 1:
    raise ValueError(f"budgets must be integers >= 1, got {text!r}")
  return budgets
