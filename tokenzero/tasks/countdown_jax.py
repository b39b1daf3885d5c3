"""Countdown's verifier in the graph: `Countdown.score` on tokens, for the jitted search.

The answer is read as `countdown.evaluate` reads it (expr := term (('+'|'-') term)*, term :=
factor (('*'|'/') factor)*, factor := number | '(' expr ')', left to right), by a shunting-yard
stack machine under `lax.scan` over the decoded answer: one step per character and one for its
end. It checks the syntax, divides only exactly and never by zero, and records the numbers
written, which must be a sub-multiset of the prompt's, as `countdown.check` does.

Exact over every parameter the task takes. Values are int32 and kept below `LIMIT` = 10**9 in
size (so that a sum never wraps, and a prompt's number fits when it has at most nine digits; a
product is checked before it is taken). A row whose expression would reach it, or whose prompt
holds a number of ten digits or more, is marked `big` and, if its answer has ended, parses and
uses only the prompt's numbers, is scored by `Countdown.score` through a host callback, behind
a `lax.cond` that leaves the device only when some row needs it. The verifier scores 0 whenever
the answer uses a number it was not given, so only expressions over the prompt's numbers (each
at most once) need exact values, and all of their values are at most
`value_bound(count, max_number)` in size: below `LIMIT` (count <= 9 at max_number 9, <= 4 at
100) no row is ever big and the reward has no callback at all.

Dimension letters: B batch, P prompt slots, T answer budget.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tokenzero.rewards import TokenReward, ended_rows
from tokenzero.tasks.base import decoded_symbols
from tokenzero.tokenizer import CharTokenizer

INT32_MAX = 2**31 - 1
LIMIT = 10**9  # values at or past this size go to the host (2 * LIMIT < 2**31)
# What a character is to the machine; `_END` follows the answer's last one, `_AFTER` pads.
_DIGIT, _PLUS, _MINUS, _TIMES, _DIVIDE, _OPEN, _CLOSE, _SEPARATOR, _END, _AFTER = range(10)
_KINDS = {**{str(d): _DIGIT for d in range(10)}, "+": _PLUS, "-": _MINUS, "*": _TIMES,
          "/": _DIVIDE, "(": _OPEN, ")": _CLOSE, ",": _SEPARATOR, ":": _SEPARATOR}


def value_bound(count: int, max_number: int) -> int:
  """A bound on the size of every value of an expression over `count` numbers in
  1..max_number, each used at most once: max(max_number, 2) ** count (by induction: when
  |a| <= A and |b| <= B with A, B >= 2, |a + b|, |a - b| and |a * b| <= A * B, and an exact
  |a / b| <= |a|)."""
  return max(max_number, 2) ** count


class _Machine(NamedTuple):
  """The parser's state, per row; stacks are [B, W] with W = T + 1 slots."""
  values: jax.Array  # [B, W] int32 operands
  num_values: jax.Array  # [B] int32
  ops: jax.Array  # [B, W] int32 pending operators and '(' (their kinds)
  num_ops: jax.Array  # [B] int32
  literals: jax.Array  # [B, W] int32 the numbers written, in order
  num_literals: jax.Array  # [B] int32
  number: jax.Array  # [B] int32 the number being read, saturated
  in_number: jax.Array  # [B] bool
  want_operand: jax.Array  # [B] bool: a number or '(' must come next
  depth: jax.Array  # [B] int32 open parentheses
  parsed: jax.Array  # [B] bool: no syntax error so far
  exact: jax.Array  # [B] bool: no division by zero or with a remainder so far
  big: jax.Array  # [B] bool: a value reached LIMIT (then the values are not read)


def _top(stack: jax.Array, size: jax.Array, below: int = 0) -> jax.Array:
  """stack[b, size[b] - 1 - below] -> [B] (0 out of range: a broken row reads anything).
  A masked sum, not a gather: the stacks are a few slots wide, and XLA compiles it faster."""
  hit = jnp.arange(stack.shape[1])[None, :] == (size - 1 - below)[:, None]
  return jnp.sum(jnp.where(hit, stack, 0), axis=1)


