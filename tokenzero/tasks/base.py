"""The task interface, its reward on tokens, the task registry, and shared partial credit.

A task speaks text (`sample`, `score`) so that users can read and extend it; it may also offer a
`jax_reward` on tokens, which runs inline in the jitted search instead of through a host
callback. Built-in tasks register themselves in `TASKS`; `make_task(name, params)` builds one.
Dimension letters: B batch, P prompt slots, T answer budget.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, ClassVar, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tokenzero.errors import TaskError
from tokenzero.rewards import TokenReward, host_token_reward
from tokenzero.tokenizer import Tokenizer

_PAD_TEXT, _EOS_TEXT = "<pad>", "<eos>"
# The evaluation bucket: about this fraction of every task's instances is held out.
HELD_OUT_FRACTION = 0.1
# Salts the hash, so that the bucket is tokenzero's own and not some other tool's.
_BUCKET_SALT = b"tokenzero.eval"


def in_eval_bucket(key: str) -> bool:
  """Whether the instance `key` is held out: its stable hash (blake2b; never Python's `hash`,
  which changes per process) falls in the evaluation bucket. The same on every machine, for
  every sampler, count and resume."""
  digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, key=_BUCKET_SALT).digest()
  return int.from_bytes(digest, "big") < HELD_OUT_FRACTION * 2**64


@dataclasses.dataclass(frozen=True)
class Task:
  """Base class of tasks. Subclasses are frozen dataclasses whose fields are their parameters."""
  name: ClassVar[str] = ""
  description: ClassVar[str] = ""
  # The parameter that sets the task's size, for `task.curriculum` ("": the task has none), and
  # the smallest size it takes.
  size_param: ClassVar[str] = ""
  min_size: ClassVar[int] = 1

  @property
  def tokenizer(self) -> Tokenizer:
    raise NotImplementedError

  @property
  def prompt_len(self) -> int:
    """Most prompt tokens, SEP included."""
    raise NotImplementedError

  @property
  def max_new_tokens(self) -> int:
    """Answer length budget, EOS included."""
    raise NotImplementedError

  def sample(self, rng: np.random.Generator, n: int) -> list[str]:
    """`n` prompt texts."""
    raise NotImplementedError

  def score(self, prompt: str, completion: str) -> float:
    """Partial-credit reward in [0, 1] for a decoded completion (EOS stripped)."""
    raise NotImplementedError

  def score_batch(self, prompts: Sequence[str], completions: Sequence[str]) -> Sequence[float]:
    """`score` over lists; the host callback calls this once per search simulation."""
    return [self.score(p, c) for p, c in zip(prompts, completions)]

  def verify(self, prompt: str, completion: str) -> bool:
    """Exact verifier: is this completion a right answer?"""
    return self.score(prompt, completion) >= 1.0

  def jax_reward(self) -> TokenReward | None:
    """Optional in-graph reward equal to `score` on tokens; None means host callback."""
    return None

  def longest_prompt(self) -> str | None:
    """The text of the prompt that sets `prompt_len`, for errors that name it (None: the task
    generates its prompts, and every one fits)."""
    return None

  def held_out(self) -> list[str] | None:
    """A fixed evaluation prompt set, for tasks that have one (a prompts file); None: sample."""
    return None

  def instance_key(self, prompt: str) -> str:
    """What must not be seen in training when `prompt` is held out: the prompt itself, unless
    other prompts pose the same problem (anagram: every scramble of the same letters)."""
    return prompt

  def is_held_out(self, prompt: str) -> bool:
    """Whether `prompt` belongs to the evaluation instances: its `instance_key` is in the
    evaluation bucket. Training never sees one; evaluation sees nothing else. A task whose few
    prompts carry most of its mass narrows this, so that training keeps most of it."""
    return in_eval_bucket(self.instance_key(prompt))

  def size_range(self) -> tuple[int, int]:
    """(smallest, own) size of the task, the curriculum's levels; only for a task with a
    `size_param`."""
    if not self.size_param:
      raise TaskError(f"task {self.name!r} has no size parameter")
    return self.min_size, getattr(self, self.size_param)

  def at_size(self, size: int) -> Task:
    """This task at a smaller `size` (in `size_range()`), a curriculum level. Its prompts are
    prompts of this task: they fit this task's `prompt_len`, encode with its tokenizer, and this
    task's reward scores them as the level's verifier would, so that a level changes neither
    the network's shapes nor the compiled reward."""
    low, high = self.size_range()
    if not low <= size <= high:
      raise TaskError(f"{self.name}: size {size} is outside {low}..{high}")
    return dataclasses.replace(self, **self.size_fields(size))

  def size_fields(self, size: int) -> dict[str, Any]:
    """The parameters that change at `size` (a task whose other bounds follow overrides it)."""
    return {self.size_param: size}

  @property
  def reward_name(self) -> str:
    """How errors name this task's reward."""
    return f"{self.name}.score"


