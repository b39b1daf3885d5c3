"""Rewards as plug-ins: any Python or JAX function, checked, inside the jitted search.

Three forms of outcome reward, told apart by a marker a decorator sets:

- plain Python, one completion at a time: `def reward(prompt: str, completion: str) -> float`;
- `@batched_reward`: `def reward(prompts: list[str], completions: list[str]) -> Sequence[float]`;
- `@jax_reward`: `def reward(tokens [B, T], lengths [B]) -> [B]`, jittable, on the completion
  tokens (`lengths` counts the EOS); `@jax_reward(with_prompt=True)` takes the whole
  `TokenReward` signature `(prompt [B, P], prompt_len [B], completion [B, T], completion_len [B])`.

and two optional per-step (process) forms, paid once per answer token: `@step_reward` on
`def reward(prompt: str, partial: str) -> float` and `@jax_step_reward` on
`(tokens [B, T], lengths [B]) -> [B, T]`. `add_rewards` sums them into the outcome.

Python rewards run on the host through `jax.pure_callback`: one call per search simulation
over the rows whose completion has ended (the only rows whose reward the search uses), and
once at each episode's end. JAX rewards run inline.

Bad values never pass silently. A Python reward that raises or returns None, a string, NaN,
inf or the wrong number of values becomes a `RewardError` naming the reward, the prompt, the
completion and the value. Inside a callback the error is recorded here and the callback
returns zeros (an exception raised inside XLA reaches the caller as an opaque runtime error);
the caller re-raises it with `raise_pending()` after blocking on the results, or wraps the
work in `with reward_errors():`, which also turns an XLA runtime error back into the
recorded `RewardError`.

Trust boundary: `load_reward("file.py:function")` imports and runs the user's file in this
process, with this process's permissions. A reward file is code, not data: load only files
you would run yourself.

Dimension letters: B batch, P prompt slots, T answer budget, V vocab.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import math
import numbers
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp

import numpy as np

from tokenzero.tokenizer import CharTokenizer, Tokenizer, from_spec

if TYPE_CHECKING:
  from tokenzero.tasks import Task

# (prompt [B, P], prompt_len [B], completion [B, T], completion_len [B]) -> reward [B] float32.
# Completions are the generated tokens, PAD after the end; completion_len counts the EOS.
TokenReward = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]

_MARK = "__tokenzero_reward__"
_FORMS = ("text", "batched", "jax", "step", "jax_step")
_FORM_NAMES = {"text": "Python, one completion at a time", "batched": "batched Python",
               "jax": "JAX on tokens", "step": "per-step Python",
               "jax_step": "per-step JAX on tokens"}
_SHOW = 120  # characters of a prompt or completion quoted in an error.


class RewardError(ValueError):
  """A reward function that cannot be loaded or that misbehaved on some input."""

  def __init__(self, message: str, *, reward_name: str = "", prompt: str | None = None,
               completion: str | None = None, value: Any = None):
    super().__init__(message)
    self.reward_name = reward_name
    self.prompt = prompt
    self.completion = completion
    self.value = value


# ---------------------------------------------------------------------------------------------
# Markers and the normalised form.


def batched_reward(fn: Callable) -> Callable:
  """Marks `fn(prompts: list[str], completions: list[str]) -> Sequence[float]`."""
  setattr(fn, _MARK, ("batched", False))
  return fn


def jax_reward(fn: Callable | None = None, *, with_prompt: bool = False):
  """Marks a jittable `fn(tokens [B, T], lengths [B]) -> [B]` over completion tokens.

  `with_prompt=True`: `fn(prompt [B, P], prompt_len [B], completion [B, T], completion_len [B])`.
  Usable bare (`@jax_reward`) or called (`@jax_reward(with_prompt=True)`).
  """
  def mark(f):
    setattr(f, _MARK, ("jax", with_prompt))
    return f
  return mark if fn is None else mark(fn)


def step_reward(fn: Callable) -> Callable:
  """Marks a per-step `fn(prompt: str, partial: str) -> float`, called on every prefix."""
  setattr(fn, _MARK, ("step", False))
  return fn


def jax_step_reward(fn: Callable) -> Callable:
  """Marks a per-step jittable `fn(tokens [B, T], lengths [B]) -> [B, T]` (reward per token)."""
  setattr(fn, _MARK, ("jax_step", False))
  return fn


@dataclasses.dataclass(frozen=True)
class Reward:
  """A user reward with its form and the name errors call it by."""
  fn: Callable
  form: str  # one of _FORMS
  name: str
  with_prompt: bool = False  # JAX outcome rewards only

  def __post_init__(self):
    if self.form not in _FORMS:
      raise RewardError(f"reward form must be one of {_FORMS}, got {self.form!r}")

  @property
  def is_jax(self) -> bool:
    return self.form in ("jax", "jax_step")

  def describe(self) -> str:
    return f"'{self.name}' ({_FORM_NAMES[self.form]})"


def as_reward(fn: Callable | Reward, name: str | None = None) -> Reward:
  """A callable (marked by a decorator, or plain text form) -> `Reward`."""
  if isinstance(fn, Reward):
    return fn
  if not callable(fn):
    raise RewardError(f"a reward must be a function, got {fn!r}")
  form, with_prompt = getattr(fn, _MARK, ("text", False))
  name = name or getattr(fn, "__name__", None) or repr(fn)
  return Reward(fn, form, name, with_prompt)


def load_reward(spec: str) -> Reward:
  """`"path/to/file.py:function"` -> the `Reward` it names. Runs the file: see the trust note."""
  path_text, sep, func_name = spec.rpartition(":")
  if not sep or not path_text or not func_name:
    raise RewardError(f"reward {spec!r} is not of the form path/to/file.py:function")
  path = Path(path_text)
  if not path.is_file():
    raise RewardError(f"reward file '{path}' does not exist (from {spec!r})", reward_name=spec)
  module_name = f"tokenzero_user_reward_{abs(hash(str(path.resolve())))}"
  module_spec = importlib.util.spec_from_file_location(module_name, path)
  if module_spec is None or module_spec.loader is None:
    raise RewardError(f"reward file '{path}' cannot be imported as Python", reward_name=spec)
  module = importlib.util.module_from_spec(module_spec)
  sys.modules[module_name] = module  # dataclasses and pickling inside the file need this.
  try:
    module_spec.loader.exec_module(module)
  except Exception as err:
    del sys.modules[module_name]
    raise RewardError(f"importing reward file '{path}' raised {type(err).__name__}: {err}",
                      reward_name=spec) from err
  fn = getattr(module, func_name, None)
  if fn is None:
    defined = sorted(k for k, v in vars(module).items()
                     if callable(v) and not k.startswith("_")
                     and getattr(v, "__module__", None) == module_name)
    raise RewardError(f"reward file '{path}' has no function '{func_name}'; it defines: "
                      f"{', '.join(defined) or 'no functions'}", reward_name=spec)
  if not callable(fn):
    raise RewardError(f"'{func_name}' in reward file '{path}' is a {type(fn).__name__}, not a "
                      "function", reward_name=spec)
  return as_reward(fn, name=spec)


# ---------------------------------------------------------------------------------------------
# Calling Python rewards, with every value checked.


def _show(text: str | None) -> str:
  if text is None:
    return "?"
  return repr(text if len(text) <= _SHOW else text[:_SHOW] + "...")


def _where(prompt, completion) -> str:
  return f"prompt {_show(prompt)} and completion {_show(completion)}"


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
        f"{_where(prompt, completion)}; a reward must return a finite float",
        reward_name=name, prompt=prompt, completion=completion, value=value)
  if not math.isfinite(number):
    raise RewardError(
        f"reward '{name}' returned {number} for {_where(prompt, completion)}; a reward must "
        "return a finite float", reward_name=name, prompt=prompt, completion=completion,
        value=value)
  return number


def _raised(name: str, err: Exception, prompt, completion) -> RewardError:
  return RewardError(f"reward '{name}' raised {type(err).__name__}: {err} on "
                     f"{_where(prompt, completion)}", reward_name=name, prompt=prompt,
                     completion=completion, value=err)


def checked_batch(name: str, fn: Callable, prompts: Sequence[str],
                  completions: Sequence[str], *, single: Callable | None = None) -> np.ndarray:
  """Calls a batched `fn(prompts, completions)` and checks its values -> float32 [N].

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
        f"completions (the first: {_where(*first)})", reward_name=name, prompt=first[0],
        completion=first[1], value=err) from err
  first = (prompts[0], completions[0]) if prompts else (None, None)
  if values is None or isinstance(values, (str, bytes, numbers.Number)) or not hasattr(
      values, "__len__"):
    raise RewardError(
        f"reward '{name}' returned {values!r} for a batch of {len(prompts)} completions (the "
        f"first: {_where(*first)}); a batched reward must return one float per completion",
        reward_name=name, prompt=first[0], completion=first[1], value=values)
  values = list(np.asarray(values)) if hasattr(values, "__array__") else list(values)
  if len(values) != len(prompts):
    raise RewardError(
        f"reward '{name}' returned {len(values)} values for {len(prompts)} completions (the "
        f"first: {_where(*first)}); a batched reward must return one float per completion",
        reward_name=name, prompt=first[0], completion=first[1], value=values)
  return np.asarray([_to_float(name, v, p, c) for v, p, c in zip(values, prompts, completions)],
                    np.float32)