def _put(stack: jax.Array, index: jax.Array, value: jax.Array, where: jax.Array) -> jax.Array:
  """stack[b, index[b]] = value[b] where `where` [B]."""
  hit = (jnp.arange(stack.shape[1])[None, :] == index[:, None]) & where[:, None]
  return jnp.where(hit, value[:, None], stack)


def _reduce(machine: _Machine, want: jax.Array) -> _Machine:
  """Applies the top operator to the top two operands, in the rows where `want` [B]."""
  right = _top(machine.values, machine.num_values)
  left = _top(machine.values, machine.num_values, 1)
  op = _top(machine.ops, machine.num_ops)
  divisor = jnp.where(right == 0, 1, right)
  value = jnp.where(op == _PLUS, left + right, jnp.where(
      op == _MINUS, left - right, jnp.where(op == _TIMES, left * right,
                                            jax.lax.div(left, divisor))))
  # Truncated and floored division agree whenever the remainder is 0, the only case kept.
  bad = (op == _DIVIDE) & ((right == 0) | (jax.lax.rem(left, divisor) != 0))
  # Both operands are below LIMIT, so a sum or difference does not wrap; |a * b| >= LIMIT
  # exactly when |a| > (LIMIT - 1) // |b|; a quotient is never larger than its dividend.
  size = jnp.abs(right)
  big = jnp.where(op == _TIMES, jnp.abs(left) > (LIMIT - 1) // jnp.maximum(size, 1),
                  (op != _DIVIDE) & (jnp.abs(value) >= LIMIT))
  return machine._replace(
      values=_put(machine.values, machine.num_values - 2, value, want),
      num_values=machine.num_values - want, num_ops=machine.num_ops - want,
      exact=machine.exact & ~(want & bad), big=machine.big | (want & big))


def _step(machine: _Machine, column) -> tuple[_Machine, None]:
  """One character (`kind` [B], `digit` [B]) of every row's answer."""
  kind, digit = column
  m = machine
  is_digit = kind == _DIGIT
  # A number ends at the first character after it that is not a digit: an operand.
  ends = m.in_number & ~is_digit
  m = m._replace(values=_put(m.values, m.num_values, m.number, ends),
                 num_values=m.num_values + ends,
                 literals=_put(m.literals, m.num_literals, m.number, ends),
                 num_literals=m.num_literals + ends, big=m.big | (ends & (m.number >= LIMIT)),
                 want_operand=m.want_operand & ~ends, in_number=m.in_number & is_digit)
  starts = is_digit & ~m.in_number
  number = jnp.where(starts, digit, jnp.where(m.number > (INT32_MAX - 9) // 10, INT32_MAX,
                                              m.number * 10 + digit))
  is_op = (kind >= _PLUS) & (kind <= _DIVIDE)
  opens, closes, end = kind == _OPEN, kind == _CLOSE, kind == _END
  broken = ((starts & ~m.want_operand) | (opens & ~m.want_operand)
            | ((is_op | closes | end) & m.want_operand) | (kind == _SEPARATOR)
            | (closes & (m.depth == 0)) | (end & (m.depth != 0)))
  m = m._replace(number=jnp.where(is_digit, number, m.number), in_number=m.in_number | starts,
                 parsed=m.parsed & ~broken)
  # Left to right: an operator first applies the pending ones of its precedence or higher; ')'
  # and the end apply every one back to the '(' or the start. Between two '(' the pending
  # operators rise in precedence, so there are at most two (a + b * c): two rounds suffice.
  high = (kind == _TIMES) | (kind == _DIVIDE)

  def reduce_once(_, m):
    top = _top(m.ops, m.num_ops)
    top_is_op = (m.num_ops > 0) & (top != _OPEN)
    top_high = (top == _TIMES) | (top == _DIVIDE)
    return _reduce(m, top_is_op & (closes | end | (is_op & (top_high | ~high))))

  m = jax.lax.fori_loop(0, 2, reduce_once, m)
  push = is_op | opens
  m = m._replace(ops=_put(m.ops, m.num_ops, kind, push),
                 num_ops=m.num_ops + push - closes,  # ')' drops its '('
                 depth=m.depth + opens - closes,
                 want_operand=m.want_operand | is_op)
  return m, None


