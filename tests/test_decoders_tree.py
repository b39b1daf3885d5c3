"""Tree search as a decoder: greedy without simulations, a planted token found with them."""

import numpy as np

from decoders_reference import (ALLOWED, PROMPT, VOCAB, first_token_reward, next_outputs,
                                prompt_of, run)
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
  np.testing.assert_array_equal(out.forward_tokens, search.num_simulations + 1)
  greedy = run(decoder_model, decoders.Greedy(), max_new_tokens=1)
  assert np.all(greedy.completion[:, 0] != target)
