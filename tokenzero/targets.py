"""The learner's targets, from what self-play recorded: which policy and which value to distil.

Value targets. With one reward at the end and no discount, the plain target of every step is the
episode's return. It is unbiased but as noisy as one sampled answer: early steps, where many
answers are still possible, get the outcome of the one that happened. The TD(lambda) target
mixes in the search's backed-up value of the next state (an average over the tree's answers):

    G_t = (1 - lambda) * v_{t+1} + lambda * G_{t+1},   G past the last step = the return,

where v_{t+1} is the search value recorded at step t+1 (the return when step t was the last).
lambda=1 is the return; lambda=0 is one-step bootstrapping from the search.

Exploration. A step whose action was a uniform random candidate (`selfplay.random_action_prob`)
played a move the policy would not: the return after it says little about the state before it.
With `cut_explored`, such a step's target is the search's value of its own state (its
estimate under the policy, before the random move), and the recursion carries that value, not
the random move's outcome, to the earlier steps.

Dimension letters: B batch, T answer steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def lambda_returns(reward: jax.Array, search_value: jax.Array, step_mask: jax.Array,
                   explored: jax.Array, *, td_lambda: float | jax.Array,
                   cut_explored: bool) -> jax.Array:
  """TD(lambda) value targets [B, T] (see the module doc). `reward` [B]; `search_value`,
  `step_mask` (a decision was taken), `explored` [B, T]. Steps past a row's end get its
  return (the learner masks them out)."""
  reward = reward.astype(jnp.float32)
  next_live = jnp.concatenate([step_mask[:, 1:], jnp.zeros_like(step_mask[:, :1])], axis=1)
  next_value = jnp.concatenate([search_value[:, 1:], jnp.zeros_like(search_value[:, :1])],
                               axis=1).astype(jnp.float32)
  boot = jnp.where(next_live, next_value, reward[:, None])  # [B, T] value of the next state

  def back(later, step):  # later: G_{t+1} [B]
    boot_t, live_t, value_t, explored_t = step
    target = (1.0 - td_lambda) * boot_t + td_lambda * later
    if cut_explored:
      target = jnp.where(explored_t, value_t, target)
    target = jnp.where(live_t, target, reward)  # past the end: the return
    return target, target

  steps = (boot.T, step_mask.T, search_value.astype(jnp.float32).T, explored.T)
  _, targets = jax.lax.scan(back, reward, steps, reverse=True)
  return targets.T


def lambda_returns_reference(reward, search_value, step_mask, explored, *, td_lambda,
                             cut_explored) -> np.ndarray:
  """The same targets by a plain loop over rows and steps, for the tests."""
  reward, search_value = np.asarray(reward, np.float64), np.asarray(search_value, np.float64)
  step_mask, explored = np.asarray(step_mask, bool), np.asarray(explored, bool)
  rows, steps = step_mask.shape
  out = np.empty((rows, steps))
  for b in range(rows):
    later = reward[b]
    for t in reversed(range(steps)):
      if not step_mask[b, t]:
        out[b, t] = later = reward[b]
        continue
      boot = search_value[b, t + 1] if t + 1 < steps and step_mask[b, t + 1] else reward[b]
      target = (1 - td_lambda) * boot + td_lambda * later
      if cut_explored and explored[b, t]:
        target = search_value[b, t]
      out[b, t] = later = target
  return out
