"""`ValueBeam`: beam search ranked by the value head instead of the likelihood.
Dimension letters: B batch, T answer budget, V vocab, C beams per prompt, G expansions per beam,
Y layers, Hkv KV heads, E head width.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from tokenzero import episode as episode_lib
from tokenzero import model as model_lib
from tokenzero import vocab_ops
from tokenzero.decoders.base import Decoded, merge_top, repeat_rows, take_rows, write_step
from tokenzero.episode import Episode


class _ValueBeams(NamedTuple):
  episode: Episode  # B*C rows: the running beams
  running: jax.Array  # [B, C, T]
  running_ok: jax.Array  # [B, C] bool: the beam is real
  finished: jax.Array  # [B, C, T]
  finished_len: jax.Array  # [B, C]
  finished_score: jax.Array  # [B, C] value; -inf for an empty slot
  forward_tokens: jax.Array  # [B] int32


@dataclasses.dataclass(frozen=True)
class ValueBeam:
  """Value-guided beam search: each of C beams proposes its G likeliest next tokens, all C*G
  children go through the network in one call, and the C children with the highest value head
  keep running. A child that ends (EOS or the budget) is scored by the value of the state it
  was chosen in (the value head is trained on decision states only); the best finished child
  by that score is the answer. Costs G forward tokens per running beam per step: C*G once the
  C beams are all running."""
  width: int
  expand: int

  @property
  def forward_tokens_per_token(self) -> int:
    return self.width * self.expand

  def decode(self, params, prompt, prompt_len, rng, allowed, *, config, max_new_tokens, eos_id,
             reward_fn=None) -> Decoded:
    del rng, reward_fn  # deterministic, and ranked by the value head alone.
    batch, width, expand, budget = prompt.shape[0], self.width, self.expand, max_new_tokens
    state = episode_lib.start(params, config, prompt, prompt_len, max_new_tokens)
    empty = jnp.zeros((batch, width, budget), state.completion.dtype)
    beams = _ValueBeams(
        episode=repeat_rows(state, width), running=empty,
        running_ok=jnp.broadcast_to(jnp.arange(width) == 0, (batch, width)), finished=empty,
        finished_len=jnp.zeros((batch, width), jnp.int32),
        finished_score=jnp.full((batch, width), -jnp.inf),
        forward_tokens=jnp.zeros((batch,), jnp.int32))

    def body(beams: _ValueBeams, t):
      episode = beams.episode
      prior, token = vocab_ops.top_k(episode_lib.mask_logits(episode.logits, allowed), expand)
      token = token.astype(jnp.int32)  # [B*C, G]
      # Each child sees its row's cache and itself, never its siblings.
      out, (k, v) = model_lib.extend_siblings(
          params, config, token, jnp.broadcast_to(episode.cache.length[:, None], token.shape),
          [episode.cache.as_source()])  # logits [B*C, G, V], k, v [Y, B*C, G, Hkv, E]
      ok = jnp.isfinite(prior) & beams.running_ok.reshape(-1, 1)
      ends = (token == eos_id) | (t + 1 >= budget)
      score = jnp.where(ends, episode.value[:, None], out.value)
      score = jnp.where(ok, score, -jnp.inf).reshape(batch, width * expand)
      ends = ends.reshape(batch, width * expand)
      token = token.reshape(batch, width * expand)
      parent = jnp.broadcast_to(jnp.arange(width)[:, None], (width, expand)).reshape(-1)
      parent = jnp.broadcast_to(parent, (batch, width * expand))
      seqs = write_step(jnp.take_along_axis(beams.running, parent[..., None], 1), token, t)

      running_score, child = jax.lax.top_k(jnp.where(ends, -jnp.inf, score), width)
      finished_score, (finished, finished_len) = merge_top(
          beams.finished_score, jnp.where(ends, score, -jnp.inf),
          (beams.finished, beams.finished_len),
          (seqs, jnp.full((batch, width * expand), t + 1, jnp.int32)), width)

      # Flat index of each kept child among the B*C*G evaluated.
      flat = (jnp.arange(batch)[:, None] * width * expand + child).reshape(-1)
      rows = flat // expand
      take = lambda x: x.reshape((-1,) + x.shape[2:])[flat]
      kv = lambda x: jnp.moveaxis(x, 0, 2).reshape((-1,) + x.shape[:1] + x.shape[3:])[flat]
      episode = episode_lib.append(
          take_rows(episode, rows), take(token.reshape(-1, expand)), take(out.logits),
          take(out.value), jnp.moveaxis(kv(k), 1, 0), jnp.moveaxis(kv(v), 1, 0), eos_id)
      running = jnp.take_along_axis(seqs, child[..., None], 1)
      # All C*G children of every prompt went through the network; those of a slot that holds
      # no beam (the first step's copies, a prompt with fewer than C running) bill no one.
      spent = beams.forward_tokens + beams.running_ok.sum(1) * expand
      return _ValueBeams(episode, running, jnp.isfinite(running_score), finished, finished_len,
                         finished_score, spent), None

    beams, _ = jax.lax.scan(body, beams, jnp.arange(budget))
    return Decoded(beams.finished[:, 0], beams.finished_len[:, 0], beams.finished_score[:, 0],
                   beams.forward_tokens, jnp.zeros((batch,), jnp.int32))
