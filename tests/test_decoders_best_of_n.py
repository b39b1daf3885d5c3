"""Best-of-n and majority vote pick the right one of the samples they draw."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders_reference import (EOS, NO_EOS, PROMPT, PROMPT_LEN, T, digit_sum_reward,
                                next_outputs, prompt_of, run)
from tokenzero import decoders
from tokenzero.decoders import best_of_n


@pytest.fixture(scope="module")
def samples(decoder_model):
  """The n samples that BestOfN(n) and MajorityVote(n) draw with key 0 (EOS forbidden)."""
  params, config = decoder_model
  n = 4
  rollout = jax.jit(best_of_n.sample_n, static_argnames=(
      "config", "max_new_tokens", "eos_id", "sampler", "n"))(
          params, jnp.asarray(PROMPT), jnp.asarray(PROMPT_LEN), jax.random.key(0),
          jnp.asarray(NO_EOS), config=config, max_new_tokens=T, eos_id=EOS,
          sampler=decoders.Sample(), n=n)
  completion = np.asarray(rollout.episode.completion).reshape(len(PROMPT), n, T)
  reward = np.asarray(digit_sum_reward(None, None, rollout.episode.completion,
                                       rollout.episode.num_generated)).reshape(-1, n)
  loglik = np.asarray(rollout.logprobs.sum(-1)).reshape(-1, n)
  return n, completion, reward, loglik


def test_best_of_n_keeps_the_best_sample_by_reward(decoder_model, samples):
  n, completion, reward, _ = samples
  out = run(decoder_model, decoders.BestOfN(n), allowed=NO_EOS, reward_fn=digit_sum_reward)
  for row in range(len(PROMPT)):
    assert reward[row].max() > reward[row].min()  # the test means something
    np.testing.assert_array_equal(out.completion[row], completion[row, reward[row].argmax()])
    np.testing.assert_allclose(out.score[row], reward[row].max())


def test_best_of_n_by_value_keeps_the_best_last_decision_value(decoder_model, samples):
  n, completion, _, _ = samples
  out = run(decoder_model, decoders.BestOfN(n, score="value"), allowed=NO_EOS)
  for row in range(len(PROMPT)):
    values = [next_outputs(decoder_model, prompt_of(row) + list(map(int, c[:-1])))[1]
              for c in completion[row]]
    np.testing.assert_array_equal(out.completion[row], completion[row, int(np.argmax(values))])
    np.testing.assert_allclose(out.score[row], max(values), rtol=1e-4, atol=1e-5)


def test_majority_vote_returns_the_most_common_answer(decoder_model, samples):
  n, completion, _, loglik = samples
  out = run(decoder_model, decoders.MajorityVote(n), allowed=NO_EOS)
  for row in range(len(PROMPT)):
    answers = [tuple(c) for c in completion[row]]
    votes = [answers.count(a) for a in answers]
    tied = [i for i in range(n) if votes[i] == max(votes)]
    want = max(tied, key=lambda i: loglik[row, i])
    assert tuple(out.completion[row]) == answers[want]
    np.testing.assert_allclose(out.score[row], max(votes) / n)
  # All samples greedy: one answer, all votes.
  greedy_votes = decoders.MajorityVote(n, decoders.Sample(temperature=0.0))
  same = run(decoder_model, greedy_votes, allowed=NO_EOS)
  np.testing.assert_array_equal(same.score, 1.0)
  np.testing.assert_array_equal(same.completion, run(decoder_model, decoders.Greedy(),
                                                     allowed=NO_EOS).completion)
