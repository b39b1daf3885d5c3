"""Batched decoding state: a prompt's KV cache plus the tokens decoded so far.

`start` prefills prompts once; `step` appends one token per row (one forward, then `append`).
`append` alone takes a forward that was run elsewhere (value-guided beam runs several sibling
tokens in one call and keeps some). Search, self-play, evaluation and every decoder build on
these, so the cache lives outside any search tree.
Dimension letters: B batch, P prompt slots, T answer budget, L = P + T cache slots, V vocab,
Y layers, Hkv KV heads, E head width.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from tokenzero import model as model_lib
from tokenzero.config import ModelConfig


class Episode(NamedTuple):
  cache: model_lib.KVCache  # length [B] = prompt_len + num_generated
  tokens: jax.Array  # [B, L] prompt then generated tokens, PAD after
  prompt: jax.Array  # [B, P]
  prompt_len: jax.Array  # [B]
  completion: jax.Array  # [B, T] generated tokens, PAD after
  num_generated: jax.Array  # [B] tokens generated so far (EOS included)
  logits: jax.Array  # [B, V] next-token logits at the current end
  value: jax.Array  # [B] value of the current state
  done: jax.Array  # [B] bool: EOS emitted or budget used

  @property
  def max_new_tokens(self) -> int:
    return self.completion.shape[1]


def start(params, config: ModelConfig, prompt: jax.Array, prompt_len: jax.Array,
          max_new_tokens: int, pad_id: int = 0) -> Episode:
  """Prefills right-padded prompts [B, P] (lengths [B]) for an answer of `max_new_tokens`."""
  batch, prompt_slots = prompt.shape
  cache_size = prompt_slots + max_new_tokens
  if cache_size > config.context:
    raise ValueError(f"prompt ({prompt_slots}) + answer ({max_new_tokens}) tokens exceed the "
                     f"model's context ({config.context})")
  out, cache = model_lib.prefill(params, config, prompt, prompt_len, cache_size)
  tokens = jnp.pad(prompt, [(0, 0), (0, max_new_tokens)], constant_values=pad_id)
  return Episode(
      cache=cache,
      tokens=tokens,
      prompt=prompt,
      prompt_len=prompt_len,
      completion=jnp.full((batch, max_new_tokens), pad_id, prompt.dtype),
      num_generated=jnp.zeros((batch,), jnp.int32),
      logits=out.logits,
      value=out.value,
      done=jnp.zeros((batch,), bool),
  )


def step(params, config: ModelConfig, episode: Episode, token: jax.Array,
         eos_id: int) -> Episode:
  """Appends `token` [B] to every row that is not done; finished rows stay as they are."""
  # Finished rows still run the (batched) forward; `append` drops what it computed for them.
  out, (k, v) = model_lib.extend(params, config, token, episode.cache.length,
                                 [episode.cache.as_source()])
  return append(episode, token, out.logits, out.value, k, v, eos_id)


def append(episode: Episode, token: jax.Array, logits: jax.Array, value: jax.Array,
           k: jax.Array, v: jax.Array, eos_id: int) -> Episode:
  """`step` with the forward already run: token [B], the forward's logits [B, V] and value [B]
  after it, and the token's own k, v [Y, B, Hkv, E]. Finished rows stay as they are."""
  live = ~episode.done
  cache = episode.cache
  # A finished row's index points at no slot, so its cache is not written at all.
  slot = jnp.where(live, cache.length, -1)
  cache = model_lib.KVCache(model_lib.write_slot(cache.k, k, slot, axis=2),
                            model_lib.write_slot(cache.v, v, slot, axis=2),
                            cache.length + live.astype(jnp.int32))
  token = jnp.where(live, token, 0).astype(episode.tokens.dtype)
  write = lambda buf, idx: jnp.where(
      live[:, None] & (jnp.arange(buf.shape[1])[None, :] == idx[:, None]), token[:, None], buf)
  num_generated = episode.num_generated + live.astype(jnp.int32)
  return Episode(
      cache=cache,
      tokens=write(episode.tokens, episode.cache.length),
      prompt=episode.prompt,
      prompt_len=episode.prompt_len,
      completion=write(episode.completion, episode.num_generated),
      num_generated=num_generated,
      logits=jnp.where(live[:, None], logits, episode.logits),
      value=jnp.where(live, value, episode.value),
      done=episode.done | (live & ((token == eos_id)
                                   | (num_generated >= episode.max_new_tokens))),
  )


def mask_logits(logits: jax.Array, allowed: jax.Array) -> jax.Array:
  """Tokens that may never be generated (PAD, SEP, ...) get -inf. allowed [V] bool."""
  return jnp.where(allowed, logits, -jnp.inf)
