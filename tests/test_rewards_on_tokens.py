"""Every reward form as a `TokenReward` on tokens and on text, step rewards added to the outcome,
and bad rewards stopped with a clear error (tokenzero/rewards/on_tokens.py)."""

import jax.numpy as jnp
import numpy as np
import pytest

import tokenzero
from tokenzero import rewards
from tokenzero.rewards import RewardError

from reward_samples import (COMPLETIONS, PROMPTS, T, TOKENIZER, batched_length, count_a,
                            jax_step_a, reversed_prompt, run_token_reward, same_length, step_a,
                            string_on_c)


@pytest.mark.parametrize("fn,expected", [
    (reversed_prompt, [1.0, 0.0, 0.0]),
    (batched_length, [0.5, 0.25, 0.75]),
    (count_a, [1.0, 0.0, 2.0]),
    (same_length, [1.0, 0.0, 0.0]),
    (step_a, [1.0, 0.0, 2.0]),
    (jax_step_a, [1.0, 0.0, 2.0]),
], ids=lambda x: getattr(x, "__name__", ""))
def test_each_reward_form_on_tokens(fn, expected):
  reward = rewards.as_reward(fn)
  assert reward.form == {"reversed_prompt": "text", "batched_length": "batched",
                         "count_a": "jax", "same_length": "jax", "step_a": "step",
                         "jax_step_a": "jax_step"}[fn.__name__]
  np.testing.assert_allclose(run_token_reward(rewards.token_reward(fn, TOKENIZER)), expected)
  np.testing.assert_allclose(
      rewards.score_texts(fn, TOKENIZER, PROMPTS, COMPLETIONS, max_new_tokens=T), expected)


def test_step_rewards_add_to_the_outcome():
  outcome = rewards.token_reward(reversed_prompt, TOKENIZER)
  step = rewards.token_reward(jax_step_a, TOKENIZER)
  np.testing.assert_allclose(run_token_reward(rewards.add_rewards(outcome, step, step_weight=0.5)),
                             [1.5, 0.0, 1.0])
  assert rewards.add_rewards(outcome, None) is outcome


# --- bad rewards -----------------------------------------------------------------------------


def raises_on_c(prompt, completion):
  if completion == "c":
    raise KeyError("no score for c")
  return 1.0


def nan_on_c(prompt, completion):
  return float("nan") if completion == "c" else 1.0


def inf_on_c(prompt, completion):
  return float("inf") if completion == "c" else 1.0


def none_on_c(prompt, completion):
  return None if completion == "c" else 1.0


@tokenzero.batched_reward
def batched_raises_on_c(prompts, completions):
  return [raises_on_c(p, c) for p, c in zip(prompts, completions)]


@tokenzero.batched_reward
def batched_short(prompts, completions):
  return [1.0] * (len(completions) - 1)


@tokenzero.batched_reward
def batched_none(prompts, completions):
  return None


@tokenzero.batched_reward
def batched_nan_on_c(prompts, completions):
  return np.array([nan_on_c(p, c) for p, c in zip(prompts, completions)])


@tokenzero.jax_reward
def jax_nan_on_c(tokens, lengths):
  del lengths
  return jnp.where(tokens[:, 0] == TOKENIZER.encode("c")[0], jnp.nan, 1.0)


ON_C = ["prompt 'abc' and completion 'c'"]


@pytest.mark.parametrize("fn,fragments", [
    (raises_on_c, ["raised KeyError: 'no score for c'"] + ON_C),
    (nan_on_c, ["returned nan"] + ON_C + ["must return a finite float"]),
    (inf_on_c, ["returned inf"] + ON_C),
    (none_on_c, ["returned None (a NoneType)"] + ON_C),
    (string_on_c, ["returned 'high' (a str)"] + ON_C),
    (batched_raises_on_c, ["raised KeyError: 'no score for c'"] + ON_C),
    (batched_short, ["returned 2 values for 3 completions", "(the first: prompt 'ab' and "
                     "completion 'ba')", "one float per completion"]),
    (batched_none, ["returned None for a batch of 3 completions"]),
    (batched_nan_on_c, ["returned nan"] + ON_C),
    (jax_nan_on_c, ["returned nan"] + ON_C),
], ids=lambda x: getattr(x, "__name__", ""))
def test_bad_reward_stops_with_a_clear_error(fn, fragments):
  with pytest.raises(RewardError) as info:
    run_token_reward(rewards.token_reward(fn, TOKENIZER))
  message = str(info.value)
  for fragment in [f"reward '{fn.__name__}'"] + fragments:
    assert fragment in message, message
  assert info.value.reward_name == fn.__name__
  assert rewards.pending() is None  # raised once, then cleared
  # The plain call names the same input, with no jit in between.
  with pytest.raises(RewardError, match=f"reward '{fn.__name__}'"):
    rewards.score_texts(fn, TOKENIZER, PROMPTS, COMPLETIONS, max_new_tokens=T)


def test_bad_jax_reward_shape_fails_at_trace_time():
  @tokenzero.jax_reward
  def wrong_shape(tokens, lengths):
    return tokens.astype(jnp.float32)

  with pytest.raises(RewardError, match=r"'wrong_shape' returned shape \(3, 4\) for a batch of 3"):
    run_token_reward(rewards.token_reward(wrong_shape, TOKENIZER))
