"""`Beam`: C beams per prompt ranked by summed log-probability, as transformers' beam search.
Dimension letters: B batch, T answer budget, V vocab, C beams per prompt.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from tokenzero import episode as episode_lib
from tokenzero import vocab_ops
from tokenzero.decoders.base import Decoded, merge_top, repeat_rows, take_rows, write_step
from tokenzero.episode import Episode

_NEG = -1.0e9  # "ruled out" score offset, as in transformers' beam search (keeps ties alike).


class _Beams(NamedTuple):
  episode: Episode  # B*C rows: the running beams
  running: jax.Array  # [B, C, T] running beams' tokens
  running_score: jax.Array  # [B, C] their summed log-probabilities
  finished: jax.Array  # [B, C, T] best finished hypotheses so far, best first
  finished_len: jax.Array  # [B, C]
  finished_score: jax.Array  # [B, C] length-penalised scores
  is_finished: jax.Array  # [B, C] bool: the slot holds a real hypothesis
  improvable: jax.Array  # [B] bool: a running beam may still beat the worst finished one
  forward_tokens: jax.Array  # [B] int32


@dataclasses.dataclass(frozen=True)
class Beam:
  """Beam search on summed log-probabilities, with transformers' semantics.

  Like `generate(num_beams=C, do_sample=False, length_penalty=..., early_stopping=...)` (with
  forbidden tokens suppressed after the log-softmax, as its logits processors do): each
  step keeps the 2C best (beam, token) continuations; those that end (EOS, or the answer budget)
  among the top C become finished hypotheses scored `sum_logprobs / length ** length_penalty`,
  the first C that do not end keep running; `early_stopping` is False (stop a prompt once no
  running beam can beat its worst finished one, judged at the current length), True (stop at C
  finished) or "never" (judged at the longest length when length_penalty > 0). Costs C forward
  tokens per step while a prompt's answer can still change, and nothing after.

  A step's 2C best continuations come from each beam's 2C best tokens (a beam can place no more
  than 2C in the top 2C), so it ranks C x 2C candidates, not C x V, and finds each beam's 2C
  with `vocab_ops.top_k`. `full_vocab=True` ranks all C x V log-probabilities instead:
  the same result, slower; kept as the reference.
  """
  width: int
  length_penalty: float = 1.0
  early_stopping: bool | str = False
  full_vocab: bool = False

  @property
  def forward_tokens_per_token(self) -> int:
    return self.width

  def decode(self, params, prompt, prompt_len, rng, allowed, *, config, max_new_tokens, eos_id,
             reward_fn=None) -> Decoded:
    del rng, reward_fn  # deterministic, and ranked by likelihood alone.
    if self.early_stopping not in (True, False, "never"):
      raise ValueError(f"Beam.early_stopping must be True, False or 'never', got "
                       f"{self.early_stopping!r}")
    batch, width, budget = prompt.shape[0], self.width, max_new_tokens
    state = episode_lib.start(params, config, prompt, prompt_len, max_new_tokens)
    vocab = state.logits.shape[-1]
    if 2 * width > width * vocab:
      raise ValueError(f"beam width {width} needs a vocabulary of at least 2 tokens")
    empty = jnp.zeros((batch, width, budget), state.completion.dtype)
    # Only the first beam is real at the start, so the C beams do not repeat each other.
    first_only = jnp.where(jnp.arange(width) == 0, 0.0, _NEG)
    beams = _Beams(
        episode=repeat_rows(state, width), running=empty,
        running_score=jnp.broadcast_to(first_only, (batch, width)), finished=empty,
        finished_len=jnp.zeros((batch, width), jnp.int32),
        finished_score=jnp.full((batch, width), _NEG), is_finished=jnp.zeros((batch, width), bool),
        improvable=jnp.ones((batch,), bool), forward_tokens=jnp.zeros((batch,), jnp.int32))
    in_top_width = jnp.arange(2 * width) < width

    def body(beams: _Beams, t):
      full = jnp.all(beams.is_finished, axis=1)
      can_change = beams.improvable & ~(full & (self.early_stopping is True))
      top_score, parent, token = self._continuations(beams.episode.logits, allowed,
                                                     beams.running_score)
      seqs = write_step(jnp.take_along_axis(beams.running, parent[..., None], 1), token, t)
      ends = (token == eos_id) | (t + 1 >= budget)

      # Ended continuations never keep running; the next best ones fill in.
      running_score, keep = jax.lax.top_k(top_score + ends * _NEG, width)
      parent, token = jnp.take_along_axis(parent, keep, 1), jnp.take_along_axis(token, keep, 1)
      running = jnp.take_along_axis(seqs, keep[..., None], 1)
      normalised = top_score / ((t + 1) ** self.length_penalty)
      normalised += (~can_change)[:, None] * _NEG + (~(ends & in_top_width)) * _NEG
      lengths = jnp.full((batch, 2 * width), t + 1, jnp.int32)
      finished_score, (finished, finished_len, is_finished) = merge_top(
          beams.finished_score, normalised,
          (beams.finished, beams.finished_len, beams.is_finished),
          (seqs, lengths, ends & in_top_width), width)

      rows = (jnp.arange(batch)[:, None] * width + parent).reshape(-1)
      episode = episode_lib.step(params, config, take_rows(beams.episode, rows),
                                 token.reshape(-1), eos_id)
      if self.early_stopping == "never" and self.length_penalty > 0:
        best_length = budget
      else:
        best_length = t + 1
      best_possible = running_score[:, :1] / (best_length ** self.length_penalty)
      worst = jnp.where(is_finished, jnp.min(finished_score, axis=1, keepdims=True), _NEG)
      improvable = beams.improvable & jnp.any(best_possible > worst, axis=1)
      # The step's forward runs all C rows of every prompt; a prompt whose answer can no longer
      # change throws its rows' results away, and is not billed for them.
      spent = beams.forward_tokens + jnp.where(can_change, width, 0)
      return _Beams(episode, running, running_score, finished, finished_len, finished_score,
                    is_finished, improvable, spent), None

    beams, _ = jax.lax.scan(body, beams, jnp.arange(budget))
    return Decoded(beams.finished[:, 0], beams.finished_len[:, 0], beams.finished_score[:, 0],
                   beams.forward_tokens, jnp.zeros((batch,), jnp.int32))

  def _continuations(self, logits, allowed, running_score):
    """The 2C best (beam, token) continuations of every prompt by summed log-probability:
    logits [B*C, V], running_score [B, C] -> (score, parent beam, token), each [B, 2C], best
    first, ties to the lower (beam, token)."""
    batch, width = running_score.shape
    vocab = logits.shape[-1]
    # As in transformers: the model's log-probabilities, then forbidden tokens ruled out
    # (not renormalised over the allowed ones).
    if self.full_vocab:
      logprobs = episode_lib.mask_logits(jax.nn.log_softmax(logits), allowed)
      total = logprobs.reshape(batch, width, vocab) + running_score[:, :, None]
      top_score, top_index = jax.lax.top_k(total.reshape(batch, width * vocab), 2 * width)
      return top_score, top_index // vocab, (top_index % vocab).astype(jnp.int32)
    # jax.nn.log_softmax's floats, (x - max) - log(sum(exp(x - max))), plus the beam's score:
    # the very numbers the full ranking ranks. A beam's 2C best of them, then the 2C best of
    # the C x 2C in (beam, rank) order: ties still go to the lower (beam, token).
    top = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    shifted = logits - top
    normaliser = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))  # [B*C, 1]
    logprobs = episode_lib.mask_logits(shifted - normaliser, allowed)
    per_beam = min(2 * width, vocab)
    best, best_token = vocab_ops.top_k(logprobs + running_score.reshape(-1, 1), per_beam)
    total = best.reshape(batch, width * per_beam)
    top_score, top_index = jax.lax.top_k(total, 2 * width)
    parent = top_index // per_beam
    token = jnp.take_along_axis(best_token.reshape(batch, width * per_beam), top_index, axis=1)
    return top_score, parent, token.astype(jnp.int32)
