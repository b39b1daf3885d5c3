"""Any reward form -> a `TokenReward` on tokens, for the search, self-play and evaluation.

Python forms go through the host callback of `tokenzero.rewards.host`; JAX forms run inline,
their shapes checked at trace time and a non-finite value on an ended row recorded as a
`RewardError`. `add_rewards` sums per-step rewards into the outcome; `score_texts` runs any form
on text pairs, and `encode_pairs` lays text pairs out as the decoder does.

Dimension letters: B batch, P prompt slots, T answer budget.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tokenzero.prompts import encode_batch
from tokenzero.rewards.errors import (RewardError, clear_pending, describe_pair, raise_pending,
                                      record)
from tokenzero.rewards.host import call_python, ended_rows, host_token_reward, step_sums
from tokenzero.rewards.plugin import Reward, TokenReward, as_reward
from tokenzero.tokenizer import Tokenizer


def _guard_finite(name: str, values, ended, tokenizer: Tokenizer, prompt, prompt_len,
                  completion, completion_len):
  """values [B] of an in-graph reward; a non-finite value on an ended row is recorded as a
  `RewardError` (through a host callback that only runs when there is one)."""
  owner = object()
  bad = ended & ~jnp.isfinite(values)

  def report(values, bad, prompt, prompt_len, completion, completion_len):
    row = int(np.argmax(np.asarray(bad)))
    text_prompt = tokenizer.decode(np.asarray(prompt)[row, :int(prompt_len[row])])
    text = tokenizer.decode(np.asarray(completion)[row, :int(completion_len[row])])
    value = float(np.asarray(values)[row])
    record(owner, RewardError(
        f"reward '{name}' returned {value} for {describe_pair(text_prompt, text)}; a reward "
        "must return a finite float", reward_name=name, prompt=text_prompt, completion=text,
        value=value))
    return np.zeros(np.shape(values), np.float32)

  shape = jax.ShapeDtypeStruct(values.shape, jnp.float32)
  zeros = jax.lax.cond(
      jnp.any(bad),
      lambda: jax.pure_callback(report, shape, values, bad, prompt, prompt_len, completion,
                                completion_len, vmap_method="sequential"),
      lambda: jnp.zeros(values.shape, jnp.float32))
  return jnp.where(bad, 0.0, values) + zeros


def _jax_values(reward: Reward, prompt, prompt_len, completion, completion_len):
  """Calls an in-graph reward and checks its shape at trace time."""
  batch, width = completion.shape
  if reward.form == "jax_step":
    values = jnp.asarray(reward.fn(completion, completion_len))
    if values.shape != (batch, width):
      raise RewardError(f"per-step JAX reward '{reward.name}' returned shape {values.shape} "
                        f"for tokens of shape {(batch, width)}; it must return [B, T] = "
                        f"{(batch, width)}", reward_name=reward.name, value=values.shape)
    return values.astype(jnp.float32)
  if reward.with_prompt:
    values = reward.fn(prompt, prompt_len, completion, completion_len)
  else:
    values = reward.fn(completion, completion_len)
  values = jnp.asarray(values)
  if values.shape != (batch,):
    raise RewardError(f"JAX reward '{reward.name}' returned shape {values.shape} for a batch of "
                      f"{batch}; it must return one value per row, shape ({batch},)",
                      reward_name=reward.name, value=values.shape)
  if not (jnp.issubdtype(values.dtype, jnp.floating) or jnp.issubdtype(values.dtype, jnp.integer)
          or values.dtype == jnp.bool_):
    raise RewardError(f"JAX reward '{reward.name}' returned dtype {values.dtype}; it must "
                      "return real numbers", reward_name=reward.name, value=values.dtype)
  return values.astype(jnp.float32)


def token_reward(reward: Reward | Callable, tokenizer: Tokenizer) -> TokenReward:
  """Any reward form -> a `TokenReward` for the search, self-play and evaluation.

  Step forms give the sum of their per-token rewards over the answer (see `add_rewards`).
  """
  reward = as_reward(reward)
  eos_id = tokenizer.eos_id
  if reward.form in ("text", "batched"):
    return host_token_reward(reward.name, lambda p, c: call_python(reward, p, c), tokenizer)
  if reward.form == "step":
    return host_token_reward(reward.name, lambda p, c: step_sums(reward, p, c), tokenizer)

  def inline(prompt, prompt_len, completion, completion_len):
    values = _jax_values(reward, prompt, prompt_len, completion, completion_len)
    if reward.form == "jax_step":  # one reward per answer token, EOS excluded.
      last = jnp.take_along_axis(completion, jnp.clip(completion_len - 1, 0)[:, None], 1)[:, 0]
      answer_len = completion_len - ((completion_len > 0) & (last == eos_id))
      in_answer = jnp.arange(completion.shape[1])[None, :] < answer_len[:, None]
      values = jnp.sum(jnp.where(in_answer, values, 0.0), axis=1)
    ended = ended_rows(completion, completion_len, eos_id)
    return _guard_finite(reward.name, values, ended, tokenizer, prompt, prompt_len, completion,
                         completion_len)

  return inline


def add_rewards(outcome: TokenReward, step: TokenReward | None = None, *,
                step_weight: float = 1.0) -> TokenReward:
  """outcome + step_weight * (sum of the per-step rewards), paid when the answer ends.

  A node's state is its whole prefix, so the per-step rewards along an answer are a function
  of the finished answer: paying their sum at the terminal edge leaves the return of every
  complete answer, and so the best answer, unchanged. The search then sees step rewards at
  terminal nodes only, and the value head learns what is coming from the rest.
  """
  if step is None or step_weight == 0.0:
    return outcome

  def reward(prompt, prompt_len, completion, completion_len):
    return (outcome(prompt, prompt_len, completion, completion_len)
            + step_weight * step(prompt, prompt_len, completion, completion_len))

  return reward


def encode_pairs(tokenizer: Tokenizer, prompts: Sequence[str], completions: Sequence[str],
                 max_new_tokens: int) -> tuple[np.ndarray, ...]:
  """Text pairs -> the `TokenReward` arguments, as the decoder lays them out: prompt [B, P]
  with SEP, prompt_len [B], completion [B, T] with EOS (if it fits) then PAD, completion_len."""
  prompt_len = max(len(tokenizer.encode(p)) for p in prompts) + 1
  batch = encode_batch(tokenizer, prompts, prompt_len)
  tokens = np.full((len(completions), max_new_tokens), tokenizer.pad_id, np.int32)
  lengths = np.zeros((len(completions),), np.int32)
  for row, text in enumerate(completions):
    ids = (tokenizer.encode(text) + [tokenizer.eos_id])[:max_new_tokens]
    tokens[row, :len(ids)] = ids
    lengths[row] = len(ids)
  return batch.tokens, batch.lengths, tokens, lengths


def score_texts(reward: Reward | Callable, tokenizer: Tokenizer, prompts: Sequence[str],
                completions: Sequence[str], *, max_new_tokens: int) -> np.ndarray:
  """Any reward form on text pairs -> float32 [B], checked (JAX forms run on their tokens)."""
  reward = as_reward(reward)
  if reward.form in ("text", "batched"):
    return call_python(reward, prompts, completions)
  if reward.form == "step":
    return np.asarray(step_sums(reward, list(prompts), list(completions)), np.float32)
  clear_pending()
  values = np.asarray(jax.jit(token_reward(reward, tokenizer))(
      *encode_pairs(tokenizer, prompts, completions, max_new_tokens)))
  raise_pending()
  return values
