"""Rewards as plug-ins: any Python or JAX function, checked, inside the jitted search.

- `plugin`: the markers a reward file uses (`batched_reward`, `jax_reward`, `step_reward`,
  `jax_step_reward`), `Reward`, `as_reward`, `load_reward`, and the `TokenReward` signature;
- `errors`: `RewardError` and the slot that carries it out of a host callback
  (`raise_pending`, `reward_errors`);
- `host`: Python rewards called on the host, every value checked (`host_token_reward`);
- `on_tokens`: any reward form -> a `TokenReward` (`token_reward`, `add_rewards`,
  `score_texts`, `encode_pairs`);
- `check`: the contract check users run, `tokenzero check-reward` (`check_reward`).

Rewards of a task (`task_token_reward`, `check_task_reward`) live in `tokenzero.tasks`: tasks
import rewards, never the reverse.

Dimension letters: B batch, P prompt slots, T answer budget.
"""

from tokenzero.rewards.check import RewardCheck, check_reward
from tokenzero.rewards.errors import (RewardError, clear_pending, pending, raise_pending,
                                      reward_errors)
from tokenzero.rewards.host import call_python, checked_batch, ended_rows, host_token_reward
from tokenzero.rewards.on_tokens import (add_rewards, encode_pairs, score_texts,
                                         token_reward)
from tokenzero.rewards.plugin import (Reward, TokenReward, as_reward, batched_reward, jax_reward,
                                      jax_step_reward, load_reward, step_reward)

__all__ = [
    "Reward", "RewardCheck", "RewardError", "TokenReward", "add_rewards", "as_reward",
    "batched_reward", "call_python", "check_reward", "checked_batch", "clear_pending",
    "encode_pairs", "ended_rows", "host_token_reward", "jax_reward", "jax_step_reward",
    "load_reward", "pending", "raise_pending", "reward_errors", "score_texts", "step_reward",
    "token_reward",
]
