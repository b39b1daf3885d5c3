"""Next-token rules and the rollout that plays one to the end of every row.

A *sampler* is a tiny frozen dataclass with one method, `get_next_tokens(logits [B, V], rng) ->
[B]` (`Greedy`; `Sample` with temperature, top-k and top-p). `generate` runs one in a jitted
`lax.scan` over the answer budget. Samplers are decoders too: one sampled answer per prompt,
one forward token per generated token.
Dimension letters: B batch, P prompt slots, T answer budget, V vocab.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from tokenzero import episode as episode_lib
from tokenzero.config import ModelConfig
from tokenzero.decoders.base import Decoded
from tokenzero.episode import Episode


def _ranks(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Descending order [B, V] of the logits and each token's rank in it [B, V] (0 = likeliest)."""
  order = jnp.argsort(-logits, axis=-1, stable=True)
  return order, jnp.argsort(order, axis=-1)


def top_k_logits(logits: jax.Array, k: int) -> jax.Array:
  """Keeps exactly the `k` likeliest tokens of `logits` [B, V] (ties go to the lower id)."""
  _, rank = _ranks(logits)
  return jnp.where(rank < k, logits, -jnp.inf)


def top_p_logits(logits: jax.Array, top_p: float) -> jax.Array:
  """Keeps the nucleus: the smallest set of likeliest tokens whose probability is >= `top_p`."""
  order, rank = _ranks(logits)
  probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
  # Mass strictly before each token: a token is kept while the set before it is still short.
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  keep = jnp.take_along_axis(mass_before < top_p, rank, axis=-1)
  return jnp.where(keep, logits, -jnp.inf)


class Rollout(NamedTuple):
  episode: Episode  # the final state
  logprobs: jax.Array  # [B, T] log-probability of each generated token, 0 after the end
  decision_value: jax.Array  # [B, T] value of the state each token was chosen in
  forward_tokens: jax.Array  # [B] int32 forwards run for the row while it was live


def rollout(params, config: ModelConfig, state: Episode, rng, allowed, sampler,
            eos_id: int) -> Rollout:
  """Decodes every row of `state` to its end with `sampler`; `allowed` [V] bool."""
  def body(carry, step_key):
    state, spent = carry
    logits = episode_lib.mask_logits(state.logits, allowed)
    token = sampler.get_next_tokens(logits, step_key).astype(jnp.int32)
    logprob = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], axis=1)[:, 0]
    live = ~state.done
    value = state.value
    # The step's forward runs for every row; a finished row's result is dropped, unbilled.
    state = episode_lib.step(params, config, state, token, eos_id)
    return (state, spent + live), (jnp.where(live, logprob, 0.0), value)

  spent = jnp.zeros(state.num_generated.shape, jnp.int32)
  (state, spent), (logprobs, values) = jax.lax.scan(
      body, (state, spent), jax.random.split(rng, state.max_new_tokens))
  return Rollout(state, logprobs.T, values.T, spent)


class _SamplerDecoder:
  """A sampler used as a decoder: one sampled answer, one forward token per generated token."""

  @property
  def forward_tokens_per_token(self) -> int:
    return 1

  def decode(self, params, prompt, prompt_len, rng, allowed, *, config, max_new_tokens, eos_id,
             reward_fn=None) -> Decoded:
    del reward_fn  # the answer never looks at the reward.
    state = episode_lib.start(params, config, prompt, prompt_len, max_new_tokens)
    final = rollout(params, config, state, rng, allowed, self, eos_id)
    return Decoded(final.episode.completion, final.episode.num_generated,
                   final.logprobs.sum(-1), final.forward_tokens,
                   jnp.zeros_like(final.forward_tokens))


@dataclasses.dataclass(frozen=True)
class Greedy(_SamplerDecoder):
  def get_next_tokens(self, logits, rng):
    del rng
    return jnp.argmax(logits, axis=-1)


@dataclasses.dataclass(frozen=True)
class Sample(_SamplerDecoder):
  """Ancestral sampling: temperature (0 means greedy), then top-k (0: off), then top-p (1: off),
  in that order, as in transformers."""
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0

  def get_next_tokens(self, logits, rng):
    if self.temperature <= 0:
      return jnp.argmax(logits, axis=-1)
    logits = logits / self.temperature
    if self.top_k > 0:
      logits = top_k_logits(logits, self.top_k)
    if self.top_p < 1.0:
      logits = top_p_logits(logits, self.top_p)
    return jax.random.categorical(rng, logits, axis=-1)


class Generation(NamedTuple):
  completion: jax.Array  # [B, T] generated tokens, PAD after the end
  completion_len: jax.Array  # [B] tokens generated, EOS included
  logprobs: jax.Array  # [B, T] log-probability of each generated token under the model
  value: jax.Array  # [B] value head at the last state (0 after EOS is not special-cased)


@functools.partial(jax.jit, static_argnames=("config", "sampler", "max_new_tokens", "eos_id"))
def generate(params, prompt, prompt_len, rng, allowed, *, config: ModelConfig, sampler,
             max_new_tokens: int, eos_id: int) -> Generation:
  """Decodes right-padded prompts [B, P] with `sampler`; forbidden tokens are never picked."""
  state = episode_lib.start(params, config, prompt, prompt_len, max_new_tokens)
  final = rollout(params, config, state, rng, allowed, sampler, eos_id)
  return Generation(final.episode.completion, final.episode.num_generated, final.logprobs,
                    final.episode.value)
