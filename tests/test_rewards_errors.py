"""The error slot: a recorded error is raised once on the caller's side, and `reward_errors`
turns an XLA runtime error back into it (tokenzero/rewards/errors.py)."""

import jax
import jax.numpy as jnp
import pytest

from tokenzero import rewards
from tokenzero.rewards import RewardError
from tokenzero.rewards.errors import describe_pair, record


def test_the_first_recorded_error_is_raised_once():
  first, second = RewardError("first"), RewardError("second")
  rewards.clear_pending()
  record(object(), first)
  record(object(), second)
  assert rewards.pending() is first
  with pytest.raises(RewardError, match="first"):
    rewards.raise_pending()
  assert rewards.pending() is None
  rewards.raise_pending()  # nothing left: no error


def test_describe_pair_cuts_long_texts():
  assert describe_pair("ab", None) == "prompt 'ab' and completion ?"
  assert describe_pair("x" * 200, "y").startswith("prompt '" + "x" * 120 + "...' and")


def test_reward_errors_replaces_the_xla_error():
  # Something below the reward (here, raising inside the callback) fails in XLA; the recorded
  # reward error is what the user sees.
  def host(x):
    record(object(), RewardError("reward 'r' returned nan for prompt 'p'"))
    raise RuntimeError("lost in XLA")

  f = jax.jit(lambda x: jax.pure_callback(host, jax.ShapeDtypeStruct((), jnp.float32), x))
  with pytest.raises(RewardError, match="reward 'r' returned nan for prompt 'p'"):
    with rewards.reward_errors():
      jax.block_until_ready(f(1.0))
