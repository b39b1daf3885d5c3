"""Reward errors: `RewardError`, how it names the input, and the slot that carries it out of XLA.

Bad values never pass silently. A reward that raises or returns None, a string, NaN, inf or the
wrong number of values becomes a `RewardError` naming the reward, the prompt, the completion and
the value. Inside a host callback the error is recorded here and the callback returns zeros (an
exception raised inside XLA reaches the caller as an opaque runtime error); the caller re-raises
it with `raise_pending()` after blocking on the results, or wraps the work in
`with reward_errors():`, which also turns an XLA runtime error back into the recorded
`RewardError`.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import jax

from tokenzero.errors import RewardError  # defined with the other user errors

_SHOW = 120  # characters of a prompt or completion quoted in an error.


def _show(text: str | None) -> str:
  if text is None:
    return "?"
  return repr(text if len(text) <= _SHOW else text[:_SHOW] + "...")


def describe_pair(prompt: str | None, completion: str | None) -> str:
  """How an error names its input: `prompt 'ab' and completion 'ba'`, long texts cut."""
  return f"prompt {_show(prompt)} and completion {_show(completion)}"


# ---------------------------------------------------------------------------------------------
# The error slot: errors raised inside host callbacks, re-raised on the caller's side. It is
# process-global because a callback has no other way back to its caller.

_lock = threading.Lock()
_pending: list[tuple[object, RewardError]] = []  # at most one: (owner, error)


def record(owner: object, err: RewardError) -> None:
  """Keeps `err` for the caller unless an error is already waiting (the first one wins)."""
  with _lock:
    if not _pending:
      _pending.append((owner, err))


def has_failed(owner: object) -> bool:
  """Whether the waiting error is `owner`'s (its callbacks then stop calling the reward)."""
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
