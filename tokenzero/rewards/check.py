"""The contract check users run on their reward: `tokenzero check-reward file.py:function`.

`check_reward` loads a reward, calls it on sample completions, checks the types, finiteness and
batch consistency of its values, times it, and says what it found (`RewardCheck.verdict`).

Dimension letters: B batch (the sample completions), P prompt slots, T answer budget.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Sequence

import jax
import numpy as np

from tokenzero.rewards.errors import RewardError, clear_pending, describe_pair, raise_pending
from tokenzero.rewards.host import call_python
from tokenzero.rewards.on_tokens import encode_pairs, token_reward
from tokenzero.rewards.plugin import Reward, as_reward, load_reward
from tokenzero.tokenizer import CharTokenizer, Tokenizer, from_spec


@dataclasses.dataclass(frozen=True)
class RewardCheck:
  ok: bool
  verdict: str  # what `tokenzero check-reward` prints
  values: tuple[float, ...]  # the reward on the sample completions
  seconds_per_call: float  # one call over the sample batch


def _sample_completions(rng: np.random.Generator, prompts: Sequence[str], symbols: str,
                        max_new_tokens: int, count: int) -> tuple[list[str], list[str]]:
  """`count` (prompt, completion) pairs: empty, the prompt echoed, and random strings of
  `symbols`."""
  pairs_p, pairs_c = [], []
  for i in range(count):
    prompt = prompts[i % len(prompts)]
    if i == 0:
      completion = ""
    elif i == 1:
      completion = prompt[:max_new_tokens - 1]
    else:
      length = int(rng.integers(1, max(2, max_new_tokens)))
      completion = "".join(rng.choice(list(symbols), size=length))
    pairs_p.append(prompt)
    pairs_c.append(completion)
  return pairs_p, pairs_c


def check_reward(fn: Callable | Reward | str, prompts: Sequence[str], *,
                 tokenizer: Tokenizer | str | None = None, alphabet: str = "",
                 max_new_tokens: int = 16, num_completions: int = 32,
                 seed: int = 0) -> RewardCheck:
  """Contract check of a reward on sample completions: loads it, calls it, checks the types,
  finiteness and batch consistency of its values, times it, and says what it found.

  `tokenizer` (or, by default, characters of the prompts plus `alphabet`) decides what the
  sample completions are made of, as the model would write them.
  """
  lines: list[str] = []
  try:
    reward = load_reward(fn) if isinstance(fn, str) else as_reward(fn)
  except RewardError as err:
    return RewardCheck(False, f"FAIL: {err}", (), math.nan)
  prompts = list(prompts)
  if not prompts:
    return RewardCheck(False, f"FAIL: no prompts to check reward {reward.describe()} on", (),
                       math.nan)
  if isinstance(tokenizer, str):
    tokenizer = from_spec(tokenizer)
  if tokenizer is None:
    tokenizer = CharTokenizer("".join(sorted(set("".join(prompts)) | set(alphabet))))
  if isinstance(tokenizer, CharTokenizer):
    symbols = tokenizer.alphabet
  else:
    symbols = "".join(sorted(set("".join(prompts)) | set(alphabet))) or "ab"
  rng = np.random.default_rng(seed)
  batch_p, batch_c = _sample_completions(rng, prompts, symbols, max_new_tokens,
                                         max(num_completions, 2))
  head = f"reward {reward.describe()}"
  try:
    if reward.is_jax:
      values, seconds, consistent = _check_jax(reward, tokenizer, batch_p, batch_c,
                                               max_new_tokens)
    else:
      values, seconds, consistent = _check_python(reward, batch_p, batch_c)
  except RewardError as err:
    return RewardCheck(False, f"FAIL: {err}", (), math.nan)
  except Exception as err:  # a JAX reward that does not trace or jit
    return RewardCheck(False, f"FAIL: {head} could not run on tokens: "
                       f"{type(err).__name__}: {err}", (), math.nan)
  lines.append(f"{len(values)} sample completions, values in [{values.min():.4g}, "
               f"{values.max():.4g}], mean {values.mean():.4g}")
  lines.append(f"time: {seconds * 1e3:.3g} ms per call on a batch of {len(values)} "
               f"({seconds / len(values) * 1e6:.3g} us per completion)")
  ok = True
  if consistent is not None:
    ok = False
    lines.append(f"not batch-consistent: {consistent}")
  if values.min() < 0.0 or values.max() > 1.0:
    lines.append("note: values outside [0, 1]; success is reward >= task.success_threshold "
                 "(default 1.0)")
  if not reward.is_jax and seconds / len(values) > 0.01:
    lines.append("note: over 10 ms per completion; the search calls the reward every "
                 "simulation, so training will be slow")
  verdict = ("PASS: " if ok else "FAIL: ") + head + "\n  " + "\n  ".join(lines)
  return RewardCheck(ok, verdict, tuple(float(v) for v in values), seconds)


def _check_python(reward: Reward, prompts, completions):
  start = time.perf_counter()
  values = call_python(reward, prompts, completions)
  seconds = time.perf_counter() - start
  # Same pairs, reversed order and one at a time: a reward must not depend on its batch.
  again = call_python(reward, prompts[::-1], completions[::-1])[::-1]
  alone = np.concatenate([call_python(reward, [p], [c]) for p, c in zip(prompts, completions)])
  for other, how in ((again, "in reversed order"), (alone, "one at a time")):
    diff = np.flatnonzero(~np.isclose(values, other, rtol=1e-5, atol=1e-6))
    if diff.size:
      i = int(diff[0])
      return values, seconds, (f"{describe_pair(prompts[i], completions[i])} scored "
                               f"{values[i]:.6g} in the batch but {other[i]:.6g} {how}")
  return values, seconds, None


def _check_jax(reward: Reward, tokenizer: Tokenizer, prompts, completions, max_new_tokens):
  fn = jax.jit(token_reward(reward, tokenizer))
  args = encode_pairs(tokenizer, prompts, completions, max_new_tokens)
  clear_pending()
  jax.block_until_ready(fn(*args))  # compile
  start = time.perf_counter()
  values = np.asarray(jax.block_until_ready(fn(*args)))
  seconds = time.perf_counter() - start
  raise_pending()
  order = np.arange(len(completions))[::-1]
  again = np.asarray(fn(*(a[order] for a in args)))[order]
  raise_pending()
  diff = np.flatnonzero(~np.isclose(values, again, rtol=1e-5, atol=1e-6))
  if diff.size:
    i = int(diff[0])
    return values, seconds, (f"{describe_pair(prompts[i], completions[i])} scored "
                             f"{values[i]:.6g} in the batch but {again[i]:.6g} with the rows "
                             "reversed")
  return values, seconds, None
