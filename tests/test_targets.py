"""Value targets: TD(lambda) over the search's values, and the cut at random moves, against a
plain loop; self-play records the chosen targets and the learner trains on them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenzero import learner, prompts, selfplay, targets
from tokenzero.config import SearchConfig, SelfPlayConfig
from tokenzero.tokenizer import answer_mask


def _random_steps(seed, rows=6, steps=5):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, steps + 1, rows)  # every row decides at least its first step
  mask = np.arange(steps)[None, :] < lengths[:, None]
  return (rng.uniform(size=rows).astype(np.float32),
          rng.uniform(size=(rows, steps)).astype(np.float32), mask,
          rng.uniform(size=(rows, steps)) < 0.3)


@pytest.mark.parametrize("td_lambda", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("cut_explored", [False, True])
def test_lambda_returns_equal_a_plain_loop(td_lambda, cut_explored):
  reward, value, mask, explored = _random_steps(int(td_lambda * 10) + cut_explored)
  fast = jax.jit(targets.lambda_returns, static_argnames="cut_explored")(
      reward, value, mask, explored, td_lambda=td_lambda, cut_explored=cut_explored)
  slow = targets.lambda_returns_reference(reward, value, mask, explored, td_lambda=td_lambda,
                                          cut_explored=cut_explored)
  np.testing.assert_allclose(np.asarray(fast), slow, rtol=1e-6, atol=1e-6)


def test_lambda_one_is_the_return_and_zero_the_next_search_value():
  reward, value, mask, explored = _random_steps(7)
  ones = targets.lambda_returns(reward, value, mask, explored, td_lambda=1.0, cut_explored=False)
  np.testing.assert_allclose(np.asarray(ones), np.broadcast_to(reward[:, None], mask.shape))
  zero = np.asarray(targets.lambda_returns(reward, value, mask, explored, td_lambda=0.0,
                                           cut_explored=False))
  last = mask.sum(1) - 1
  for b, end in enumerate(last):
    np.testing.assert_allclose(zero[b, :end], value[b, 1:end + 1], rtol=1e-6)
    assert zero[b, end] == pytest.approx(reward[b])  # the last decision sees the reward


def test_a_random_move_never_reaches_earlier_steps():
  reward = np.array([1.0], np.float32)
  value = np.array([[0.2, 0.4, 0.3, 0.9]], np.float32)
  mask = np.ones((1, 4), bool)
  explored = np.array([[False, False, True, False]])  # step 2 played a random candidate
  out = np.asarray(targets.lambda_returns(reward, value, mask, explored, td_lambda=1.0,
                                          cut_explored=True))
  # Step 2 keeps the search's own value of its state; steps 0 and 1 inherit it, not the return.
  np.testing.assert_allclose(out[0], [0.3, 0.3, 0.3, 1.0])


def test_self_play_records_visit_policies_and_lambda_targets(tiny_params, tiny_config,
                                                             sort_task):
  tok = sort_task.tokenizer
  batch = prompts.encode_batch(tok, sort_task.sample(np.random.default_rng(1), 8),
                               sort_task.prompt_len)
  config = SelfPlayConfig(policy_target="visits", value_target="lambda", td_lambda=0.5,
                          cut_explored=True, random_action_prob=0.3)
  traj = selfplay.self_play(
      tiny_params, batch.tokens, batch.lengths, jax.random.key(3), jnp.float32(1.0),
      jnp.asarray(answer_mask(tok, tok.vocab_size)), config=tiny_config,
      search_config=SearchConfig(num_simulations=6), selfplay_config=config,
      reward_fn=sort_task.jax_reward(), max_new_tokens=sort_task.max_new_tokens,
      eos_id=tok.eos_id)
  live = np.asarray(traj.step_mask)
  weights = np.asarray(traj.policy_weights)[live]
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  # Visit frequencies of a 6-simulation search (plus the visits a kept tree brings) are
  # multiples of 1/visits: not the smooth Gumbel improved policy.
  assert np.mean(np.any((weights > 0) & (weights < 1e-3), axis=-1)) == 0.0
  assert np.asarray(traj.explored)[live].any()
  expected = targets.lambda_returns_reference(
      traj.reward, traj.search_value, live, traj.explored, td_lambda=0.5, cut_explored=True)
  np.testing.assert_allclose(np.asarray(traj.value_target), expected, rtol=1e-5, atol=1e-6)
  # The learner trains on the recorded target: the value loss is its squared error.
  weights = learner.LossWeights(value=1.0)
  _, info = learner.loss_fn(tiny_params, traj, config=tiny_config, weights=weights)
  _, value = learner.step_outputs(tiny_params, tiny_config, traj)
  mse = np.sum((np.asarray(value) - expected) ** 2 * live) / live.sum()
  assert float(info.loss_value) == pytest.approx(mse, rel=1e-4)
  _, plain = learner.loss_fn(tiny_params, traj._replace(value_target=None), config=tiny_config,
                             weights=weights)
  assert float(plain.loss_value) != pytest.approx(float(info.loss_value), rel=1e-3)
