"""The learning diagnostics compute known values on a hand-made trajectory, and self-play's
action choice records where its slot came from."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenzero import diagnostics, selfplay
from tokenzero.config import SelfPlayConfig


def _trajectory(step_mask):
  """B=2 rows, T=3 steps, K=2 candidates. The last step of row 0 is dead (when `step_mask` says
  so) and holds values that would change every mean if it were counted."""
  t, f = True, False
  zeros = lambda *shape: np.zeros(shape, np.int32)  # the fields no diagnostic reads
  return selfplay.Trajectory(
      prompt=zeros(2, 4), prompt_len=zeros(2), tokens=zeros(2, 7), completion=zeros(2, 3),
      completion_len=zeros(2), policy_ids=zeros(2, 3, 2),
      step_mask=np.asarray(step_mask),
      reward=np.array([1.0, 0.0], np.float32),
      root_value=np.array([[0.5, 1.0, 9.0], [0.0, 0.5, 1.0]], np.float32),
      search_value=np.array([[1.0, 1.0, 9.0], [0.0, 0.0, 0.0]], np.float32),
      policy_weights=np.array([[[1, 0], [.5, .5], [0, 1]], [[.5, .5], [.5, .5], [.2, .8]]],
                              np.float32),
      root_prior=np.array([[[.8, .2], [.8, .2], [1, 0]], [[.8, .2]] * 3], np.float32),
      terminal_reached=np.array([[t, f, t], [f, f, t]]),
      terminal_on_pick=np.array([[f, f, t], [f, t, f]]),
      explored=np.array([[f, t, t], [f, f, f]]),
      off_policy=np.array([[f, t, t], [t, f, f]]),
      tree_kept=np.array([[0.5, 9.0, 9.0], [0.25, 0.75, 9.0]], np.float32))


LIVE = [[True, True, False], [True, True, True]]  # 5 live steps


def test_diagnostics_of_a_hand_made_trajectory():
  got = diagnostics.selfplay_diagnostics(_trajectory(LIVE))
  h_prior = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
  # KL(onehot || prior) = ln 1.25; KL(uniform || prior) = 0.5 ln(0.625 * 2.5) = ln 1.25 too;
  # KL([.2, .8] || [.8, .2]) = .2 ln .25 + .8 ln 4 = 1.2 ln 2.
  want = {
      "terminal_reached": 2 / 5,
      "terminal_on_pick": 1 / 5,
      "value_error": math.sqrt((0.25 + 0 + 0 + 0.25 + 1) / 5),
      "search_value_error": 0.0,
      "return_std": math.sqrt((2 * 0.6 ** 2 + 3 * 0.4 ** 2) / 5),  # mean return 0.4 per step
      "target_entropy": (3 * math.log(2) + h_prior) / 5,
      "prior_entropy": h_prior,
      "root_kl": (4 * math.log(1.25) + 1.2 * math.log(2)) / 5,
      "greedy_agreement": 4 / 5,  # ties go to the first slot, as the prior's top one
      "explore_fraction": 1 / 5,
      "offpolicy_fraction": 2 / 5,
  }
  assert got == pytest.approx(want, abs=1e-6)
  assert set(got) == set(want)
  # Only decisions followed by another hand a tree on: (0, 0), (1, 0), (1, 1).
  assert diagnostics.kept_fraction(_trajectory(LIVE)) == pytest.approx(0.5)


def test_diagnostics_without_a_live_step_are_none_not_nan():
  traj = _trajectory(np.zeros((2, 3), bool))
  assert all(value is None for value in diagnostics.selfplay_diagnostics(traj).values())
  assert diagnostics.kept_fraction(traj) == 0.0


def test_kl_is_zero_for_equal_policies_and_skips_empty_slots():
  p = np.array([[0.7, 0.3, 0.0]])
  np.testing.assert_allclose(diagnostics.kl_divergence(p, p), [0.0], atol=1e-12)
  np.testing.assert_allclose(diagnostics.entropy(np.eye(3)), np.zeros(3), atol=1e-12)
  # Mass the network gives (almost) nothing is a large, finite KL: no inf or NaN in a row.
  assert np.isfinite(diagnostics.kl_divergence([[0.0, 1.0]], [[1.0, 0.0]])).all()


def test_reward_gap_only_on_rows_with_an_evaluation():
  assert diagnostics.reward_gap({"selfplay_reward": 0.75, "eval_greedy_reward": 0.5}) == 0.25
  assert diagnostics.reward_gap({"selfplay_reward": 0.75}) is None
  assert diagnostics.reward_gap({"selfplay_reward": None, "eval_greedy_reward": 0.5}) is None


@pytest.mark.parametrize("selection,explore", [("search", 0.0), ("search", 1.0),
                                               ("sample", 0.0)])
def test_choose_slot_says_where_the_slot_came_from(selection, explore):
  rows = 256
  out = types.SimpleNamespace(  # the fields of a SearchOutput that choose_slot reads
      action=jnp.full((rows,), 2, jnp.int32),
      action_weights=jnp.tile(jnp.array([0.25, 0.25, 0.5, 0.0]), (rows, 1)),
      valid=jnp.tile(jnp.array([True, True, True, False]), (rows, 1)))
  choice = selfplay.choose_slot(out, jax.random.key(0), jnp.float32(1.0),
                                SelfPlayConfig(action_selection=selection,
                                               random_action_prob=explore))
  slot, explored = np.asarray(choice.slot), np.asarray(choice.explored)
  assert np.all(explored == (explore == 1.0))
  assert np.all(slot < 3)  # never the invalid slot
  if selection == "search" and explore == 0.0:
    assert np.all(slot == 2)
  else:  # uniform over 3 slots, or sampled at weights 1/4, 1/4, 1/2: not always the pick
    assert 0.2 < np.mean(slot != 2) < 0.85
