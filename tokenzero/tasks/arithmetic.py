"""Multi-digit addition, the answer written most- or least-significant digit first."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from tokenzero.tasks.base import (Task, TaskError, eos_then_pad, positional_credit,
                                  positional_credit_tokens, register)
from tokenzero.tokenizer import CharTokenizer

_ALPHABET = "0123456789+"
_MAX_JAX_DIGITS = 9  # int32 holds the sum of two 9-digit numbers; longer ones use the callback.


def _operand(rng, min_digits: int, max_digits: int) -> int:
  digits = int(rng.integers(min_digits, max_digits + 1))
  low = 0 if digits == 1 else 10 ** (digits - 1)
  return int(rng.integers(low, 10 ** digits))


@register
@dataclasses.dataclass(frozen=True)
class Addition(Task):
  """Prompt: `a+b` with operands of `min_digits`..`digits` digits. Answer: the sum.

  `answer_reversed=True` writes the sum least-significant digit first, the order in which
  carries are computed, which a small model learns far more easily.
  """
  name: ClassVar[str] = "addition"
  description: ClassVar[str] = "add two multi-digit numbers (answer optionally reversed)"
  size_param: ClassVar[str] = "digits"
  digits: int = 3
  min_digits: int = 1
  answer_reversed: bool = True

  def __post_init__(self):
    if self.digits < 1:
      raise TaskError(f"addition: digits must be >= 1, got {self.digits}")
    if not 1 <= self.min_digits <= self.digits:
      raise TaskError(f"addition: min_digits must be in [1, digits={self.digits}], "
                      f"got {self.min_digits}")

  def size_fields(self, size):
    # A level keeps the shorter operands too: 1..size digits when min_digits is 1.
    return {"digits": size, "min_digits": min(self.min_digits, size)}

  @property
  def tokenizer(self) -> CharTokenizer:
    return CharTokenizer(_ALPHABET)

  @property
  def prompt_len(self) -> int:
    return 2 * self.digits + 2

  @property
  def max_new_tokens(self) -> int:
    return self.digits + 2  # a carry can add a digit; then EOS.

  def sample(self, rng, n):
    return [f"{_operand(rng, self.min_digits, self.digits)}+"
            f"{_operand(rng, self.min_digits, self.digits)}" for _ in range(n)]

  def instance_key(self, prompt):
    # b+a asks for the sum of a+b: one instance, held out (or not) together.
    return "+".join(sorted(prompt.split("+")))

  def answer(self, prompt: str) -> str:
    left, right = prompt.split("+")
    total = str(int(left) + int(right))
    return total[::-1] if self.answer_reversed else total

  def score(self, prompt, completion):
    return positional_credit(completion, self.answer(prompt), self.max_new_tokens)

  def jax_reward(self):
    if self.digits > _MAX_JAX_DIGITS:
      return None
    tokenizer = self.tokenizer
    zero_id, plus_id = tokenizer.encode("0+")
    width = self.max_new_tokens
    powers = jnp.asarray([10 ** k for k in range(_MAX_JAX_DIGITS + 1)], jnp.int32)

    def reward(prompt, prompt_len, completion, completion_len):
      del completion_len
      length = prompt_len[:, None] - 1  # SEP ends the prompt.
      cols = jnp.arange(prompt.shape[1])[None, :]
      plus = jnp.argmax(prompt == plus_id, axis=1)[:, None]
      digit = jnp.clip(prompt - zero_id, 0, 9)
      # Place value of each digit within its operand (clipped where the mask zeroes it anyway).
      exponent = jnp.where(cols < plus, plus - 1 - cols, length - 1 - cols)
      is_digit = (cols != plus) & (cols < length)
      place = powers[jnp.clip(exponent, 0, _MAX_JAX_DIGITS)]
      total = jnp.sum(jnp.where(is_digit, digit * place, 0), axis=1)  # [B]
      num_digits = 1 + jnp.sum(total[:, None] >= powers[None, 1:], axis=1)
      k = jnp.arange(width)[None, :]
      if not self.answer_reversed:
        k = num_digits[:, None] - 1 - k  # most significant first
      sum_digits = (total[:, None] // powers[jnp.clip(k, 0, _MAX_JAX_DIGITS)]) % 10
      target = eos_then_pad((sum_digits + zero_id).astype(completion.dtype), num_digits, width,
                            tokenizer.eos_id, tokenizer.pad_id)
      return positional_credit_tokens(completion[:, :width], target)

    return reward
