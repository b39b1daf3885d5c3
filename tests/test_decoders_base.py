"""What every decoder shares: under the jitted `decode`, each counts what it runs."""

import numpy as np
import pytest

from decoders_reference import EARLY, EOS, NO_EOS, T, digit_sum_reward, first_token_reward, run
from tokenzero import decoders
from tokenzero.config import SearchConfig


# --- compute accounting -------------------------------------------------------------------------


@pytest.mark.parametrize("decoder, per_token, scored", [
    (decoders.Greedy(), 1, 0),
    (decoders.Sample(), 1, 0),
    (decoders.BestOfN(4), 4, 4),
    (decoders.MajorityVote(4), 4, 0),
    (decoders.Beam(3), 3, 0),
    (decoders.ValueBeam(1, 5), 5, 0),
], ids=lambda x: type(x).__name__ if not isinstance(x, int) else str(x))
def test_without_eos_a_decoder_runs_its_budget_per_token(decoder_model, decoder, per_token,
                                                         scored):
  """Without EOS every answer is T tokens and every row is live to the end: the count is the
  nominal budget per token, and the reward sees `scored` completions per prompt."""
  out = run(decoder_model, decoder, allowed=NO_EOS, reward_fn=digit_sum_reward)
  assert decoder.forward_tokens_per_token == per_token
  np.testing.assert_array_equal(out.completion_len, T)
  np.testing.assert_array_equal(out.forward_tokens, per_token * T)
  np.testing.assert_array_equal(out.reward_calls, scored)


def test_value_beam_bills_only_the_slots_that_hold_a_beam(decoder_model):
  """C=2 beams x G=3: the first step expands the one beam there is (its C-1 copies run but hold
  nothing), every later step both."""
  out = run(decoder_model, decoders.ValueBeam(2, 3), allowed=NO_EOS)
  np.testing.assert_array_equal(out.forward_tokens, 3 + 2 * 3 * (T - 1))


def test_tree_search_bills_its_simulations_and_its_steps_while_a_row_is_live(decoder_model):
  """A fresh tree per token: S simulations plus the forward that plays the search's pick, per
  answer token: row 1's reward pays EOS first, so its answer (and its bill) ends after one step;
  row 0 goes on. (With one tree per answer the pick's forward is its node's: see
  test_decoders_tree.)"""
  search = SearchConfig(num_simulations=3, gumbel_scale=0.0, reuse_tree=False)
  out = run(decoder_model, decoders.TreeSearch(search), allowed=EARLY,
            reward_fn=first_token_reward([7, EOS]))
  np.testing.assert_array_equal(out.completion[:, 0], [7, EOS])
  assert out.completion_len[0] > 1 and out.completion_len[1] == 1
  np.testing.assert_array_equal(out.forward_tokens, (search.num_simulations + 1)
                                * out.completion_len)
  assert out.reward_calls[0] >= search.num_simulations  # the last step's, at least
  assert 1 <= out.reward_calls[1] <= search.num_simulations
