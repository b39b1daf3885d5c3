"""tokenzero: AlphaZero-style search over token sequences, on JAX and mctx.

The names a user needs are here: `tokenzero.train(config, out_dir)`, `tokenzero.load_run(dir)`,
`tokenzero.decode(...)` with any decoder, and the reward plug-in API, so that a reward file reads
`@tokenzero.batched_reward` / `@tokenzero.jax_reward`. Each is imported on first use, so that
`import tokenzero` (and `tokenzero --help`) costs nothing until JAX is needed.

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
| G | sibling tokens per row (value-beam expansions) | A | answer tokens a vote compares |
"""

import importlib
from typing import Any

# name -> module that defines it.
_EXPORTS = {
    "RunConfig": "tokenzero.config",
    "resolve_config": "tokenzero.config",
    "build": "tokenzero.run",
    "load_run": "tokenzero.run",
    "train": "tokenzero.loop",
    "decode": "tokenzero.decoders",
    "load_policy": "tokenzero.inference",
    "complete": "tokenzero.inference",
    "Reward": "tokenzero.rewards",
    "RewardError": "tokenzero.rewards",
    "batched_reward": "tokenzero.rewards",
    "jax_reward": "tokenzero.rewards",
    "step_reward": "tokenzero.rewards",
    "jax_step_reward": "tokenzero.rewards",
    "load_reward": "tokenzero.rewards",
    "check_reward": "tokenzero.rewards",
}
_RENAMED = {"resolve_config": "resolve"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
  if name not in _EXPORTS:
    raise AttributeError(f"module 'tokenzero' has no attribute {name!r}")
  value = getattr(importlib.import_module(_EXPORTS[name]), _RENAMED.get(name, name))
  globals()[name] = value  # the next lookup is a plain attribute.
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(__all__))
