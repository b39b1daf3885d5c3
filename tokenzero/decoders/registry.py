"""Decoding methods by name, at a budget: what `tokenzero eval` sweeps and `tokenzero decode` runs.

A budget b is nominally b forward token-evaluations per generated token, so best-of-b, beam-b
and tree search with b-1 simulations are set up on equal terms; what each one runs is counted
(`Decoded.forward_tokens`). Methods whose cost is fixed at one forward per
token (greedy and the samplers) ignore the budget. The names themselves, and the parsing of
`--methods` and `--budgets`, are `tokenzero.methods` (no JAX: the command line checks them first).
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
from tokenzero.methods import METHODS

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
