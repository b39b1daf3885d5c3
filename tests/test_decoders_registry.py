"""Methods by name: a budget is forward tokens per generated token; names are checked."""

import pytest

from tokenzero import decoders


@pytest.mark.parametrize("method, budget, per_token", [
    ("best_of_n", 16, 16), ("majority", 8, 8), ("beam", 4, 4), ("beam_value", 16, 16),
    ("beam_value", 8, 8), ("mcts", 16, 16), ("mcts_puct", 4, 4), ("greedy", 64, 1),
])
def test_budget_means_forward_tokens_per_token(method, budget, per_token):
  decoder = decoders.make_decoder(method, budget)
  assert decoder.forward_tokens_per_token == per_token
  if method.startswith("mcts"):
    assert decoder.search.num_simulations == budget - 1
    assert decoder.search.algorithm == ("gumbel" if method == "mcts" else "puct")
