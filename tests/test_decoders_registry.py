"""Methods by name, at a budget: measured, a budget b costs b forward tokens per answer token and
only the methods that use a verifier hand completions to the reward; evaluation's search fits its
budget, has no noise and equals greedy at budget 1."""

import numpy as np
import pytest

from decoders_reference import NO_EOS, T, VOCAB, digit_sum_reward, first_token_reward, run
from tokenzero import decoders
from tokenzero.config import SearchConfig
from tokenzero.methods import VERIFIER_METHODS


@pytest.mark.parametrize("method, budget, per_token", [
    # Where it can, a decoder that test_decoders_base runs too: compiled programs are shared.
    ("greedy", 64, 1), ("best_of_n", 4, 4), ("best_of_n_value", 4, 4), ("majority", 4, 4),
    ("beam", 3, 3), ("beam_value", 3, 3), ("mcts", 4, 4), ("mcts_value", 4, 4),
])
def test_a_budget_is_what_the_decoder_runs_per_token(decoder_model, method, budget, per_token):
  """Without EOS every row is live to the end of its T tokens, so the count is exact."""
  out = run(decoder_model, decoders.make_decoder(method, budget), allowed=NO_EOS,
            reward_fn=digit_sum_reward)
  np.testing.assert_array_equal(out.completion_len, T)
  if method.startswith("mcts"):
    # b simulations per token; a simulation that reaches a known terminal (only near the end)
    # runs none, and playing a token the tree expanded runs none.
    assert np.all(out.forward_tokens <= per_token * T)
    assert np.all(out.forward_tokens >= per_token * (T - 1))
  else:
    np.testing.assert_array_equal(out.forward_tokens, per_token * T)
  if method == "best_of_n":  # its C samples
    np.testing.assert_array_equal(out.reward_calls, budget)
  elif method in VERIFIER_METHODS:  # search: at least the S answers its last step's tree ends
    assert np.all(out.reward_calls >= budget - 1)
  else:
    np.testing.assert_array_equal(out.reward_calls, 0)


@pytest.mark.parametrize("method, algorithm", [("mcts", "gumbel"), ("mcts_puct", "puct"),
                                               ("mcts_value", "gumbel")])
def test_search_methods_spend_their_budget_on_simulations(method, algorithm):
  """One tree per answer: b simulations; a fresh tree per token: b - 1 and the played token."""
  decoder = decoders.make_decoder(method, 8)
  assert decoder.search.num_simulations == 8 and decoder.search.algorithm == algorithm
  fresh = decoders.MethodOptions(search=SearchConfig(reuse_tree=False))
  assert decoders.make_decoder(method, 8, fresh).search.num_simulations == 7


SEARCHES = ["mcts", "mcts_puct", "mcts_value"]


@pytest.mark.parametrize("method", SEARCHES)
@pytest.mark.parametrize("budget", [1, 2, 4, 64])
def test_evaluation_search_fits_its_budget_and_has_no_noise(method, budget):
  run_search = SearchConfig(max_num_considered_actions=16, gumbel_scale=1.0,
                            dirichlet_fraction=0.25)
  search = decoders.make_decoder(method, budget, decoders.MethodOptions(search=run_search)).search
  assert 1 <= search.max_num_considered_actions <= max(1, search.num_simulations)
  assert search.gumbel_scale == 0 and search.dirichlet_fraction == 0
  noisy = decoders.make_decoder(
      method, budget, decoders.MethodOptions(search=run_search, search_noise=True)).search
  assert noisy.gumbel_scale == 1.0 and noisy.dirichlet_fraction == 0.25


def test_at_budget_one_search_and_beams_are_greedy(decoder_model):
  """No simulations, one beam: every method plays the likeliest token, whatever the seed; the
  reward (which pays another first token) is never consulted."""
  greedy = run(decoder_model, decoders.Greedy())
  reward = first_token_reward((greedy.completion[:, 0] + 1) % VOCAB)
  for method in ["beam", "beam_value"] + SEARCHES:
    for seed in range(3):
      out = run(decoder_model, decoders.make_decoder(method, 1), reward_fn=reward, seed=seed)
      np.testing.assert_array_equal(out.completion, greedy.completion, err_msg=method)
      np.testing.assert_array_equal(out.completion_len, greedy.completion_len, err_msg=method)


@pytest.mark.parametrize("method", ["mcts", "mcts_puct"])
def test_evaluation_search_answers_the_same_for_every_seed(decoder_model, method):
  """Without noise an answer does not depend on the seed; with --search-noise it does (and
  mctx would sample PUCT's action: TreeSearch plays the most visited)."""
  def answers(search_noise):
    options = decoders.MethodOptions(search_noise=search_noise)
    decoder = decoders.make_decoder(method, 4, options)
    return {run(decoder_model, decoder, reward_fn=digit_sum_reward, seed=seed).completion.tobytes()
            for seed in range(4)}

  assert len(answers(False)) == 1
  assert len(answers(True)) > 1
