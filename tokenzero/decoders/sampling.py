"""Next-token rules and the rollout that plays one to the end of every row.

A *sampler* is a tiny frozen dataclass with one method, `get_next_tokens(logits [B, V], rng) ->
[B]` (`Greedy`; `Sample` with temperature, top-k and top-p). `generate` runs one in a jitted
`lax.scan` over the answer budget. Samplers are decoders too: one sampled answer per prompt,
one forward token per generated token. The vocabulary-wide work (the draw, top-k, the argmax,
a token's log-probability) is `tokenzero.vocab_ops`: exact, and cheap at V ~ 50k.
Dimension letters: B batch, P prompt slots, T answer budget, V vocab.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from tokenzero import episode as episode_lib
from tokenzero import vocab_ops
from tokenzero.config import ModelConfig
from tokenzero.decoders.base import Decoded
from tokenzero.episode import Episode


def _scatter_rows(index: jax.Array, values: jax.Array, vocab: int) -> jax.Array:
  """out[b, index[b, j]] = values[b, j] -> [B, V] (False elsewhere); index, values [B, K]."""
  rows = jnp.arange(index.shape[0])[:, None]
  return jnp.zeros((index.shape[0], vocab), values.dtype).at[rows, index].set(values)


def top_k_logits(logits: jax.Array, k: int) -> jax.Array:
  """Keeps exactly the `k` likeliest tokens of `logits` [B, V] (ties go to the lower id)."""
  if k >= logits.shape[-1]:
    return logits
  _, index = vocab_ops.top_k(logits, k)
  keep = _scatter_rows(index, jnp.ones(index.shape, bool), logits.shape[-1])
  return jnp.where(keep, logits, -jnp.inf)


def top_p_logits(logits: jax.Array, top_p: float) -> jax.Array:
  """Keeps the nucleus: the smallest set of likeliest tokens whose probability is >= `top_p`."""
  order = jnp.argsort(-logits, axis=-1, stable=True)  # ties: the lower id first
  probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
  # Mass strictly before each token: a token is kept while the set before it is still short.
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  keep = _scatter_rows(order, mass_before < top_p, logits.shape[-1])
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
    logprob = vocab_ops.log_prob(logits, token)
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
    return vocab_ops.argmax(logits)


DRAWS = ("inverse_cdf", "gumbel")


@dataclasses.dataclass(frozen=True)
class Sample(_SamplerDecoder):
  """Ancestral sampling: temperature (0 means greedy), then top-k (0: off), then top-p (1: off),
  in that order, as in transformers.

  `draw` says how a token is drawn from what is left: "inverse_cdf" (`vocab_ops.categorical`,
  two uniforms a row) or "gumbel" (`jax.random.categorical`, V Gumbels a row: the reference,
  several times slower at V ~ 50k). Same distribution, different random streams.
  """
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  draw: str = "inverse_cdf"

  def get_next_tokens(self, logits, rng):
    if self.draw not in DRAWS:
      raise ValueError(f"Sample.draw must be one of {DRAWS}, got {self.draw!r}")
    if self.temperature <= 0:
      return vocab_ops.argmax(logits)
    if self.temperature != 1.0:  # left alone at 1, so the draw shares the log-prob's exp pass
      logits = logits / self.temperature
    if self.top_k > 0:
      logits = top_k_logits(logits, self.top_k)
    if self.top_p < 1.0:
      logits = top_p_logits(logits, self.top_p)
    if self.draw == "gumbel":
      return jax.random.categorical(rng, logits, axis=-1)
    return vocab_ops.categorical(rng, logits)


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
