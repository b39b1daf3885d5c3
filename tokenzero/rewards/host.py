"""Python rewards on the host: every value checked, and the `TokenReward` that calls them.

Python rewards run through `jax.pure_callback`: one call per search simulation in which some
row's completion has ended, over those rows only (the only rows whose reward the search uses; a
simulation in which none ended never leaves the device), and once at each episode's end. A bad
value becomes a `RewardError`; inside a callback it is recorded in the error slot
(`tokenzero.rewards.errors`) and the callback returns zeros.

Dimension letters: B batch, P prompt slots, T answer budget.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tokenzero.rewards.errors import RewardError, describe_pair, has_failed, record
from tokenzero.rewards.plugin import Reward, TokenReward
from tokenzero.tokenizer import Tokenizer


def _to_float(name: str, value: Any, prompt: str, completion: str) -> float:
  """One reward value -> float, or a RewardError that says what was wrong with it."""
  number = None
  if isinstance(value, numbers.Real):
    number = float(value)
  elif hasattr(value, "__array__") and not isinstance(value, (str, bytes)):
    array = np.asarray(value)
    if array.size == 1 and array.dtype.kind in "biuf":
      number = float(array.reshape(()))
  if number is None:
    raise RewardError(
        f"reward '{name}' returned {value!r} (a {type(value).__name__}) for "
        f"{describe_pair(prompt, completion)}; a reward must return a finite float",
        reward_name=name, prompt=prompt, completion=completion, value=value)
  if not math.isfinite(number):
    raise RewardError(
        f"reward '{name}' returned {number} for {describe_pair(prompt, completion)}; a reward "
        "must return a finite float", reward_name=name, prompt=prompt, completion=completion,
        value=value)
  return number


def _raised(name: str, err: Exception, prompt, completion) -> RewardError:
  return RewardError(f"reward '{name}' raised {type(err).__name__}: {err} on "
                     f"{describe_pair(prompt, completion)}", reward_name=name, prompt=prompt,
                     completion=completion, value=err)


def checked_batch(name: str, fn: Callable, prompts: Sequence[str],
                  completions: Sequence[str], *, single: Callable | None = None) -> np.ndarray:
  """Calls a batched `fn(prompts, completions)` and checks its values -> float32 [B].

  When the batch call raises, `single(prompt, completion)` (if given) is tried on each pair
  to name the one that fails.
  """
  prompts, completions = list(prompts), list(completions)
  try:
    values = fn(prompts, completions)
  except RewardError:
    raise  # already names the reward and the input.
  except Exception as err:
    if single is not None:
      for prompt, completion in zip(prompts, completions):
        try:
          single(prompt, completion)
        except Exception as one_err:
          raise _raised(name, one_err, prompt, completion) from one_err
    first = (prompts[0], completions[0]) if prompts else (None, None)
    raise RewardError(
        f"reward '{name}' raised {type(err).__name__}: {err} on a batch of {len(prompts)} "
        f"completions (the first: {describe_pair(*first)})", reward_name=name, prompt=first[0],
        completion=first[1], value=err) from err
  first = (prompts[0], completions[0]) if prompts else (None, None)
  if values is None or isinstance(values, (str, bytes, numbers.Number)) or not hasattr(
      values, "__len__"):
    raise RewardError(
        f"reward '{name}' returned {values!r} for a batch of {len(prompts)} completions (the "
        f"first: {describe_pair(*first)}); a batched reward must return one float per "
        "completion", reward_name=name, prompt=first[0], completion=first[1], value=values)
  values = list(np.asarray(values)) if hasattr(values, "__array__") else list(values)
  if len(values) != len(prompts):
    raise RewardError(
        f"reward '{name}' returned {len(values)} values for {len(prompts)} completions (the "
        f"first: {describe_pair(*first)}); a batched reward must return one float per "
        "completion", reward_name=name, prompt=first[0], completion=first[1], value=values)
  return np.asarray([_to_float(name, v, p, c) for v, p, c in zip(values, prompts, completions)],
                    np.float32)


def call_python(reward: Reward, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
  """Values of a Python reward (text or batched) on text pairs -> float32 [B], all checked."""
  if reward.form == "batched":
    return checked_batch(reward.name, reward.fn, prompts, completions,
                         single=lambda p, c: reward.fn([p], [c]))
  if reward.form in ("text", "step"):
    out = []
    for prompt, completion in zip(prompts, completions):
      try:
        value = reward.fn(prompt, completion)
      except Exception as err:
        raise _raised(reward.name, err, prompt, completion) from err
      out.append(_to_float(reward.name, value, prompt, completion))
    return np.asarray(out, np.float32)
  raise RewardError(f"reward {reward.describe()} is not a Python reward")


def step_sums(reward: Reward, prompts: list[str], completions: list[str]) -> list[float]:
  """Sum over every non-empty prefix of each completion of the per-step Python reward."""
  pairs = [(p, c[:k]) for p, c in zip(prompts, completions) for k in range(1, len(c) + 1)]
  values = call_python(reward, [p for p, _ in pairs], [c for _, c in pairs])
  sums, start = [], 0
  for c in completions:
    sums.append(float(values[start:start + len(c)].sum()))
    start += len(c)
  return sums


def ended_rows(completion: jax.Array, completion_len: jax.Array, eos_id: int) -> jax.Array:
  """[B] bool: the completion ended (its last token is EOS, or it used the whole budget)."""
  last = jnp.take_along_axis(completion, jnp.clip(completion_len - 1, 0)[:, None], axis=1)[:, 0]
  return (completion_len >= completion.shape[1]) | ((completion_len > 0) & (last == eos_id))


def _ended_np(completion: np.ndarray, completion_len: np.ndarray, eos_id: int) -> np.ndarray:
  """[B] bool on the host: `ended_rows`, for the callback's numpy arrays."""
  rows = np.arange(completion.shape[0])
  last = completion[rows, np.clip(completion_len - 1, 0, completion.shape[1] - 1)]
  return (completion_len >= completion.shape[1]) | ((completion_len > 0) & (last == eos_id))