def _ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
  """numerator / denominator [B] rounded once to float32, for ints 0 < numerator <= denominator
  < 2**31. Converting both to float32 first would round them too (past 2**24) and miss the
  host's value by a step; this is the host's float32 of Python's double, but for a double
  within 2**-53 of a float32 tie (never seen; the odds are about 2**-29 per value)."""
  num, den = numerator.astype(jnp.uint32), denominator.astype(jnp.uint32)
  # Shift the numerator to den / 2 <= num << shift < den: the quotient's first bit is 1/2.
  shift = jax.lax.clz(num) - jax.lax.clz(den)
  shift = jnp.where((num << shift.astype(jnp.uint32)) >= den, shift - 1, shift)
  start = num << jnp.maximum(shift, 0).astype(jnp.uint32)

  def next_bit(_, carry):  # long division: 2 * rest < 2 * den < 2**32, no overflow
    quotient, rest = carry
    rest = rest * 2
    bit = rest >= den
    return quotient * 2 + bit, jnp.where(bit, rest - den, rest)

  # 25 bits [2**24, 2**25): 24 for float32's significand, one to round by, the rest sticky.
  quotient, rest = jax.lax.fori_loop(0, 25, next_bit, (jnp.zeros_like(num), start))
  significand = quotient >> 1
  up = ((quotient & 1) == 1) & ((rest != 0) | ((significand & 1) == 1))  # to nearest, even
  scale = jnp.asarray([2.0 ** -(24 + k) for k in range(32)], jnp.float32)  # exact, not exp2's
  value = (significand + up).astype(jnp.float32) * scale[jnp.clip(shift, 0, 31)]
  return jnp.where(num >= den, 1.0, value)


def _read_prompt(kinds: jax.Array, digits: jax.Array) -> tuple[jax.Array, ...]:
  """`n1,n2,...:target` as kinds/digits [B, P] (`_END` at its end) -> (fields [B, P]: the
  numbers then the target, num_fields [B], big [B]: a field of ten digits or more, the
  numbers that reach LIMIT)."""
  width = kinds.shape[1]
  ends = (kinds == _SEPARATOR) | (kinds == _END)
  field = jnp.cumsum(ends, axis=1) - ends  # [B, P] the field each character belongs to
  in_field = (field[:, :, None] == jnp.arange(width)[None, None, :]) & (
      kinds == _DIGIT)[:, :, None]  # [B, P, F]
  # A digit's place: the digits after it in its field (nine digits at most, or `big`).
  num_digits = jnp.sum(in_field, axis=1)  # [B, F]
  after = num_digits[:, None, :] - jnp.cumsum(in_field, axis=1)  # [B, P, F]
  place = jnp.asarray([10 ** k for k in range(10)], jnp.int32)[jnp.clip(after, 0, 9)]
  fields = jnp.sum(jnp.where(in_field, digits[:, :, None] * place, 0), axis=1)  # [B, F]
  return fields, jnp.sum(ends, axis=1, dtype=jnp.int32), jnp.any(num_digits >= 10, axis=1)


def _host_scores(score: Callable[[str, str], float], tokenizer: CharTokenizer):
  """The callback that scores the rows marked in `rows` [B] with `score` on their text."""
  def host(rows, prompt, prompt_len, completion, completion_len):
    rows, prompt, prompt_len, completion, completion_len = map(
        np.asarray, (rows, prompt, prompt_len, completion, completion_len))
    out = np.zeros(rows.shape, np.float32)
    for row in np.flatnonzero(rows):
      out[row] = score(tokenizer.decode(prompt[row, :prompt_len[row]]),
                       tokenizer.decode(completion[row, :completion_len[row]]))
    return out
  return host


