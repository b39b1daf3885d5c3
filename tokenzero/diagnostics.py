"""Learning diagnostics of one iteration's self-play: does what the search found reach the policy?

Each function takes a `selfplay.Trajectory` (device or host arrays) and averages over the live
steps (`step_mask`), the steps the learner trains on; `selfplay_diagnostics` is the metrics row's
part. With no live step a mean is None (JSON null), never NaN.

- `value_error`: RMSE of the network's root value against the episode's return, the learner's
  value target (the final reward, undiscounted: `learner.loss_fn`). `search_value_error`: the
  same for the value the search backed up to the root. `return_std`: the same for the best
  constant value (the returns' spread over live steps), the scale to read both against.
- `target_entropy` / `prior_entropy`: entropy (nats) of the search policy (the policy target)
  and of the network's prior over the same K candidates. `root_kl`: KL(search policy || prior)
  at the root, how far the target is from what the network already plays: near 0, the policy
  loss has nothing left to teach, whatever the search found. `greedy_agreement`: fraction of
  decisions where the network's most likely candidate is the search policy's most weighted one
  (where greedy decoding would play what the search recommends).
- `terminal_reached`: fraction of decisions whose tree held a complete answer (a reward seen);
  `terminal_on_pick`: one that starts with the search's pick (that action's Q holds a reward).
- `explore_fraction`: played a uniform random candidate; `offpolicy_fraction`: played a slot
  other than the search's own pick (exploration or temperature sampling).

Dimension letters: B batch, T answer steps, K candidates.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _live(traj) -> np.ndarray:
  return np.asarray(traj.step_mask, bool)  # [B, T]


def _mean(values, mask) -> float | None:
  values = np.asarray(values, np.float64)
  return float(values[mask].mean()) if mask.any() else None


def entropy(probs) -> np.ndarray:
  """Entropy (nats) over the last axis; zero-probability slots add nothing. [..., K] -> [...]"""
  probs = np.asarray(probs, np.float64)
  logs = np.log(np.where(probs > 0, probs, 1.0))
  return -np.sum(probs * logs, axis=-1)


def kl_divergence(p, q) -> np.ndarray:
  """KL(p || q) (nats) over the last axis, summed where p > 0. [..., K] -> [...]"""
  p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
  tiny = np.finfo(np.float64).tiny  # q rounds to 0 where the network gives a slot ~no mass
  ratio = np.where(p > 0, p, 1.0) / np.maximum(q, tiny)
  return np.sum(np.where(p > 0, p * np.log(ratio), 0.0), axis=-1)


def value_error(traj, value) -> float | None:
  """RMSE of `value` [B, T] against the episode's return [B], over live steps."""
  live = _live(traj)
  err = (np.asarray(value, np.float64) - np.asarray(traj.reward, np.float64)[:, None]) ** 2
  mse = _mean(err, live)
  return None if mse is None else float(np.sqrt(mse))


def return_std(traj) -> float | None:
  """Spread of the episode's return over live steps: `value_error` of the best constant."""
  live = _live(traj)
  returns = np.broadcast_to(np.asarray(traj.reward, np.float64)[:, None], live.shape)
  mean = _mean(returns, live)
  return None if mean is None else float(np.sqrt(_mean((returns - mean) ** 2, live)))


def greedy_agreement(traj) -> np.ndarray:
  """[B, T] bool: the prior's top candidate is the search policy's top candidate."""
  return (np.argmax(np.asarray(traj.root_prior), axis=-1) ==
          np.argmax(np.asarray(traj.policy_weights), axis=-1))


def kept_fraction(traj) -> float:
  """Mean fraction of the search tree kept for the next step, over decisions followed by one."""
  live = _live(traj)
  handed_on = live[:, :-1] & live[:, 1:]
  return float(np.asarray(traj.tree_kept)[:, :-1][handed_on].mean()) if handed_on.any() else 0.0


def selfplay_diagnostics(traj) -> dict[str, Any]:
  """The metrics row's diagnostics of one batch of self-play episodes."""
  live = _live(traj)
  return {
      "terminal_reached": _mean(traj.terminal_reached, live),
      "terminal_on_pick": _mean(traj.terminal_on_pick, live),
      "value_error": value_error(traj, traj.root_value),
      "search_value_error": value_error(traj, traj.search_value),
      "return_std": return_std(traj),
      "target_entropy": _mean(entropy(traj.policy_weights), live),
      "prior_entropy": _mean(entropy(traj.root_prior), live),
      "root_kl": _mean(kl_divergence(traj.policy_weights, traj.root_prior), live),
      "greedy_agreement": _mean(greedy_agreement(traj), live),
      "explore_fraction": _mean(traj.explored, live),
      "offpolicy_fraction": _mean(traj.off_policy, live),
  }


def reward_gap(row: dict[str, Any]) -> float | None:
  """Self-play reward (with search, on training prompts) minus greedy reward (no search, on the
  held-out prompts, after this iteration's updates); None on a row without both."""
  if row.get("selfplay_reward") is None or row.get("eval_greedy_reward") is None:
    return None
  return row["selfplay_reward"] - row["eval_greedy_reward"]
