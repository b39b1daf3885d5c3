"""Methods by name, at a budget: measured, a budget b costs b forward tokens per answer token,
and only the methods that use a verifier hand completions to the reward."""

import numpy as np
import pytest

from decoders_reference import NO_EOS, T, digit_sum_reward, run
from tokenzero import decoders
from tokenzero.methods import VERIFIER_METHODS


@pytest.mark.parametrize("method, budget, per_token", [
    # Where it can, a decoder that test_decoders_base runs too: compiled programs are shared.
    ("greedy", 64, 1), ("best_of_n", 4, 4), ("best_of_n_value", 4, 4), ("majority", 4, 4),
    ("beam", 3, 3), ("beam_value", 3, 3), ("mcts", 4, 4),
])
def test_a_budget_is_what_the_decoder_runs_per_token(decoder_model, method, budget, per_token):
  """Without EOS every row is live to the end of its T tokens, so the count is exact."""
  out = run(decoder_model, decoders.make_decoder(method, budget), allowed=NO_EOS,
            reward_fn=digit_sum_reward)
  np.testing.assert_array_equal(out.completion_len, T)
  np.testing.assert_array_equal(out.forward_tokens, per_token * T)
  if method == "best_of_n":  # its C samples
    np.testing.assert_array_equal(out.reward_calls, budget)
  elif method in VERIFIER_METHODS:  # search: at least the S answers its last step's tree ends
    assert np.all(out.reward_calls >= budget - 1)
  else:
    np.testing.assert_array_equal(out.reward_calls, 0)


@pytest.mark.parametrize("method, algorithm", [("mcts", "gumbel"), ("mcts_puct", "puct")])
def test_search_methods_spend_all_but_one_forward_on_simulations(method, algorithm):
  decoder = decoders.make_decoder(method, 8)
  assert decoder.search.num_simulations == 7 and decoder.search.algorithm == algorithm