def countdown_token_reward(tokenizer: CharTokenizer, *,
                           score: Callable[[str, str], float] | None = None) -> TokenReward:
  """`Countdown.score` on tokens. `score`: the task's, for the rows whose values reach LIMIT
  (None: no row can, at the task's parameters; the reward then has no callback)."""
  first_symbol = tokenizer.vocab_size - len(tokenizer.alphabet)
  eos_id, pad_id = tokenizer.eos_id, tokenizer.pad_id
  kind_of = np.full(tokenizer.vocab_size, _SEPARATOR, np.int32)  # [V]
  digit_of = np.zeros(tokenizer.vocab_size, np.int32)  # [V]
  for char, kind in _KINDS.items():
    kind_of[tokenizer.encode(char)[0]] = kind
    digit_of[tokenizer.encode(char)[0]] = int(char) if kind == _DIGIT else 0
  kind_of, digit_of = jnp.asarray(kind_of), jnp.asarray(digit_of)

  def as_kinds(symbols, count):
    """Text [B, W] of `count` [B] symbols -> kinds, digits [B, W + 1]: `_END` after the text,
    `_AFTER` on."""
    symbols = jnp.pad(symbols, ((0, 0), (0, 1)), constant_values=pad_id)
    cols = jnp.arange(symbols.shape[1])[None, :]
    kinds = jnp.where(cols < count[:, None], kind_of[symbols],
                      jnp.where(cols == count[:, None], _END, _AFTER))
    return kinds, digit_of[symbols]

  def reward(prompt, prompt_len, completion, completion_len):
    # The prompt as `prompts.encode_batch` lays it out: its text, then SEP.
    fields, num_fields, prompt_big = _read_prompt(*as_kinds(prompt, prompt_len - 1))
    kinds, digits = as_kinds(*decoded_symbols(completion, completion_len, eos_id=eos_id,
                                              pad_id=pad_id, first_symbol=first_symbol))
    num_numbers = num_fields - 1
    target = _top(fields, num_fields)
    batch, width = kinds.shape
    stack = jnp.zeros((batch, width), jnp.int32)
    zero = jnp.zeros((batch,), jnp.int32)
    start = _Machine(values=stack, num_values=zero, ops=stack, num_ops=zero, literals=stack,
                     num_literals=zero, number=zero, in_number=zero > 0,
                     want_operand=zero == 0, depth=zero, parsed=zero == 0, exact=zero == 0,
                     big=prompt_big)
    machine, _ = jax.lax.scan(_step, start, (kinds.T, digits.T))
    # Each number written at most as often as the prompt gives it.
    literals = machine.literals
    written = jnp.arange(width)[None, :] < machine.num_literals[:, None]  # [B, W]
    given = jnp.arange(fields.shape[1])[None, :] < num_numbers[:, None]  # [B, P]
    times_written = jnp.sum(written[:, None, :] & (literals[:, :, None] == literals[:, None, :]),
                            axis=-1)
    times_given = jnp.sum(given[:, None, :] & (literals[:, :, None] == fields[:, None, :]),
                          axis=-1)
    uses_given = jnp.all(~written | (times_written <= times_given), axis=1)
    valid = machine.parsed & machine.exact & uses_given & ~machine.big
    value = machine.values[:, 0]
    # 0.5 * (1 - |value - target| / target), nonzero only for 0 < value < 2 * target.
    near = valid & (value > 0) & (value - target < target)
    partial = 0.5 * _ratio(jnp.where(near, target - jnp.abs(value - target), 1),
                           jnp.maximum(target, 1))
    values = jnp.where(valid & (value == target), 1.0, jnp.where(near, partial, 0.0))
    if score is None:
      return values
    # Big rows that may score: the search reads a reward only where the answer ended (as the
    # host callback of a Python reward, the others get 0).
    to_host = (ended_rows(completion, completion_len, eos_id) & machine.parsed
               & (prompt_big | (machine.big & uses_given)))
    shape = jax.ShapeDtypeStruct((batch,), jnp.float32)
    scored = jax.lax.cond(
        jnp.any(to_host),
        lambda: jax.pure_callback(_host_scores(score, tokenizer), shape, to_host, prompt,
                                  prompt_len, completion, completion_len,
                                  vmap_method="sequential"),
        lambda: jnp.zeros((batch,), jnp.float32))
    return jnp.where(machine.big, scored, values)

  return reward
