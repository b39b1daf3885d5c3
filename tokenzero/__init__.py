"""tokenzero: AlphaZero-style search over token sequences, on JAX and mctx.

The reward plug-in API is exported here so that a reward file reads
`@tokenzero.batched_reward` / `@tokenzero.jax_reward`; everything else lives in its module.
"""

from tokenzero.rewards import (Reward, RewardError, batched_reward, check_reward, jax_reward,
                               jax_step_reward, load_reward, step_reward)

__all__ = [
    "Reward", "RewardError", "batched_reward", "check_reward", "jax_reward", "jax_step_reward",
    "load_reward", "step_reward",
]
