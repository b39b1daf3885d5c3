"""Countdown: reach a target with + - * / over given numbers, each used at most once.

The verifier parses the answer with its own recursive-descent parser over integers, + - * /
and parentheses; nothing is ever passed to `eval`. Division must be exact and never by zero.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from typing import ClassVar

from tokenzero.tasks import countdown_jax
from tokenzero.tasks.base import Task, TaskError, register
from tokenzero.tokenizer import CharTokenizer

_ALPHABET = "0123456789+-*/(),:"
_OPS = "+-*/"


class ExpressionError(ValueError):
  """Text that is not a valid countdown expression."""


def _apply(op: str, a: int, b: int) -> int:
  if op == "+":
    return a + b
  if op == "-":
    return a - b
  if op == "*":
    return a * b
  if b == 0:
    raise ExpressionError("division by zero")
  if a % b:
    raise ExpressionError(f"{a}/{b} is not a whole number")
  return a // b


class _Parser:
  """expr := term (('+'|'-') term)*;  term := factor (('*'|'/') factor)*;
  factor := number | '(' expr ')'."""

  def __init__(self, text: str):
    self.text = text
    self.pos = 0
    self.numbers: list[int] = []

  def parse(self) -> int:
    value = self.expr()
    if self.pos != len(self.text):
      raise ExpressionError(f"unexpected {self.text[self.pos]!r} at {self.pos}")
    return value

  def peek(self) -> str:
    return self.text[self.pos] if self.pos < len(self.text) else ""

  def _chain(self, operand, ops: tuple[str, str]) -> int:
    """operand (op operand)*, left to right: one precedence level."""
    value = operand()
    while self.peek() in ops:
      op = self.peek()
      self.pos += 1
      value = _apply(op, value, operand())
    return value

  def expr(self) -> int:
    return self._chain(self.term, ("+", "-"))

  def term(self) -> int:
    return self._chain(self.factor, ("*", "/"))

  def factor(self) -> int:
    if self.peek() == "(":
      self.pos += 1
      value = self.expr()
      if self.peek() != ")":
        raise ExpressionError(f"missing ')' at {self.pos}")
      self.pos += 1
      return value
    start = self.pos
    while self.peek().isdigit():
      self.pos += 1
    if start == self.pos:
      raise ExpressionError(f"expected a number or '(' at {start}")
    number = int(self.text[start:self.pos])
    self.numbers.append(number)
    return number


def evaluate(expression: str) -> tuple[int, list[int]]:
  """Value of an arithmetic expression and the numbers it uses; ExpressionError if invalid."""
  parser = _Parser(expression)
  return parser.parse(), parser.numbers


def parse_prompt(prompt: str) -> tuple[list[int], int]:
  """`"3,7,2:20"` -> ([3, 7, 2], 20)."""
  numbers, target = prompt.split(":")
  return [int(x) for x in numbers.split(",")], int(target)


def check(numbers: list[int], target: int, expression: str) -> tuple[bool, int | None]:
  """(is it a solution, its value or None when invalid or it uses numbers it was not given)."""
  try:
    value, used = evaluate(expression)
  except ExpressionError:
    return False, None
  if collections.Counter(used) - collections.Counter(numbers):
    return False, None
  return value == target, value


def solve(numbers: list[int], target: int) -> str | None:
  """A shortest-to-find solution by exhaustive search (small inputs only), or None."""
  pool = [(n, str(n)) for n in numbers]

  def search(items):
    for value, text in items:
      if value == target:
        return text
    for i, j in itertools.permutations(range(len(items)), 2):
      (a, ta), (b, tb) = items[i], items[j]
      rest = [items[k] for k in range(len(items)) if k not in (i, j)]
      for op in _OPS:
        try:
          value = _apply(op, a, b)
        except ExpressionError:
          continue
        found = search(rest + [(value, f"({ta}{op}{tb})")])
        if found is not None:
          return found
    return None

  found = search(pool)
  if found is not None and found.startswith("(") and check(numbers, target, found[1:-1])[0]:
    return found[1:-1]
  return found


@register
@dataclasses.dataclass(frozen=True)
class Countdown(Task):
  """Prompt: `n1,n2,...:target`. Answer: an expression over some of the numbers equal to target.

  Every prompt is solvable: its target is built by combining a random subset of its numbers.
  Partial credit: 0 for an invalid expression or one using numbers it was not given, else
  up to 0.5 by closeness to the target; 1 only for a solution.
  """
  name: ClassVar[str] = "countdown"
  description: ClassVar[str] = "reach a target from given numbers with + - * / (each at most once)"
  size_param: ClassVar[str] = "count"
  min_size: ClassVar[int] = 2
  count: int = 3
  max_number: int = 9
  max_target: int = 50

  def __post_init__(self):
    if self.count < 2:
      raise TaskError(f"countdown: count must be >= 2, got {self.count}")
    if self.max_number < 1 or self.max_target < 1:
      raise TaskError("countdown: max_number and max_target must be >= 1")

  @property
  def tokenizer(self) -> CharTokenizer:
    return CharTokenizer(_ALPHABET)

  @property
  def prompt_len(self) -> int:
    number = len(str(self.max_number)) + 1  # each number and its ',' or ':'
    return self.count * number + len(str(self.max_target)) + 1

  @property
  def max_new_tokens(self) -> int:
    # count numbers, count-1 operators, at most count-2 parenthesis pairs, EOS.
    return self.count * len(str(self.max_number)) + (self.count - 1) + 2 * (self.count - 2) + 1

  def _draw(self, rng) -> str:
    for _ in range(1000):
      numbers = [int(x) for x in rng.integers(1, self.max_number + 1, size=self.count)]
      size = int(rng.integers(2, self.count + 1))
      values = [int(v) for v in rng.permutation(numbers)[:size]]
      while len(values) > 1:  # combine two random values until one is left: the target.
        a = values.pop(int(rng.integers(len(values))))
        b = values.pop(int(rng.integers(len(values))))
        try:
          values.append(_apply(_OPS[int(rng.integers(len(_OPS)))], a, b))
        except ExpressionError:
          values.append(a + b)
      target = values[0]
      if 1 <= target <= self.max_target and target not in numbers:
        return ",".join(map(str, numbers)) + f":{target}"
    raise TaskError("countdown: could not draw a target in range; raise max_target")

  def sample(self, rng, n):
    return [self._draw(rng) for _ in range(n)]

  def instance_key(self, prompt):
    # The numbers may be used in any order, so their order does not change the problem.
    numbers, target = parse_prompt(prompt)
    return ",".join(map(str, sorted(numbers))) + f":{target}"

  def score(self, prompt, completion):
    numbers, target = parse_prompt(prompt)
    solved, value = check(numbers, target, completion)
    if solved:
      return 1.0
    if value is None:
      return 0.0
    return 0.5 * max(0.0, 1.0 - abs(value - target) / target)

  def jax_reward(self):
    # In the graph while every value an answer over the prompt's numbers can take stays below
    # countdown_jax.LIMIT (count <= 9 at max_number 9, <= 4 at 100); past that bound, the rows
    # whose values reach it are scored here, through a host callback.
    bound = countdown_jax.value_bound(self.count, self.max_number)
    return countdown_jax.countdown_token_reward(
        self.tokenizer, score=self.score if bound >= countdown_jax.LIMIT else None)
