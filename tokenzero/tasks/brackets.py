"""Complete a balanced bracket string: the prompt is a prefix, the answer closes it."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from tokenzero.tasks.base import (Task, TaskError, eos_then_pad, positional_credit,
                                  positional_credit_tokens, register)
from tokenzero.tokenizer import CharTokenizer

_PAIRS = ("()", "[]", "{}", "<>")


def closing(prefix: str, pairs: str = "()[]{}<>") -> str | None:
  """The unique shortest string that balances `prefix`, or None if `prefix` cannot be balanced."""
  opener_of = {pairs[i + 1]: pairs[i] for i in range(0, len(pairs), 2)}
  closer_of = {pairs[i]: pairs[i + 1] for i in range(0, len(pairs), 2)}
  stack = []
  for char in prefix:
    if char in closer_of:
      stack.append(char)
    elif char in opener_of and stack and stack[-1] == opener_of[char]:
      stack.pop()
    else:
      return None
  return "".join(closer_of[c] for c in reversed(stack))


def is_balanced(text: str, pairs: str = "()[]{}<>") -> bool:
  return closing(text, pairs) == ""


@register
@dataclasses.dataclass(frozen=True)
class Parentheses(Task):
  """Prompt: a prefix of a random balanced string of 1..`max_pairs` pairs over `kinds` bracket
  kinds, cut where some bracket is still open. Answer: the unique shortest completion.

  The verifier is exact: prompt + answer balanced, nothing extra. Partial credit is positional.
  """
  name: ClassVar[str] = "parentheses"
  description: ClassVar[str] = "close the open brackets of a prefix of a balanced string"
  size_param: ClassVar[str] = "max_pairs"
  max_pairs: int = 4
  kinds: int = 2

  def __post_init__(self):
    if self.max_pairs < 1:
      raise TaskError(f"parentheses: max_pairs must be >= 1, got {self.max_pairs}")
    if not 1 <= self.kinds <= len(_PAIRS):
      raise TaskError(f"parentheses: kinds must be in [1, {len(_PAIRS)}], got {self.kinds}")

  @property
  def pairs(self) -> str:
    return "".join(_PAIRS[:self.kinds])

  @property
  def tokenizer(self) -> CharTokenizer:
    return CharTokenizer(self.pairs)

  @property
  def prompt_len(self) -> int:
    return 2 * self.max_pairs  # the longest prefix with an open bracket, then SEP.

  @property
  def max_new_tokens(self) -> int:
    return self.max_pairs + 1

  def _draw(self, rng) -> str:
    pairs = self.pairs
    num_pairs = int(rng.integers(1, self.max_pairs + 1))
    text, stack, opens_left = [], [], num_pairs
    while opens_left or stack:
      # Open with probability opens_left / (opens_left + open brackets): a roughly uniform walk.
      if opens_left and rng.random() * (opens_left + len(stack)) < opens_left:
        kind = int(rng.integers(self.kinds))
        text.append(pairs[2 * kind])
        stack.append(pairs[2 * kind + 1])
        opens_left -= 1
      else:
        text.append(stack.pop())
    depth, cuts = 0, []
    for pos, char in enumerate(text[:-1]):
      depth += 1 if pairs.index(char) % 2 == 0 else -1
      if depth > 0:
        cuts.append(pos + 1)
    return "".join(text[:cuts[int(rng.integers(len(cuts)))]])

  def sample(self, rng, n):
    return [self._draw(rng) for _ in range(n)]

  def is_held_out(self, prompt):
    # The `kinds` one-bracket prompts carry 1/max_pairs of the mass or more (every one-pair
    # string is cut there): holding one out would take a large part of the distribution from
    # training. They always train; the bucket takes its share of the longer prompts.
    return len(prompt) > 1 and super().is_held_out(prompt)

  def score(self, prompt, completion):
    target = closing(prompt, self.pairs)
    if target is None:
      return 0.0
    return positional_credit(completion, target, self.max_new_tokens)

  def jax_reward(self):
    tokenizer = self.tokenizer
    width = self.max_new_tokens
    first = tokenizer.encode(self.pairs[0])[0]  # openers sit at even offsets, closers after.

    def reward(prompt, prompt_len, completion, completion_len):
      del completion_len
      batch, slots = prompt.shape
      offset = prompt - first
      is_symbol = (jnp.arange(slots)[None, :] < prompt_len[:, None] - 1) & (offset >= 0)

      def push_or_pop(state, column):
        stack, top = state  # stack [B, P] of closer ids; top [B] open brackets
        token, symbol = column
        opens = symbol & (token % 2 == 0)
        closes = symbol & (token % 2 == 1)
        stack = jnp.where(opens[:, None] & (jnp.arange(slots)[None, :] == top[:, None]),
                          (token + 1 + first)[:, None], stack)
        top = top + opens.astype(jnp.int32) - closes.astype(jnp.int32)
        return (stack, jnp.maximum(top, 0)), None

      init = (jnp.zeros_like(prompt), jnp.zeros((batch,), jnp.int32))
      (stack, top), _ = jax.lax.scan(push_or_pop, init, (offset.T, is_symbol.T))
      # Prompts are valid prefixes, so closing pops in reverse order of opening.
      source = jnp.clip(top[:, None] - 1 - jnp.arange(width)[None, :], 0, slots - 1)
      closers = jnp.take_along_axis(stack, source, axis=1)
      target = eos_then_pad(closers, top, width, tokenizer.eos_id, tokenizer.pad_id)
      return positional_credit_tokens(completion[:, :width], target)

    return reward