def call_python(reward: Reward, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
  """Values of a Python reward (text or batched) on text pairs -> float32 [N], all checked."""
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


# ---------------------------------------------------------------------------------------------
# The error slot: errors raised inside host callbacks, re-raised on the caller's side.

_lock = threading.Lock()
_pending: list[tuple[object, RewardError]] = []  # at most one: (owner, error)


def _record(owner: object, err: RewardError) -> None:
  with _lock:
    if not _pending:
      _pending.append((owner, err))


def _failed(owner: object) -> bool:
  with _lock:
    return bool(_pending) and _pending[0][0] is owner


def pending() -> RewardError | None:
  """The recorded, not yet raised reward error, if any."""
  with _lock:
    return _pending[0][1] if _pending else None


def clear_pending() -> None:
  with _lock:
    _pending.clear()


def raise_pending() -> None:
  """Re-raises, on the caller's side, the first error a host reward recorded inside a callback.

  Call it after blocking on the results of a jitted call that evaluated rewards. Once an error
  is recorded, that reward's callbacks return zeros without calling the user function again,
  so the computation finishes fast and its results must be discarded.
  """
  with _lock:
    if not _pending:
      return
    _, err = _pending.pop()
  err.__suppress_context__ = True
  raise err


@contextlib.contextmanager
def reward_errors() -> Iterator[None]:
  """Runs a block that evaluates rewards; raises the recorded `RewardError` at its end.

  A runtime error out of XLA (a callback that raised by itself) is replaced by the recorded
  error when there is one. Block on the block's results inside it.
  """
  clear_pending()
  try:
    yield
  except RewardError:
    raise
  except Exception:
    raise_pending()
    raise
  jax.effects_barrier()
  raise_pending()


# ---------------------------------------------------------------------------------------------
# From a reward to a `TokenReward` on tokens.


def ended_rows(completion: jax.Array, completion_len: jax.Array, eos_id: int) -> jax.Array:
  """[B] bool: the completion ended (its last token is EOS, or it used the whole budget)."""
  last = jnp.take_along_axis(completion, jnp.clip(completion_len - 1, 0)[:, None], axis=1)[:, 0]
  return (completion_len >= completion.shape[1]) | ((completion_len > 0) & (last == eos_id))


def _ended_np(completion: np.ndarray, completion_len: np.ndarray, eos_id: int) -> np.ndarray:
  rows = np.arange(completion.shape[0])
  last = completion[rows, np.clip(completion_len - 1, 0, completion.shape[1] - 1)]
  return (completion_len >= completion.shape[1]) | ((completion_len > 0) & (last == eos_id))


def host_token_reward(name: str, score_batch: Callable[[list[str], list[str]], Any],
                      tokenizer: Tokenizer) -> TokenReward:
  """A `TokenReward` that decodes the ended rows and scores them with one host call.

  `score_batch(prompts, completions) -> Sequence[float]` is checked value by value; on a bad
  value the error is recorded (see `raise_pending`) and the callback returns zeros.
  """
  owner = object()

  def host(prompt, prompt_len, completion, completion_len):
    prompt, prompt_len = np.asarray(prompt), np.asarray(prompt_len)
    completion, completion_len = np.asarray(completion), np.asarray(completion_len)
    out = np.zeros((prompt.shape[0],), np.float32)
    if _failed(owner):
      return out  # the run stops at the next raise_pending(); don't call the reward again.
    rows = np.flatnonzero(_ended_np(completion, completion_len, tokenizer.eos_id))
    if rows.size == 0:
      return out  # no terminal node in this simulation: no reward is used.
    prompts = [tokenizer.decode(prompt[r, :prompt_len[r]]) for r in rows]
    completions = [tokenizer.decode(completion[r, :completion_len[r]]) for r in rows]
    try:
      out[rows] = checked_batch(name, score_batch, prompts, completions)
    except RewardError as err:
      _record(owner, err)
      out[:] = 0.0
    return out

  def reward(prompt, prompt_len, completion, completion_len):
    shape = jax.ShapeDtypeStruct((prompt.shape[0],), jnp.float32)
    return jax.pure_callback(host, shape, prompt, prompt_len, completion, completion_len,
                             vmap_method="sequential")

  return reward


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
    _record(owner, RewardError(
        f"reward '{name}' returned {value} for {_where(text_prompt, text)}; a reward must "
        "return a finite float", reward_name=name, prompt=text_prompt, completion=text,
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
    return host_token_reward(reward.name, lambda p, c: _step_sums(reward, p, c), tokenizer)

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


def _step_sums(reward: Reward, prompts: list[str], completions: list[str]) -> list[float]:
  """Sum over every non-empty prefix of each completion of the per-step reward."""
  pairs = [(p, c[:k]) for p, c in zip(prompts, completions) for k in range(1, len(c) + 1)]
  values = call_python(reward, [p for p, _ in pairs], [c for _, c in pairs])
  sums, start = [], 0
  for c in completions:
    sums.append(float(values[start:start + len(c)].sum()))
    start += len(c)
  return sums


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


def kl_to_reference(logits: jax.Array, reference_logits: jax.Array,
                    mask: jax.Array) -> jax.Array:
  """Per-sequence KL(policy || reference) summed over answer tokens -> [B].

  logits, reference_logits [B, T, V] at each answer step (the reference is the initial
  network); mask [B, T] marks the steps that were taken. The learner adds
  `kl_weight * mean(kl_to_reference(...))` to its loss.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  ref_logp = jax.nn.log_softmax(reference_logits.astype(jnp.float32), axis=-1)
  kl = jnp.sum(jnp.exp(logp) * (logp - ref_logp), axis=-1)
  return jnp.sum(jnp.where(mask, kl, 0.0), axis=-1)


@functools.lru_cache(maxsize=64)  # one function per task, so jitted callers compile once.
def task_token_reward(task: Task) -> TokenReward:
  """The task's JAX reward when it has one, else its `score_batch` through a host callback."""
  fast = task.jax_reward()
  if fast is not None:
    return fast
  return host_token_reward(task.reward_name, task.score_batch, task.tokenizer)


# ---------------------------------------------------------------------------------------------
# The contract check users run on their reward: `tokenzero check-reward file.py:function`.


@dataclasses.dataclass(frozen=True)
class RewardCheck:
  ok: bool
  verdict: str  # what `tokenzero check-reward` prints
  values: tuple[float, ...]  # the reward on the sample completions
  seconds_per_call: float  # one call over the sample batch


def _sample_completions(rng: np.random.Generator, prompts: Sequence[str], symbols: str,
                        max_new_tokens: int, n: int) -> tuple[list[str], list[str]]:
  """n (prompt, completion) pairs: empty, the prompt echoed, and random strings of `symbols`."""
  pairs_p, pairs_c = [], []
  for i in range(n):
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
      return values, seconds, (f"{_where(prompts[i], completions[i])} scored {values[i]:.6g} in "
                               f"the batch but {other[i]:.6g} {how}")
  return values, seconds, None


def encode_pairs(tokenizer: Tokenizer, prompts: Sequence[str], completions: Sequence[str],
                 max_new_tokens: int) -> tuple[np.ndarray, ...]:
  """Text pairs -> the `TokenReward` arguments, as the decoder lays them out: prompt [B, P]
  with SEP, prompt_len [B], completion [B, T] with EOS (if it fits) then PAD, completion_len."""
  from tokenzero.prompts import encode_batch  # the prompts module needs nothing from here.
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
  """Any reward form on text pairs -> float32 [N], checked (JAX forms run on their tokens)."""
  reward = as_reward(reward)
  if reward.form in ("text", "batched"):
    return call_python(reward, prompts, completions)
  if reward.form == "step":
    return np.asarray(_step_sums(reward, list(prompts), list(completions)), np.float32)
  clear_pending()
  values = np.asarray(jax.jit(token_reward(reward, tokenizer))(
      *encode_pairs(tokenizer, prompts, completions, max_new_tokens)))
  raise_pending()
  return values


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
    return values, seconds, (f"{_where(prompts[i], completions[i])} scored {values[i]:.6g} in "
                             f"the batch but {again[i]:.6g} with the rows reversed")
  return values, seconds, None


def check_task_reward(task: Task, *, max_new_tokens: int = 0, num_completions: int = 32,
                      seed: int = 0) -> RewardCheck | None:
  """The pre-training check of a task that wraps a user reward (None for built-in tasks).

  `max_new_tokens`: the run's answer budget (0: the task's own).
  """
  reward = getattr(task, "user_reward", None)
  if reward is None:
    return None
  prompts = task.sample(np.random.default_rng(seed), min(num_completions, 8))
  return check_reward(reward, prompts, tokenizer=task.tokenizer,
                      max_new_tokens=max_new_tokens or task.max_new_tokens,
                      num_completions=num_completions, seed=seed)
