"""Tree search as a decoder: greedy without simulations, a planted token found with them, and a
planted value found by a search that never calls the reward."""

import dataclasses

import numpy as np

from decoders_reference import (ALLOWED, NO_EOS, PROMPT, PROMPT_LEN, VOCAB, digit_sum_reward,
                                first_token_reward, next_outputs, plant_values, prompt_of, run)
from tokenzero import decoders
from tokenzero.config import SearchConfig


def test_puct_search_without_simulations_is_greedy(decoder_model):
  search = SearchConfig(algorithm="puct", num_simulations=0, top_k=VOCAB)
  out = run(decoder_model, decoders.TreeSearch(search), reward_fn=first_token_reward([0, 0]))
  np.testing.assert_array_equal(out.completion, run(decoder_model, decoders.Greedy()).completion)
  np.testing.assert_array_equal(out.forward_tokens, out.completion_len)


def test_gumbel_search_finds_a_planted_token(decoder_model):
  """One-token answers; the reward is 1 only for each row's least likely allowed token."""
  params, config = decoder_model
  logits = np.stack([next_outputs(decoder_model, prompt_of(row))[0] for row in range(len(PROMPT))])
  target = np.argmin(np.where(ALLOWED, logits, np.inf), axis=1)
  search = SearchConfig(algorithm="gumbel", num_simulations=int(ALLOWED.sum()), top_k=VOCAB)
  out = run(decoder_model, decoders.TreeSearch(search), max_new_tokens=1,
            reward_fn=first_token_reward(target))
  np.testing.assert_array_equal(out.completion[:, 0], target)
  # S expansions; the played token's node is in the tree (reuse_tree), so playing runs none.
  np.testing.assert_array_equal(out.forward_tokens, search.num_simulations)
  greedy = run(decoder_model, decoders.Greedy(), max_new_tokens=1)
  assert np.all(greedy.completion[:, 0] != target)


def test_value_only_search_finds_a_planted_value_without_the_reward(decoder_model):
  """Two-token answers; the value head is planted to be 1 after each row's least likely first
  token and 0 after the others, and the reward pays the greedy first token. An answer is worth
  the value of the state its last token was chosen in, so the planted token must win, the
  reward never be called, and the score be the planted 1."""
  firsts = np.flatnonzero(NO_EOS)
  logits = np.stack([next_outputs(decoder_model, prompt_of(row))[0] for row in range(len(PROMPT))])
  target = np.argmin(np.where(NO_EOS, logits, np.inf), axis=1)
  greedy = np.argmax(np.where(NO_EOS, logits, -np.inf), axis=1)
  planted = plant_values(decoder_model, {
      tuple(prompt_of(row) + [int(t)]): float(t == target[row])
      for row in range(len(PROMPT)) for t in firsts})
  calls = []

  def counted_reward(*args):
    calls.append(args)  # tracing counts too: a reward in the jitted graph is called here once.
    return first_token_reward(greedy)(*args)

  decoder = decoders.make_decoder("mcts_value", 17)
  out = run(planted, decoder, allowed=NO_EOS, max_new_tokens=2, reward_fn=counted_reward)
  np.testing.assert_array_equal(out.completion[:, 0], target)
  np.testing.assert_allclose(out.score, 1.0, atol=1e-4)
  assert calls == []
  # The same search with the reward in the tree follows the reward instead.
  tree = decoders.make_decoder("mcts", 17)
  out = run(planted, tree, allowed=NO_EOS, max_new_tokens=2, reward_fn=counted_reward)
  np.testing.assert_array_equal(out.completion[:, 0], greedy)
  assert calls


def test_best_terminal_returns_the_best_answer_the_tree_verified(decoder_model):
  """Same searches (same keys); `best_terminal` returns the best complete answer any step's tree
  verified, scored by its reward, never worse than the answer the search played."""
  search = SearchConfig(num_simulations=6, top_k=4, gumbel_scale=1.0)
  played = run(decoder_model, decoders.TreeSearch(search), reward_fn=digit_sum_reward, seed=3)
  best = run(decoder_model, decoders.TreeSearch(dataclasses.replace(search, select="best_terminal")),
             reward_fn=digit_sum_reward, seed=3)
  reward = lambda out: np.asarray(digit_sum_reward(PROMPT, PROMPT_LEN, out.completion,
                                                   out.completion_len))
  np.testing.assert_allclose(best.score, reward(best), atol=1e-6)
  assert np.all(reward(best) >= reward(played) - 1e-6)
  np.testing.assert_array_equal(best.forward_tokens, played.forward_tokens)
  np.testing.assert_array_equal(best.reward_calls, played.reward_calls)