def host_token_reward(name: str, score_batch: Callable[[list[str], list[str]], Any],
                      tokenizer: Tokenizer, *, skip_idle: bool = True) -> TokenReward:
  """A `TokenReward` that decodes the ended rows and scores them with one host call.

  `score_batch(prompts, completions) -> Sequence[float]` is checked value by value; on a bad
  value the error is recorded (see `raise_pending`) and the callback returns zeros.
  `skip_idle`: when no row has ended, return zeros on the device without a host call (False:
  call the host every time, to compare; the values are the same).
  """
  owner = object()

  def host(prompt, prompt_len, completion, completion_len):
    prompt, prompt_len = np.asarray(prompt), np.asarray(prompt_len)
    completion, completion_len = np.asarray(completion), np.asarray(completion_len)
    out = np.zeros((prompt.shape[0],), np.float32)
    if has_failed(owner):
      return out  # the run stops at the next raise_pending(); don't call the reward again.
    rows = np.flatnonzero(_ended_np(completion, completion_len, tokenizer.eos_id))
    if rows.size == 0:
      return out  # no terminal node in this simulation: no reward is used.
    prompts = [tokenizer.decode(prompt[r, :prompt_len[r]]) for r in rows]
    completions = [tokenizer.decode(completion[r, :completion_len[r]]) for r in rows]
    try:
      out[rows] = checked_batch(name, score_batch, prompts, completions)
    except RewardError as err:
      record(owner, err)
      out[:] = 0.0
    return out

  def reward(prompt, prompt_len, completion, completion_len):
    shape = jax.ShapeDtypeStruct((prompt.shape[0],), jnp.float32)
    call = lambda: jax.pure_callback(host, shape, prompt, prompt_len, completion,
                                     completion_len, vmap_method="sequential")
    if not skip_idle:
      return call()
    # The search asks at every simulation but uses a reward only where an answer ended; most
    # simulations end none, and the host would return zeros. The cond sits outside the
    # callback, so that the skipped branch never crosses to the host. (Under `vmap` a batched
    # predicate turns the cond into a select that runs both branches: the same values, each
    # row's call made on its own, as `vmap_method="sequential"` says.)
    ended = ended_rows(completion, completion_len, tokenizer.eos_id)
    return jax.lax.cond(jnp.any(ended), call, lambda: jnp.zeros(shape.shape, shape.dtype))

  return reward