@functools.lru_cache(maxsize=64)  # one function per task, so jitted callers compile once.
def task_token_reward(task: Task) -> TokenReward:
  """The task's JAX reward when it has one, else its `score_batch` through a host callback."""
  fast = task.jax_reward()
  if fast is not None:
    return fast
  return host_token_reward(task.reward_name, task.score_batch, task.tokenizer)


def positional_credit(completion: str, target: str, max_new_tokens: int) -> float:
  """Fraction of the `max_new_tokens` answer positions that are right, as on tokens.

  Both sides are laid out as the decoder writes them: the answer, EOS, then PAD up to the
  budget. A completion shorter than the budget ended with EOS; one of full length ran out
  without it. Equals 1 exactly when the completion is `target` (then EOS, within budget).
  """
  ended = len(completion) < max_new_tokens
  produced = list(completion) + ([_EOS_TEXT] if ended else [])
  wanted = list(target) + [_EOS_TEXT]
  produced += [_PAD_TEXT] * (max_new_tokens - len(produced))
  wanted += [_PAD_TEXT] * (max_new_tokens - len(wanted))
  right = sum(1 for a, b in zip(produced[:max_new_tokens], wanted[:max_new_tokens]) if a == b)
  return right / max_new_tokens


def positional_credit_tokens(completion: jax.Array, target: jax.Array) -> jax.Array:
  """Token version of `positional_credit`: completion, target [B, T] (EOS, then PAD) -> [B]."""
  return jnp.mean((completion == target).astype(jnp.float32), axis=-1)


def eos_then_pad(values: jax.Array, length: jax.Array, width: int, eos_id: int,
                 pad_id: int) -> jax.Array:
  """Target row layout: values[:, j] for j < length, EOS at `length`, PAD after -> [B, width].

  values [B, >= width] (only the first `length` columns are read); length [B].
  """
  cols = jnp.arange(width)[None, :]
  out = jnp.where(cols < length[:, None], values[:, :width], pad_id)
  return jnp.where(cols == length[:, None], eos_id, out).astype(values.dtype)


def decoded_symbols(tokens: jax.Array, length: jax.Array, *, eos_id: int, pad_id: int,
                    first_symbol: int) -> tuple[jax.Array, jax.Array]:
  """The tokens of the text that the tokenizer's `decode` gives, moved to the front.

  `decode` reads the first `length` [B] of `tokens` [B, W] up to the first EOS and drops the
  specials (ids below `first_symbol`); a reward equal to `score` must see that text, whatever
  the layout of the tokens. -> (symbols [B, W], PAD after the `count` [B] kept ones; count).
  """
  cols = jnp.arange(tokens.shape[1])
  before_eos = jnp.cumsum(tokens == eos_id, axis=1) == 0
  keep = (cols[None, :] < length[:, None]) & before_eos & (tokens >= first_symbol)
  slot = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, -1)  # [B, W] where each one goes
  # A one-hot [B, W, W] sum rather than a scatter: W is an answer's length, and XLA compiles
  # this several times faster.
  moved = jnp.sum(jnp.where(slot[:, :, None] == cols[None, None, :], tokens[:, :, None], 0),
                  axis=1)
  count = jnp.sum(keep, axis=1, dtype=jnp.int32)
  return jnp.where(cols[None, :] < count[:, None], moved, pad_id).astype(tokens.dtype), count


TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
  """Class decorator adding a task to `TASKS`."""
  TASKS[cls.name] = cls
  return cls


def task_params(cls: type[Task]) -> dict[str, Any]:
  """Parameter name -> default of a task class."""
  return {f.name: f.default for f in dataclasses.fields(cls) if f.init}


def make_task(name: str, params: Mapping[str, Any] | None = None) -> Task:
  if name not in TASKS:
    raise TaskError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
  cls = TASKS[name]
  known = task_params(cls)
  params = dict(params or {})
  unknown = sorted(set(params) - set(known))
  if unknown:
    raise TaskError(f"task {name!r} has no parameter(s) {unknown}; it takes {sorted(known)}")
  for key, value in params.items():
    default = known[key]
    if default is not None and not isinstance(value, type(default)):
      if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        params[key] = float(value)
      else:
        raise TaskError(f"task {name!r} parameter {key!r} wants {type(default).__name__}, "
                        f"got {value!r}")
  return cls(**params)


def describe_tasks() -> str:
  """What `tokenzero tasks` prints: each task, what it asks, its parameters and defaults."""
  lines = []
  for name in sorted(TASKS):
    cls = TASKS[name]
    size = f" (task.curriculum grows {cls.size_param})" if cls.size_param else ""
    lines.append(f"{name}: {cls.description}{size}")
    for key, default in task_params(cls).items():
      lines.append(f"    task.params.{key} = {default!r}")
  return "\n".join(lines)
