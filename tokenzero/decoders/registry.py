"""Decoding methods by name, at a budget: what `tokenzero eval` sweeps and `tokenzero decode` runs.

A budget b is nominally b forward token-evaluations per generated token, so best-of-b, beam-b
and tree search with b simulations (b-1 without tree reuse) are set up on equal terms; what each
one runs is counted (`Decoded.forward_tokens`). Methods whose cost is fixed at one forward per
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
  search: SearchConfig = SearchConfig()  # mcts*: all but algorithm/num_simulations
  # mcts*: keep the root noise (Gumbel, or PUCT's Dirichlet) that self-play explores with. Off,
  # an answer is the search's best guess, not a draw.
  search_noise: bool = False


def evaluation_search(options: MethodOptions, *, algorithm: str,
                      num_simulations: int) -> SearchConfig:
  """The run's search settings fitted to answering at a budget: no more considered actions than
  simulations (mctx's Sequential Halving visits S of them once each either way; the setting
  says so), and no root noise unless `options.search_noise`."""
  search = options.search
  considered = max(1, min(search.max_num_considered_actions, num_simulations))
  noise = {} if options.search_noise else dict(gumbel_scale=0.0, dirichlet_fraction=0.0)
  return dataclasses.replace(search, algorithm=algorithm, num_simulations=num_simulations,
                             max_num_considered_actions=considered, **noise)


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
  if method in ("mcts", "mcts_puct", "mcts_value"):
    algorithm = "puct" if method == "mcts_puct" else "gumbel"
    # With one tree per answer the played token's forward already ran as a simulation (its
    # node's KV is taken), so all b forwards are simulations; a fresh tree per token runs the
    # played token's forward after b - 1.
    simulations = budget if options.search.reuse_tree else budget - 1
    return TreeSearch(evaluation_search(options, algorithm=algorithm, num_simulations=simulations),
                      reward="value" if method == "mcts_value" else "tree")
  raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
