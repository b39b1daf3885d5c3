"""What every decoder shares: its result, its interface, the jitted `decode`, and row surgery.

A decoder turns prompts into one completion each. Every decoder is a frozen dataclass with
`decode(params, prompt, prompt_len, rng, allowed, *, config, max_new_tokens, eos_id, reward_fn)
-> Decoded` and a `forward_tokens_per_token` property; `decode` jits any of them.

Compute is counted in forward token-evaluations: one token run through the network against the
KV cache. `forward_tokens_per_token` is a decoder's nominal budget: a sampled answer costs one per
generated token; best-of-n and majority vote C, beam C, value-guided beam C*G, tree search S+1
with S simulations. What a decoder reports is measured instead: each one carries a counter
through its scan and adds the forwards it actually runs for live rows, useful or not (a search's
simulations below a terminal node ran, so they count; a batched forward over a row that is
finished, or over a beam slot that holds no beam, bills no one). `Decoded.reward_calls` counts
the completions handed to the reward function (a verifier), not the calls of the callback. The
prompt's prefill is the same for every decoder (done once, then shared) and is not counted.

Decoders that keep C candidates per prompt hold them as B*C episode rows, rows b*C ... b*C + C-1
for prompt b (`repeat_rows`), and reorder them with `take_rows`.
Dimension letters: B batch, P prompt slots, T answer budget, V vocab, C samples or beams per
prompt.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp

from tokenzero import model as model_lib
from tokenzero.config import ModelConfig
from tokenzero.episode import Episode
from tokenzero.rewards import TokenReward


class Decoded(NamedTuple):
  """One completion per prompt row, and what it cost."""
  completion: jax.Array  # [B, T] generated tokens, PAD after the end
  completion_len: jax.Array  # [B] tokens generated, EOS included
  score: jax.Array  # [B] what the decoder ranked its pick by (log-likelihood, value, reward...)
  forward_tokens: jax.Array  # [B] int32 forward token-evaluations run for the row
  reward_calls: jax.Array  # [B] int32 completions of the row handed to the reward (0: none)


class Decoder(Protocol):
  @property
  def forward_tokens_per_token(self) -> int:
    """The nominal budget; `Decoded.forward_tokens` is what was run."""

  def decode(self, params, prompt, prompt_len, rng, allowed, *, config: ModelConfig,
             max_new_tokens: int, eos_id: int, reward_fn: TokenReward | None) -> Decoded: ...


# Nothing is donated: the KV cache and the search tree live in the decoder's `lax.scan` inside
# this one program, whose loop buffers XLA reuses step to step; only the params (the caller's
# to keep) and the prompts cross the boundary.
@functools.partial(jax.jit, static_argnames=("decoder", "config", "max_new_tokens", "eos_id",
                                             "reward_fn"))
def decode(params, prompt, prompt_len, rng, allowed, *, decoder: Decoder, config: ModelConfig,
           max_new_tokens: int, eos_id: int, reward_fn: TokenReward | None = None) -> Decoded:
  """Any decoder on right-padded prompts [B, P] (lengths [B]); `allowed` [V] bool."""
  return decoder.decode(params, prompt, prompt_len, rng, allowed, config=config,
                        max_new_tokens=max_new_tokens, eos_id=eos_id, reward_fn=reward_fn)


def need_reward(reward_fn: TokenReward | None, who: str) -> None:
  if reward_fn is None:
    raise ValueError(f"{who} needs a reward function (reward_fn=...)")


# --- row surgery on episodes --------------------------------------------------------------------


def map_rows(fn, state: Episode) -> Episode:
  """Applies `fn(x, axis)` to every array of `state` along its batch axis."""
  cache = state.cache
  rest = jax.tree.map(lambda x: fn(x, 0), state._replace(cache=None))
  return rest._replace(cache=model_lib.KVCache(fn(cache.k, 1), fn(cache.v, 1),
                                               fn(cache.length, 0)))


def repeat_rows(state: Episode, count: int) -> Episode:
  """Row b becomes rows b*count ... b*count + count-1 (a prefill shared by C continuations)."""
  return map_rows(lambda x, axis: jnp.repeat(x, count, axis=axis), state)


def take_rows(state: Episode, rows: jax.Array) -> Episode:
  """The rows [R] of `state`, in that order (R rows out)."""
  return map_rows(lambda x, axis: jnp.take(x, rows, axis=axis), state)


def pick(x: jax.Array, index: jax.Array) -> jax.Array:
  """x [B, C, ...], index [B] -> x[b, index[b]] [B, ...]."""
  return jnp.take_along_axis(x, index.reshape((-1,) + (1,) * (x.ndim - 1)), axis=1)[:, 0]


# --- candidate pools (beam and value-guided beam) -----------------------------------------------


def merge_top(scores, extra_scores, values, extra_values, k: int):
  """Top-k by score of two pools [B, *] with matching value arrays [B, *, ...]
  -> (scores [B, k], the value arrays [B, k, ...])."""
  scores = jnp.concatenate([scores, extra_scores], axis=1)
  best_scores, idx = jax.lax.top_k(scores, k)
  out = []
  for a, b in zip(values, extra_values):
    pool = jnp.concatenate([a, b], axis=1)
    out.append(jnp.take_along_axis(pool, idx.reshape(idx.shape + (1,) * (pool.ndim - 2)), 1))
  return best_scores, out


def write_step(seqs: jax.Array, token: jax.Array, t) -> jax.Array:
  """seqs [B, C, T] with token [B, C] written at step t."""
  return jnp.where(jnp.arange(seqs.shape[-1]) == t, token[..., None], seqs)
