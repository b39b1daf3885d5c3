"""The contract check users run on their reward: good rewards pass with their timing, bad ones
fail saying why (tokenzero/rewards/check.py)."""

import pytest

import tokenzero
from tokenzero import rewards

from reward_samples import PROMPTS, T, batched_length, count_a, reversed_prompt, string_on_c


@pytest.mark.parametrize("fn", [reversed_prompt, batched_length, count_a])
def test_check_reward_passes_good_rewards(fn):
  result = rewards.check_reward(fn, PROMPTS, alphabet="abc", max_new_tokens=T,
                                num_completions=8)
  assert result.ok, result.verdict
  assert result.verdict.startswith(f"PASS: reward '{fn.__name__}'")
  assert "ms per call on a batch of 8" in result.verdict
  assert len(result.values) == 8 and result.seconds_per_call > 0


def test_check_reward_fails_bad_rewards(tmp_path):
  @tokenzero.batched_reward
  def depends_on_batch(prompts, completions):
    return [float(len(prompts))] * len(prompts)

  result = rewards.check_reward(depends_on_batch, PROMPTS, alphabet="abc", num_completions=6)
  assert not result.ok
  assert "not batch-consistent" in result.verdict and "one at a time" in result.verdict
  result = rewards.check_reward(string_on_c, ["ab"], alphabet="c", max_new_tokens=3,
                                num_completions=40)
  assert not result.ok and result.verdict.startswith("FAIL: reward 'string_on_c' returned 'high'")
  result = rewards.check_reward(f"{tmp_path}/missing.py:f", PROMPTS)
  assert not result.ok and "does not exist" in result.verdict
  result = rewards.check_reward(lambda p, c: 2.0, PROMPTS)
  assert result.ok and "values outside [0, 1]" in result.verdict
