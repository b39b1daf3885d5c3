"""Learner: policy targets and the KL-to-reference penalty."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenzero import learner, prompts, selfplay
from tokenzero.config import OptimConfig, SearchConfig, SelfPlayConfig
from tokenzero.tokenizer import answer_mask


@pytest.fixture(scope="module")
def trajectory(tiny_params, tiny_config, sort_task):
  texts = sort_task.sample(np.random.default_rng(0), 8)
  batch = prompts.encode_batch(sort_task.tokenizer, texts, sort_task.prompt_len)
  tok = sort_task.tokenizer
  return selfplay.self_play(
      tiny_params, batch.tokens, batch.lengths, jax.random.key(0), jnp.float32(1.0),
      jnp.asarray(answer_mask(tok, tok.vocab_size)), config=tiny_config,
      search_config=SearchConfig(num_simulations=4), selfplay_config=SelfPlayConfig(),
      reward_fn=sort_task.jax_reward(), max_new_tokens=sort_task.max_new_tokens,
      eos_id=tok.eos_id)


def test_policy_targets_sum_to_one_over_candidates(trajectory):
  weights = np.asarray(trajectory.policy_weights)
  live = np.asarray(trajectory.step_mask)
  np.testing.assert_allclose(weights[live].sum(-1), 1.0, atol=1e-5)
  assert live[:, 0].all()  # every episode decides its first token


def test_kl_to_reference_holds_the_policy_near_the_initial_network(
    tiny_params, tiny_config, trajectory):
  optimizer = learner.make_optimizer(OptimConfig(learning_rate=1e-2, warmup_steps=0), 100)
  final_kl = {}
  for kl_weight in (0.0, 5.0):
    reference = jax.tree.map(jnp.copy, tiny_params)
    params = jax.tree.map(jnp.copy, tiny_params)
    _, _, metrics = learner.train_steps(
        params, optimizer.init(params), trajectory, config=tiny_config, optimizer=optimizer,
        num_steps=20, weights=learner.LossWeights(value=1.0, kl=kl_weight), reference=reference)
    kl = np.asarray(metrics.loss_kl)
    assert kl[0] == pytest.approx(0.0, abs=1e-6)  # every run starts at the reference
    final_kl[kl_weight] = kl[-1]
  # Distilling the search policy moves away from the prior; the penalty holds it closer.
  assert final_kl[0.0] > 0.05
  assert final_kl[5.0] < 0.5 * final_kl[0.0]


def test_found_answers_are_verified_and_no_worse_than_the_played_ones(trajectory, sort_task):
  tok, t = sort_task.tokenizer, trajectory
  found, found_len = np.asarray(t.found), np.asarray(t.found_len)
  assert np.all(np.asarray(t.found_reward) >= np.asarray(t.reward))
  for row in range(found.shape[0]):  # the Python verifier, not the JAX reward the search used
    prompt = tok.decode(np.asarray(t.prompt[row, :int(t.prompt_len[row]) - 1]))
    answer = tok.decode(found[row, :found_len[row]])
    assert sort_task.score(prompt, answer) == pytest.approx(float(t.found_reward[row]), abs=1e-6)


def test_found_demos_are_the_prompt_then_the_found_answer_taught_from_min_reward(trajectory):
  t = trajectory
  cut = float(np.median(np.asarray(t.found_reward)))
  demos = learner.found_demos(t, cut)
  tokens, mask = np.asarray(demos.tokens), np.asarray(demos.target_mask)
  for row in range(tokens.shape[0]):
    start, length = int(t.prompt_len[row]), int(t.found_len[row])
    np.testing.assert_array_equal(tokens[row, :start], np.asarray(t.tokens[row, :start]))
    np.testing.assert_array_equal(tokens[row, start:start + length],
                                  np.asarray(t.found[row, :length]))
    taught = float(t.found_reward[row]) >= cut
    assert mask[row].sum() == (length if taught else 0)
    assert not taught or mask[row, start:start + length].all()
