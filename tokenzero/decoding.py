"""Decoders, from one next-token rule to tree search, behind one interface that counts compute.

A *sampler* is a tiny frozen dataclass with one method, `get_next_tokens(logits [B, V], rng) ->
[B]` (`Greedy`, `Sample` with temperature, top-k and top-p); `generate` runs one in a jitted
`lax.scan` over the answer budget.

A *decoder* turns prompts into one completion each. Every decoder is a frozen dataclass with
`decode(params, prompt, prompt_len, rng, allowed, *, config, max_new_tokens, eos_id, reward_fn)
-> Decoded` and a `forward_tokens_per_token` property; the module-level `decode` jits any of
them. The samplers are decoders too; the others are `BestOfN`, `MajorityVote`, `Beam`,
`ValueBeam` and `TreeSearch`.

Compute is counted in forward token-evaluations: one token run through the network against the
KV cache. A sampled answer costs one per generated token; best-of-n n, majority vote n, beam W,
value-guided beam W*E, tree search S+1 with S simulations. The prompt's prefill is the same for
every decoder (done once, then shared) and is not counted. `Decoded.forward_tokens` is what a
row actually spent; steps that a batched scan runs after a row is finished are not counted.

Dimension letters: B batch, P prompt slots, T answer budget, V vocab, N samples per prompt,
W beams, E expansions per beam, K search candidates, Y layers.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from tokenzero import episode as episode_lib
from tokenzero import model as model_lib
from tokenzero import search as search_lib
from tokenzero.config import ModelConfig, SearchConfig
from tokenzero.episode import Episode
from tokenzero.rewards import TokenReward

_NEG = -1.0e9  # "ruled out" score offset, as in transformers' beam search (keeps ties alike).


class Generation(NamedTuple):
  completion: jax.Array  # [B, T] generated tokens, PAD after the end
  completion_len: jax.Array  # [B] tokens generated, EOS included
  logprobs: jax.Array  # [B, T] log-probability of each generated token under the model
  value: jax.Array  # [B] value head at the last state (0 after EOS is not special-cased)


class Decoded(NamedTuple):
  """One completion per prompt row, and what it cost."""
  completion: jax.Array  # [B, T] generated tokens, PAD after the end
  completion_len: jax.Array  # [B] tokens generated, EOS included
  score: jax.Array  # [B] what the decoder ranked its pick by (log-likelihood, value, reward...)
  forward_tokens: jax.Array  # [B] int32 forward token-evaluations spent on the row


class Decoder(Protocol):
  @property
  def forward_tokens_per_token(self) -> int: ...

  def decode(self, params, prompt, prompt_len, rng, allowed, *, config: ModelConfig,
             max_new_tokens: int, eos_id: int, reward_fn: TokenReward | None) -> Decoded: ...


# --- next-token rules ---------------------------------------------------------------------------


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


class _SamplerDecoder:
  """A sampler used as a decoder: one sampled answer, one forward token per generated token."""

  @property
  def forward_tokens_per_token(self) -> int:
    return 1

  def decode(self, params, prompt, prompt_len, rng, allowed, *, config, max_new_tokens, eos_id,
             reward_fn=None) -> Decoded:
    del reward_fn  # the answer never looks at the reward.
    state = episode_lib.start(params, config, prompt, prompt_len, max_new_tokens)
    rollout = _rollout(params, config, state, rng, allowed, self, eos_id)
    final = rollout.episode
    return Decoded(final.completion, final.num_generated, rollout.logprobs.sum(-1),
                   final.num_generated)


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


def allowed_tokens(vocab_size: int, forbidden) -> jax.Array:
  """[V] bool mask with the ids in `forbidden` (PAD, SEP, ...) switched off."""
  allowed = jnp.ones((vocab_size,), bool)
  for token in forbidden:
    if token is not None:
      allowed = allowed.at[token].set(False)
  return allowed


class _Rollout(NamedTuple):
  episode: Episode  # the final state
  logprobs: jax.Array  # [B, T] log-probability of each generated token, 0 after the end
  decision_value: jax.Array  # [B, T] value of the state each token was chosen in


def _rollout(params, config: ModelConfig, state: Episode, rng, allowed, sampler,
             eos_id: int) -> _Rollout:
  """Decodes every row of `state` to its end with `sampler`."""
  def body(state, step_key):
    logits = episode_lib.mask_logits(state.logits, allowed)
    token = sampler.get_next_tokens(logits, step_key).astype(jnp.int32)
    logprob = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], axis=1)[:, 0]
    live = ~state.done
    value = state.value
    state = episode_lib.step(params, config, state, token, eos_id)
    return state, (jnp.where(live, logprob, 0.0), value)

  state, (logprobs, values) = jax.lax.scan(body, state,
                                           jax.random.split(rng, state.max_new_tokens))
  return _Rollout(state, logprobs.T, values.T)


@functools.partial(jax.jit, static_argnames=("config", "sampler", "max_new_tokens", "eos_id"))
def generate(params, prompt, prompt_len, rng, allowed, *, config: ModelConfig, sampler,
             max_new_tokens: int, eos_id: int) -> Generation:
  """Decodes right-padded prompts [B, P] with `sampler`; forbidden tokens are never picked."""
  state = episode_lib.start(params, config, prompt, prompt_len, max_new_tokens)
  rollout = _rollout(params, config, state, rng, allowed, sampler, eos_id)
  final = rollout.episode
  return Generation(final.completion, final.num_generated, rollout.logprobs, final.value)


@functools.partial(jax.jit, static_argnames=("decoder", "config", "max_new_tokens", "eos_id",
                                             "reward_fn"))
def decode(params, prompt, prompt_len, rng, allowed, *, decoder, config: ModelConfig,
           max_new_tokens: int, eos_id: int, reward_fn: TokenReward | None = None) -> Decoded:
  """Any decoder on right-padded prompts [B, P] (lengths [B]); `allowed` [V] bool."""
  return decoder.decode(params, prompt, prompt_len, rng, allowed, config=config,
                        max_new_tokens=max_new_tokens, eos_id=eos_id, reward_fn=reward_fn)


# --- batch surgery on episodes ------------------------------------------------------------------


def _map_rows(fn, state: Episode) -> Episode:
  """Applies `fn(x, axis)` to every array of `state` along its batch axis."""
  cache = state.cache
  rest = jax.tree.map(lambda x: fn(x, 0), state._replace(cache=None))
  return rest._replace(cache=model_lib.KVCache(fn(cache.k, 1), fn(cache.v, 1),
                                               fn(cache.length, 0)))


def _repeat_rows(state: Episode, n: int) -> Episode:
  """Row b becomes rows b*n ... b*n + n-1 (a prefill shared by n continuations)."""
  return _map_rows(lambda x, axis: jnp.repeat(x, n, axis=axis), state)


def _take_rows(state: Episode, rows: jax.Array) -> Episode:
  return _map_rows(lambda x, axis: jnp.take(x, rows, axis=axis), state)


def _pick(x: jax.Array, index: jax.Array) -> jax.Array:
  """x [B, N, ...], index [B] -> x[b, index[b]] [B, ...]."""
  return jnp.take_along_axis(x, index.reshape((-1,) + (1,) * (x.ndim - 1)), axis=1)[:, 0]


def _last_decision_value(rollout: _Rollout) -> jax.Array:
  """Value of the state the final token was chosen in [B].

  The learner fits the value head on decision states only, never on a state after EOS, so the
  last decision state is where the value of a finished answer is trained.
  """
  last = jnp.maximum(rollout.episode.num_generated - 1, 0)
  return jnp.take_along_axis(rollout.decision_value, last[:, None], axis=1)[:, 0]


def _need_reward(reward_fn, who: str):
  if reward_fn is None:
    raise ValueError(f"{who} needs a reward function (reward_fn=...)")


# --- n samples per prompt -----------------------------------------------------------------------


def _sample_n(params, prompt, prompt_len, rng, allowed, *, config, max_new_tokens, eos_id,
              sampler, n) -> _Rollout:
  """n sampled answers per prompt from one shared prefill; rows b*n ... b*n + n-1."""
  state = episode_lib.start(params, config, prompt, prompt_len, max_new_tokens)
  return _rollout(params, config, _repeat_rows(state, n), rng, allowed, sampler, eos_id)


@dataclasses.dataclass(frozen=True)
class BestOfN:
  """n samples, keep the best by the reward (`score="reward"`) or by the value head
  (`score="value"`, for when the reward may not be used to pick)."""
  n: int
  sampler: Sample = Sample()
  score: str = "reward"

  @property
  def forward_tokens_per_token(self) -> int:
    return self.n

  def decode(self, params, prompt, prompt_len, rng, allowed, *, config, max_new_tokens, eos_id,
             reward_fn=None) -> Decoded:
    batch = prompt.shape[0]
    rollout = _sample_n(params, prompt, prompt_len, rng, allowed, config=config,
                        max_new_tokens=max_new_tokens, eos_id=eos_id, sampler=self.sampler,
                        n=self.n)
    final = rollout.episode
    if self.score == "reward":
      _need_reward(reward_fn, "best-of-n scored by reward")
      scores = reward_fn(final.prompt, final.prompt_len, final.completion, final.num_generated)
    elif self.score == "value":
      scores = _last_decision_value(rollout)
    else:
      raise ValueError(f"BestOfN.score must be 'reward' or 'value', got {self.score!r}")
    scores = scores.astype(jnp.float32).reshape(batch, self.n)
    best = jnp.argmax(scores, axis=1)
    completion = final.completion.reshape(batch, self.n, -1)
    lengths = final.num_generated.reshape(batch, self.n)
    return Decoded(_pick(completion, best), _pick(lengths, best), _pick(scores, best),
                   lengths.sum(1))


@dataclasses.dataclass(frozen=True)
class MajorityVote:
  """Self-consistency: n samples, return the answer most of them agree on.

  Answers are compared as token sequences: the whole completion, or what `answer_fn`
  (completion [B, T], completion_len [B]) -> [B, A] extracts from it. Ties go to the answer
  with the higher log-likelihood. `score` is the fraction of samples that agree.
  """
  n: int
  sampler: Sample = Sample()
  answer_fn: Callable | None = None

  @property
  def forward_tokens_per_token(self) -> int:
    return self.n

  def decode(self, params, prompt, prompt_len, rng, allowed, *, config, max_new_tokens, eos_id,
             reward_fn=None) -> Decoded:
    del reward_fn  # votes never look at the reward.
    batch = prompt.shape[0]
    rollout = _sample_n(params, prompt, prompt_len, rng, allowed, config=config,
                        max_new_tokens=max_new_tokens, eos_id=eos_id, sampler=self.sampler,
                        n=self.n)
    final = rollout.episode
    answers = final.completion
    if self.answer_fn is not None:
      answers = self.answer_fn(final.completion, final.num_generated)
    answers = answers.reshape(batch, self.n, -1)
    agree = jnp.all(answers[:, :, None, :] == answers[:, None, :, :], axis=-1)  # [B, N, N]
    votes = agree.sum(-1)  # [B, N]
    loglik = rollout.logprobs.sum(-1).reshape(batch, self.n)
    best = jnp.argmax(jnp.where(votes == votes.max(1, keepdims=True), loglik, -jnp.inf), axis=1)
    completion = final.completion.reshape(batch, self.n, -1)
    lengths = final.num_generated.reshape(batch, self.n)
    return Decoded(_pick(completion, best), _pick(lengths, best),
                   _pick(votes, best).astype(jnp.float32) / self.n, lengths.sum(1))


# --- beam search --------------------------------------------------------------------------------


class _Beams(NamedTuple):
  episode: Episode  # B*W rows: the running beams
  running: jax.Array  # [B, W, T] running beams' tokens
  running_score: jax.Array  # [B, W] their summed log-probabilities
  finished: jax.Array  # [B, W, T] best finished hypotheses so far, best first
  finished_len: jax.Array  # [B, W]
  finished_score: jax.Array  # [B, W] length-penalised scores
  is_finished: jax.Array  # [B, W] bool: the slot holds a real hypothesis
  improvable: jax.Array  # [B] bool: a running beam may still beat the worst finished one
  forward_tokens: jax.Array  # [B] int32


def _merge_top(scores, extra_scores, values, extra_values, k):
  """Top-k by score of two pools [B, *] with matching value arrays [B, *, ...]."""
  scores = jnp.concatenate([scores, extra_scores], axis=1)
  best_scores, idx = jax.lax.top_k(scores, k)
  out = []
  for a, b in zip(values, extra_values):
    pool = jnp.concatenate([a, b], axis=1)
    out.append(jnp.take_along_axis(pool, idx.reshape(idx.shape + (1,) * (pool.ndim - 2)), 1))
  return best_scores, out


def _write_step(seqs: jax.Array, token: jax.Array, t) -> jax.Array:
  """seqs [B, N, T] with token [B, N] written at step t."""
  return jnp.where(jnp.arange(seqs.shape[-1]) == t, token[..., None], seqs)


@dataclasses.dataclass(frozen=True)
class Beam:
  """Beam search on summed log-probabilities, with transformers' semantics.

  Like `generate(num_beams=W, do_sample=False, length_penalty=..., early_stopping=...)` (with
  forbidden tokens suppressed after the log-softmax, as its logits processors do): each
  step keeps the 2W best (beam, token) continuations; those that end (EOS, or the answer budget)
  among the top W become finished hypotheses scored `sum_logprobs / length ** length_penalty`,
  the first W that do not end keep running; `early_stopping` is False (stop a prompt once no
  running beam can beat its worst finished one, judged at the current length), True (stop at W
  finished) or "never" (judged at the longest length when length_penalty > 0).
  """
  width: int
  length_penalty: float = 1.0
  early_stopping: bool | str = False

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
    # Only the first beam is real at the start, so the W beams do not repeat each other.
    first_only = jnp.where(jnp.arange(width) == 0, 0.0, _NEG)
    beams = _Beams(
        episode=_repeat_rows(state, width), running=empty,
        running_score=jnp.broadcast_to(first_only, (batch, width)), finished=empty,
        finished_len=jnp.zeros((batch, width), jnp.int32),
        finished_score=jnp.full((batch, width), _NEG), is_finished=jnp.zeros((batch, width), bool),
        improvable=jnp.ones((batch,), bool), forward_tokens=jnp.zeros((batch,), jnp.int32))
    in_top_width = jnp.arange(2 * width) < width

    def body(beams: _Beams, t):
      full = jnp.all(beams.is_finished, axis=1)
      can_change = beams.improvable & ~(full & (self.early_stopping is True))
      # As in transformers: the model's log-probabilities, then forbidden tokens ruled out
      # (not renormalised over the allowed ones).
      logprobs = episode_lib.mask_logits(jax.nn.log_softmax(beams.episode.logits), allowed)
      total = logprobs.reshape(batch, width, vocab) + beams.running_score[:, :, None]
      top_score, top_index = jax.lax.top_k(total.reshape(batch, width * vocab), 2 * width)
      parent, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
      seqs = _write_step(jnp.take_along_axis(beams.running, parent[..., None], 1), token, t)
      ends = (token == eos_id) | (t + 1 >= budget)

      # Ended continuations never keep running; the next best ones fill in.
      running_score, keep = jax.lax.top_k(top_score + ends * _NEG, width)
      parent, token = jnp.take_along_axis(parent, keep, 1), jnp.take_along_axis(token, keep, 1)
      running = jnp.take_along_axis(seqs, keep[..., None], 1)
      normalised = top_score / ((t + 1) ** self.length_penalty)
      normalised += (~can_change)[:, None] * _NEG + (~(ends & in_top_width)) * _NEG
      lengths = jnp.full((batch, 2 * width), t + 1, jnp.int32)
      finished_score, (finished, finished_len, is_finished) = _merge_top(
          beams.finished_score, normalised,
          (beams.finished, beams.finished_len, beams.is_finished),
          (seqs, lengths, ends & in_top_width), width)

      rows = (jnp.arange(batch)[:, None] * width + parent).reshape(-1)
      episode = episode_lib.step(params, config, _take_rows(beams.episode, rows),
                                 token.reshape(-1), eos_id)
      if self.early_stopping == "never" and self.length_penalty > 0:
        best_length = budget
      else:
        best_length = t + 1
      best_possible = running_score[:, :1] / (best_length ** self.length_penalty)
      worst = jnp.where(is_finished, jnp.min(finished_score, axis=1, keepdims=True), _NEG)
      improvable = beams.improvable & jnp.any(best_possible > worst, axis=1)
      spent = beams.forward_tokens + jnp.where(can_change, width, 0)
      return _Beams(episode, running, running_score, finished, finished_len, finished_score,
                    is_finished, improvable, spent), None

    beams, _ = jax.lax.scan(body, beams, jnp.arange(budget))
    return Decoded(beams.finished[:, 0], beams.finished_len[:, 0], beams.finished_score[:, 0],
                   beams.forward_tokens)


def _advance(state: Episode, token, logits, value, k, v, eos_id: int) -> Episode:
  """`episode.step` with the forward already run: token [B], logits [B, V], value [B] and the
  token's own k, v [Y, B, Hkv, E]."""
  live = ~state.done
  cache = state.cache
  cache = model_lib.KVCache(
      jnp.where(live[None, :, None, None, None],
                model_lib.write_slot(cache.k, k, cache.length, axis=2), cache.k),
      jnp.where(live[None, :, None, None, None],
                model_lib.write_slot(cache.v, v, cache.length, axis=2), cache.v),
      cache.length + live.astype(jnp.int32))
  token = jnp.where(live, token, 0).astype(state.tokens.dtype)
  write = lambda buf, idx: jnp.where(
      live[:, None] & (jnp.arange(buf.shape[1])[None, :] == idx[:, None]), token[:, None], buf)
  num_generated = state.num_generated + live.astype(jnp.int32)
  return state._replace(
      cache=cache,
      tokens=write(state.tokens, state.cache.length),
      completion=write(state.completion, state.num_generated),
      num_generated=num_generated,
      logits=jnp.where(live[:, None], logits, state.logits),
      value=jnp.where(live, value, state.value),
      done=state.done | (live & ((token == eos_id) | (num_generated >= state.max_new_tokens))))


