"""Decoding methods by name, at a budget: what `tokenzero eval` sweeps and `tokenzero decode` runs.

A budget b is b forward token-evaluations per generated token, so best-of-b, beam-b and tree
search with b-1 simulations meet on equal terms. Methods whose cost is fixed at one forward per
token (greedy and the samplers) ignore the budget.
"""

from __future__ import annotations

import dataclasses
import math

from tokenzero.config import SearchConfig
from tokenzero.decoders.base import Decoder
from tokenzero.decoders.beam import Beam
from tokenzero.decoders.best_of_n import BestOfN, MajorityVote
from tokenzero.decoders.sampling import Greedy, Sample
from tokenzero.decoders.tree import TreeSearch
from tokenzero.decoders.value_beam import ValueBeam

# Fixed cost: one forward per generated token, whatever the budget.
FIXED_COST_METHODS = ("greedy", "sample", "top_k", "top_p")
BUDGETED_METHODS = ("best_of_n", "best_of_n_value", "majority", "beam", "beam_value", "mcts",
                    "mcts_puct")
METHODS = FIXED_COST_METHODS + BUDGETED_METHODS


@dataclasses.dataclass(frozen=True)
class MethodOptions:
  """Knobs shared by the methods of a sweep (budgets set the rest)."""
  temperature: float = 1.0  # sample, best_of_n*, majority
  top_k: int = 5  # top_k
  top_p: float = 0.9  # top_p
  length_penalty: float = 1.0  # beam
  search: SearchConfig = SearchConfig()  # mcts, mcts_puct: all but algorithm/num_simulations


def make_decoder(method: str, budget: int, options: MethodOptions = MethodOptions()) -> Decoder:
  """The decoder that spends `budget` forward tokens per generated token with `method`."""
  if budget < 1:
    raise ValueError(f"budget must be >= 1, got {budget}")
  sampler = Sample(options.temperature)
  if method == "greedy":
    return Greedy()
  if method == "sample":
    return sampler
  if method == "top_k":
    return Sample(options.temperature, top_k=options.top_k)
  if method == "top_p":
    return Sample(options.temperature, top_p=options.top_p)
  if method == "best_of_n":
    return BestOfN(budget, sampler, score="reward")
  if method == "best_of_n_value":
    return BestOfN(budget, sampler, score="value")
  if method == "majority":
    return MajorityVote(budget, sampler)
  if method == "beam":
    return Beam(budget, length_penalty=options.length_penalty)
  if method == "beam_value":
    # C beams x G expansions = budget: as square as the budget allows.
    width = math.isqrt(budget)
    return ValueBeam(width, budget // width)
  if method in ("mcts", "mcts_puct"):
    algorithm = "gumbel" if method == "mcts" else "puct"
    search = dataclasses.replace(options.search, algorithm=algorithm,
                                 num_simulations=budget - 1)
    return TreeSearch(search)
  raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


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
