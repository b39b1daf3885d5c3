"""Tasks over one random string: sort it, reverse it."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from tokenzero.tasks.base import (Task, TaskError, eos_then_pad, positional_credit,
                                  positional_credit_tokens, register)
from tokenzero.tokenizer import CharTokenizer


@dataclasses.dataclass(frozen=True)
class _OneString(Task):
  """A prompt of at most `length` symbols (then SEP) and an answer as long (then EOS)."""
  size_param: ClassVar[str] = "length"
  length: int = 5

  def __post_init__(self):
    if self.length < 1:
      raise TaskError(f"{self.name}: length must be >= 1, got {self.length}")

  @property
  def prompt_len(self) -> int:
    return self.length + 1

  @property
  def max_new_tokens(self) -> int:
    return self.length + 1


@register
@dataclasses.dataclass(frozen=True)
class Sort(_OneString):
  """Prompt: `length` random digits. Answer: the same digits in ascending order."""
  name: ClassVar[str] = "sort"
  description: ClassVar[str] = "sort N random digits ascending"

  @property
  def tokenizer(self) -> CharTokenizer:
    return CharTokenizer("0123456789")

  def sample(self, rng, n):
    digits = rng.integers(0, 10, size=(n, self.length))
    return ["".join(map(str, row)) for row in digits]

  def instance_key(self, prompt):
    # Every order of the same digits asks for the same answer: one instance.
    return "".join(sorted(prompt))

  def score(self, prompt, completion):
    return positional_credit(completion, "".join(sorted(prompt)), self.max_new_tokens)

  def jax_reward(self):
    tokenizer = self.tokenizer
    width = self.max_new_tokens

    def reward(prompt, prompt_len, completion, completion_len):
      del completion_len
      # The digits fill the first prompt_len - 1 slots: `length` of them, or fewer for a
      # curriculum level's shorter prompt. Past them (SEP, PAD) sorts last, then is cut.
      length = prompt_len - 1
      cols = jnp.arange(prompt.shape[1])[None, :]
      last = jnp.iinfo(prompt.dtype).max
      digits = jnp.sort(jnp.where(cols < length[:, None], prompt, last), axis=-1)
      digits = jnp.pad(digits, ((0, 0), (0, max(0, width - digits.shape[1]))))
      target = eos_then_pad(digits, length, width, tokenizer.eos_id, tokenizer.pad_id)
      return positional_credit_tokens(completion[:, :width], target)

    return reward


@register
@dataclasses.dataclass(frozen=True)
class Reverse(_OneString):
  """Prompt: a random string of `min_length`..`length` symbols. Answer: it backwards."""
  name: ClassVar[str] = "reverse"
  description: ClassVar[str] = "write a random string backwards"
  min_length: int = 0  # 0: every prompt has `length` symbols.
  alphabet: str = "0123456789"

  def __post_init__(self):
    super().__post_init__()
    if not 0 <= self.min_length <= self.length:
      raise TaskError(f"reverse: min_length must be in [0, length={self.length}], "
                      f"got {self.min_length}")
    CharTokenizer(self.alphabet)  # rejects an empty or repeating alphabet early.

  def size_fields(self, size):
    return {"length": size, "min_length": min(self.min_length, size)}

  @property
  def tokenizer(self) -> CharTokenizer:
    return CharTokenizer(self.alphabet)

  def sample(self, rng, n):
    lengths = rng.integers(self.min_length or self.length, self.length + 1, size=n)
    symbols = np.array(list(self.alphabet))
    return ["".join(rng.choice(symbols, size=int(k))) for k in lengths]

  def score(self, prompt, completion):
    return positional_credit(completion, prompt[::-1], self.max_new_tokens)

  def jax_reward(self):
    tokenizer = self.tokenizer
    width = self.max_new_tokens

    def reward(prompt, prompt_len, completion, completion_len):
      del completion_len
      length = prompt_len - 1  # SEP ends the prompt.
      cols = jnp.arange(width)[None, :]
      source = jnp.clip(length[:, None] - 1 - cols, 0, prompt.shape[1] - 1)
      backwards = jnp.take_along_axis(prompt, source, axis=1)
      target = eos_then_pad(backwards, length, width, tokenizer.eos_id, tokenizer.pad_id)
      return positional_credit_tokens(completion[:, :width], target)

    return reward