def _expand(params, config: ModelConfig, state: Episode, tokens: jax.Array):
  """Runs E sibling tokens [B, E] after each row's end in one call, each seeing only the cache
  and itself -> logits [B, E, V], value [B, E], k, v [Y, B, E, Hkv, E']."""
  rows, siblings = tokens.shape
  positions = jnp.broadcast_to(state.cache.length[:, None], tokens.shape)
  self_mask = jnp.broadcast_to(jnp.eye(siblings, dtype=bool), (rows, siblings, siblings))
  out, (k, v) = model_lib.Transformer(config).apply(
      {"params": params}, tokens, positions, [state.cache.as_source()], self_mask)
  return out.logits, out.value, k, v


class _ValueBeams(NamedTuple):
  episode: Episode  # B*W rows: the running beams
  running: jax.Array  # [B, W, T]
  running_ok: jax.Array  # [B, W] bool: the beam is real
  finished: jax.Array  # [B, W, T]
  finished_len: jax.Array  # [B, W]
  finished_score: jax.Array  # [B, W] value; -inf for an empty slot
  forward_tokens: jax.Array  # [B] int32


@dataclasses.dataclass(frozen=True)
class ValueBeam:
  """Value-guided beam search: each of W beams proposes its E likeliest next tokens, all W*E
  children go through the network in one call, and the W children with the highest value head
  keep running. A child that ends (EOS or the budget) is scored by the value of the state it
  was chosen in (the value head is trained on decision states only); the best finished child
  by that score is the answer."""
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
        episode=_repeat_rows(state, width), running=empty,
        running_ok=jnp.broadcast_to(jnp.arange(width) == 0, (batch, width)), finished=empty,
        finished_len=jnp.zeros((batch, width), jnp.int32),
        finished_score=jnp.full((batch, width), -jnp.inf),
        forward_tokens=jnp.zeros((batch,), jnp.int32))

    def body(beams: _ValueBeams, t):
      episode = beams.episode
      prior, token = jax.lax.top_k(episode_lib.mask_logits(episode.logits, allowed), expand)
      token = token.astype(jnp.int32)
      logits, value, k, v = _expand(params, config, episode, token)
      ok = jnp.isfinite(prior) & beams.running_ok.reshape(-1, 1)
      ends = (token == eos_id) | (t + 1 >= budget)
      score = jnp.where(ends, episode.value[:, None], value)
      score = jnp.where(ok, score, -jnp.inf).reshape(batch, width * expand)
      ends = ends.reshape(batch, width * expand)
      token = token.reshape(batch, width * expand)
      parent = jnp.broadcast_to(jnp.arange(width)[:, None], (width, expand)).reshape(-1)
      parent = jnp.broadcast_to(parent, (batch, width * expand))
      seqs = _write_step(jnp.take_along_axis(beams.running, parent[..., None], 1), token, t)

      running_score, child = jax.lax.top_k(jnp.where(ends, -jnp.inf, score), width)
      finished_score, (finished, finished_len) = _merge_top(
          beams.finished_score, jnp.where(ends, score, -jnp.inf),
          (beams.finished, beams.finished_len),
          (seqs, jnp.full((batch, width * expand), t + 1, jnp.int32)), width)

      # Flat index of each kept child among the B*W*E evaluated.
      flat = (jnp.arange(batch)[:, None] * width * expand + child).reshape(-1)
      rows = flat // expand
      take = lambda x: x.reshape((-1,) + x.shape[2:])[flat]
      kv = lambda x: jnp.moveaxis(x, 0, 2).reshape((-1,) + x.shape[:1] + x.shape[3:])[flat]
      episode = _advance(_take_rows(episode, rows), take(token.reshape(-1, expand)),
                         take(logits), take(value), jnp.moveaxis(kv(k), 1, 0),
                         jnp.moveaxis(kv(v), 1, 0), eos_id)
      live = jnp.any(beams.running_ok, axis=1)
      running = jnp.take_along_axis(seqs, child[..., None], 1)
      spent = beams.forward_tokens + jnp.where(live, width * expand, 0)
      return _ValueBeams(episode, running, jnp.isfinite(running_score), finished, finished_len,
                         finished_score, spent), None

    beams, _ = jax.lax.scan(body, beams, jnp.arange(budget))
    return Decoded(beams.finished[:, 0], beams.finished_len[:, 0], beams.finished_score[:, 0],
                   beams.forward_tokens)


