"""Replay buffer: a ring of trajectories, uniform draws from what it holds, and reanalyze
equal to self-play's own search when the network has not changed."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenzero import prompts, replay, selfplay

from conftest import slow
from tokenzero.config import SearchConfig, SelfPlayConfig
from tokenzero.tokenizer import answer_mask

SEARCH = SearchConfig(num_simulations=4, reuse_tree=False)
PLAY = SelfPlayConfig(value_target="lambda", td_lambda=0.5)


@pytest.fixture(scope="module")
def played(tiny_params, tiny_config, sort_task):
  tok = sort_task.tokenizer
  batch = prompts.encode_batch(tok, sort_task.sample(np.random.default_rng(2), 4),
                               sort_task.prompt_len)
  allowed = jnp.asarray(answer_mask(tok, tok.vocab_size))
  kwargs = dict(config=tiny_config, search_config=SEARCH, selfplay_config=PLAY,
                reward_fn=sort_task.jax_reward(), eos_id=tok.eos_id)
  traj = selfplay.self_play(tiny_params, batch.tokens, batch.lengths, jax.random.key(5),
                            jnp.float32(1.0), allowed, max_new_tokens=sort_task.max_new_tokens,
                            **kwargs)
  return traj, allowed, kwargs


def test_the_ring_overwrites_the_oldest_rows(played):
  traj = played[0]
  buffer = replay.init(traj, capacity=6)
  buffer = replay.add(buffer, traj, jnp.int32(1))
  buffer = replay.add(buffer, traj._replace(reward=traj.reward + 10), jnp.int32(2))
  assert int(buffer.written) == 8
  # Slots 0-3 got iteration 1's rows, then 4, 5, 0, 1 iteration 2's.
  np.testing.assert_array_equal(np.asarray(buffer.iteration), [2, 2, 1, 1, 2, 2])
  reward = np.asarray(traj.reward)
  np.testing.assert_allclose(np.asarray(buffer.rows.reward),
                             [reward[2] + 10, reward[3] + 10, reward[2], reward[3],
                              reward[0] + 10, reward[1] + 10])
  np.testing.assert_array_equal(np.asarray(buffer.rows.tokens[2]), np.asarray(traj.tokens[2]))


def test_draws_come_from_the_filled_rows_only(played):
  traj = played[0]
  buffer = replay.add(replay.init(traj, capacity=64), traj, jnp.int32(3))
  rows, iterations = replay.sample(buffer, jax.random.key(0), num=32)
  assert np.all(np.asarray(iterations) == 3)
  stored = {tuple(t) for t in np.asarray(traj.tokens)}
  assert {tuple(t) for t in np.asarray(rows.tokens)} <= stored
  batch = replay.concat(traj, rows)
  assert batch.tokens.shape[0] == traj.tokens.shape[0] + 32


def test_reanalyze_with_the_same_network_redoes_self_plays_search(tiny_params, played):
  traj, allowed, kwargs = played
  again = replay.reanalyze(tiny_params, traj, jax.random.key(5), allowed, **kwargs)
  np.testing.assert_array_equal(np.asarray(again.tokens), np.asarray(traj.tokens))
  np.testing.assert_array_equal(np.asarray(again.policy_ids), np.asarray(traj.policy_ids))
  live = np.asarray(traj.step_mask)
  for field in ("policy_weights", "search_value", "root_value", "value_target"):
    np.testing.assert_allclose(np.asarray(getattr(again, field))[live],
                               np.asarray(getattr(traj, field))[live], rtol=1e-5, atol=1e-6,
                               err_msg=field)
  # Both count what they ran: the same searches, and one forward per answer token played.
  np.testing.assert_array_equal(np.asarray(again.forward_tokens), np.asarray(traj.forward_tokens))
  spent, length = np.asarray(traj.forward_tokens), np.asarray(traj.completion_len)
  assert np.all((spent > length) & (spent <= length * (SEARCH.num_simulations + 1)))


def test_reanalyze_with_new_params_changes_the_targets_not_the_answers(
    tiny_params, played):
  traj, allowed, kwargs = played
  other = jax.tree.map(lambda x: x * 1.5, tiny_params)
  again = replay.reanalyze(other, traj, jax.random.key(5), allowed, **kwargs)
  np.testing.assert_array_equal(np.asarray(again.completion), np.asarray(traj.completion))
  np.testing.assert_allclose(np.asarray(again.reward), np.asarray(traj.reward))
  live = np.asarray(traj.step_mask)
  assert not np.allclose(np.asarray(again.root_value)[live], np.asarray(traj.root_value)[live])



@slow  # a training run of its own (~30 s of compiling)
def test_a_run_with_replay_keeps_its_buffer_in_the_checkpoint(tmp_path):
  from test_loop import TINY  # its programs, from the shared compilation cache

  from tokenzero import checkpoint as ckpt_lib
  from tokenzero import config as config_lib
  from tokenzero import learner
  from tokenzero import loop as train_lib
  from tokenzero.run import load_run
  config = config_lib.resolve(overrides=TINY + [
      "iterations=2", "replay.capacity=16", "replay.sample_old=4"])
  rows = train_lib.train(config, tmp_path / "run", progress=False, log=lambda s: None)
  assert [r["replay_rows"] for r in rows[1:]] == [8, 16]
  assert rows[1]["replay_age"] == 0.0 and rows[2]["replay_age"] > 0  # drew iteration 1's rows
  assert rows[2]["compiles"] == 0  # one learner batch shape from the first iteration on
  setup, params = load_run(tmp_path / "run")  # eval and decode read a run with a buffer
  template = ckpt_lib.TrainState.create(params, learner.make_optimizer(config.optim, 1),
                                        jax.random.key(0), replay=replay.for_run(setup, params))
  checkpointer = ckpt_lib.Checkpointer(tmp_path / "run" / "checkpoints")
  state, _ = checkpointer.restore_latest(template)
  checkpointer.close()
  assert int(state.replay.written) == 16
  np.testing.assert_array_equal(np.sort(np.asarray(state.replay.iteration)), [1] * 8 + [2] * 8)
