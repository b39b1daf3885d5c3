"""tokenzero: AlphaZero-style search over token sequences, on JAX and mctx.

The reward plug-in API is exported here so that a reward file reads
`@tokenzero.batched_reward` / `@tokenzero.jax_reward`; everything else lives in its module.

Dimension letters, one meaning each, in every shape comment and docstring of the package:

| letter | meaning | letter | meaning |
|---|---|---|---|
| B | batch (rows decoded together) | V | vocabulary |
| P | prompt slots | Y | layers |
| T | answer budget (new tokens) | H | attention heads |
| L | sequence slots, P + T (the context) | Hkv | key/value heads |
| S | search simulations | E | head width |
| N | tree nodes | M | model width |
| K | candidates per tree node | F | feed-forward width |
| D | search depth | C | samples or beams per prompt |
| G | expansions per beam (value beam) | A | answer tokens a vote compares |
"""

from tokenzero.rewards import (Reward, RewardError, batched_reward, check_reward, jax_reward,
                               jax_step_reward, load_reward, step_reward)

__all__ = [
    "Reward", "RewardError", "batched_reward", "check_reward", "jax_reward", "jax_step_reward",
    "load_reward", "step_reward",
]