# --- tree search --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TreeSearch:
  """Searches at every step (`search.run_search`, Gumbel or PUCT) and plays the search's pick.

  With zero simulations it plays what the search's first selection would: the Gumbel-perturbed
  best candidate (Gumbel) or the likeliest one (PUCT). `score` is the value the search backed
  up at its last decision.
  """
  search: SearchConfig = SearchConfig()

  @property
  def forward_tokens_per_token(self) -> int:
    return self.search.num_simulations + 1

  def decode(self, params, prompt, prompt_len, rng, allowed, *, config, max_new_tokens, eos_id,
             reward_fn=None) -> Decoded:
    _need_reward(reward_fn, "tree search")
    state = episode_lib.start(params, config, prompt, prompt_len, max_new_tokens)
    batch = prompt.shape[0]
    num_actions = search_lib.num_candidates(self.search, config.vocab_size)

    def body(carry, step_key):
      state, last_value = carry
      if self.search.num_simulations > 0:
        out = search_lib.run_search(params, config, self.search, state, step_key,
                                    reward_fn=reward_fn, allowed=allowed, eos_id=eos_id)
        token, value = out.token, out.search_value
      else:
        prior, ids = jax.lax.top_k(episode_lib.mask_logits(state.logits, allowed), num_actions)
        if self.search.algorithm == "gumbel":
          prior = prior + self.search.gumbel_scale * jax.random.gumbel(step_key, prior.shape)
        token, value = _pick(ids, jnp.argmax(prior, axis=1)), state.value
      live = ~state.done
      last_value = jnp.where(live, value, last_value)
      state = episode_lib.step(params, config, state, token.astype(jnp.int32), eos_id)
      return (state, last_value), None

    (state, last_value), _ = jax.lax.scan(
        body, (state, jnp.zeros((batch,), jnp.float32)),
        jax.random.split(rng, max_new_tokens))
    return Decoded(state.completion, state.num_generated, last_value,
                   state.num_generated * self.forward_tokens_per_token)
