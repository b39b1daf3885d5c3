"""C samples per prompt from one shared prefill, then one of them: the best (`BestOfN`) or the
one most samples agree on (`MajorityVote`). Both spend C forward tokens per generated token (the
C samples' own forwards, counted); best-of-n by reward hands all C to the reward.
Dimension letters: B batch, T answer budget, C samples per prompt, A answer tokens a vote
compares.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from tokenzero import episode as episode_lib
from tokenzero.decoders.base import Decoded, need_reward, pick, repeat_rows
from tokenzero.decoders.sampling import Rollout, Sample, rollout


def sample_n(params, prompt, prompt_len, rng, allowed, *, config, max_new_tokens, eos_id,
             sampler, n) -> Rollout:
  """`n` (C) sampled answers per prompt from one shared prefill: B*C rows, b*C ... b*C + C-1."""
  state = episode_lib.start(params, config, prompt, prompt_len, max_new_tokens)
  return rollout(params, config, repeat_rows(state, n), rng, allowed, sampler, eos_id)


def last_decision_value(final: Rollout) -> jax.Array:
  """Value of the state the final token was chosen in [B].

  The learner fits the value head on decision states only, never on a state after EOS, so the
  last decision state is where the value of a finished answer is trained.
  """
  last = jnp.maximum(final.episode.num_generated - 1, 0)
  return jnp.take_along_axis(final.decision_value, last[:, None], axis=1)[:, 0]


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
    samples = sample_n(params, prompt, prompt_len, rng, allowed, config=config,
                       max_new_tokens=max_new_tokens, eos_id=eos_id, sampler=self.sampler,
                       n=self.n)
    final = samples.episode
    if self.score == "reward":
      need_reward(reward_fn, "best-of-n scored by reward")
      scores = reward_fn(final.prompt, final.prompt_len, final.completion, final.num_generated)
      scored = jnp.full((batch,), self.n, jnp.int32)  # every sample is a completion scored
    elif self.score == "value":
      scores = last_decision_value(samples)
      scored = jnp.zeros((batch,), jnp.int32)
    else:
      raise ValueError(f"BestOfN.score must be 'reward' or 'value', got {self.score!r}")
    scores = scores.astype(jnp.float32).reshape(batch, self.n)  # [B, C]
    best = jnp.argmax(scores, axis=1)
    completion = final.completion.reshape(batch, self.n, -1)  # [B, C, T]
    lengths = final.num_generated.reshape(batch, self.n)  # [B, C]
    return Decoded(pick(completion, best), pick(lengths, best), pick(scores, best),
                   samples.forward_tokens.reshape(batch, self.n).sum(1), scored)


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
    samples = sample_n(params, prompt, prompt_len, rng, allowed, config=config,
                       max_new_tokens=max_new_tokens, eos_id=eos_id, sampler=self.sampler,
                       n=self.n)
    final = samples.episode
    answers = final.completion
    if self.answer_fn is not None:
      answers = self.answer_fn(final.completion, final.num_generated)
    answers = answers.reshape(batch, self.n, -1)  # [B, C, A]
    agree = jnp.all(answers[:, :, None, :] == answers[:, None, :, :], axis=-1)  # [B, C, C]
    votes = agree.sum(-1)  # [B, C]
    loglik = samples.logprobs.sum(-1).reshape(batch, self.n)  # [B, C]
    best = jnp.argmax(jnp.where(votes == votes.max(1, keepdims=True), loglik, -jnp.inf), axis=1)
    completion = final.completion.reshape(batch, self.n, -1)  # [B, C, T]
    lengths = final.num_generated.reshape(batch, self.n)  # [B, C]
    return Decoded(pick(completion, best), pick(lengths, best),
                   pick(votes, best).astype(jnp.float32) / self.n,
                   samples.forward_tokens.reshape(batch, self.n).sum(1),
                   jnp.zeros((batch,), jnp.int32))
