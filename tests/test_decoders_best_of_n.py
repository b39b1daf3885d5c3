"""Best-of-n and majority vote pick the right one of the samples they draw."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders_reference import (EARLY, EOS, NO_EOS, PROMPT, PROMPT_LEN, T, digit_sum_reward,
                                next_outputs, prompt_of, run)
from tokenzero import decoders
from tokenzero.decoders import best_of_n


def _sample_n(decoder_model, allowed, n):
  """The n samples that BestOfN(n) and MajorityVote(n) draw with key 0."""
  params, config = decoder_model
  return jax.jit(best_of_n.sample_n, static_argnames=(
      "config", "max_new_tokens", "eos_id", "sampler", "n"))(
          params, jnp.asarray(PROMPT), jnp.asarray(PROMPT_LEN), jax.random.key(0),
          jnp.asarray(allowed), config=config, max_new_tokens=T, eos_id=EOS,
          sampler=decoders.Sample(), n=n)


@pytest.fixture(scope="module")
def samples(decoder_model):
  """The n samples that BestOfN(n) and MajorityVote(n) draw with key 0 (EOS forbidden)."""
  n = 4
  rollout = _sample_n(decoder_model, NO_EOS, n)
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


@pytest.mark.parametrize("decoder, scores", [
    (decoders.BestOfN(4), True), (decoders.BestOfN(4, score="value"), False),
    (decoders.MajorityVote(4), False)], ids=["best_of_n", "best_of_n_value", "majority"])
def test_n_samples_cost_their_own_tokens_and_the_reward_sees_each_once(decoder_model, decoder,
                                                                       scores):
  """EOS allowed, so the C samples differ in length: the forwards are the samples' own tokens,
  and best-of-n by reward hands the reward C completions per prompt (as many as the reward
  itself sees); the others never call it."""
  lengths = np.asarray(_sample_n(decoder_model, EARLY, 4).episode.num_generated).reshape(-1, 4)
  assert len(np.unique(lengths)) > 1  # the samples do end at different steps
  seen = []

  def counted_reward(prompt, prompt_len, completion, completion_len):
    jax.debug.callback(lambda rows: seen.append(rows.shape[0]), completion_len)
    return digit_sum_reward(prompt, prompt_len, completion, completion_len)

  out = run(decoder_model, decoder, allowed=EARLY, reward_fn=counted_reward)
  jax.effects_barrier()
  np.testing.assert_array_equal(out.forward_tokens, lengths.sum(1))
  np.testing.assert_array_equal(out.reward_calls, 4 if scores else 0)
  assert sum(seen) == out.reward_calls.sum()
