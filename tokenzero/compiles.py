"""A count of this process's XLA compilations, from `jax.monitoring` events.

`Counter()` counts from the moment it is made; `counter.lap()` returns the compilations since the
last lap and starts the next. A program loaded from the persistent compilation cache
(`tokenzero.compilation_cache`) counts too: it is still a program this process had not built,
and inside a warmed-up loop it means the same as a compile, that some input changed shape or
type. Calls that hit jit's in-memory cache count nothing.

The listener is registered on the first `count()` or `Counter()`, once per process; compilations
before that are not counted.
"""

from __future__ import annotations

import threading

import jax

# jax wraps every backend compilation, persistent-cache hits included, in a duration event of
# this name (jax/_src/dispatch.py BACKEND_COMPILE_EVENT, pxla._cached_compilation); the hits
# alone are also recorded under the second name (jax/_src/compiler.py).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"

_lock = threading.Lock()
_counts = {BACKEND_COMPILE_EVENT: 0, CACHE_HIT_EVENT: 0}
_registered = False


def _on_duration(event: str, duration_secs: float, **kwargs) -> None:
  del duration_secs, kwargs
  if event == BACKEND_COMPILE_EVENT:
    with _lock:
      _counts[event] += 1


def _on_event(event: str, **kwargs) -> None:
  del kwargs
  if event == CACHE_HIT_EVENT:
    with _lock:
      _counts[event] += 1


def _register() -> None:
  global _registered
  with _lock:
    if _registered:
      return
    jax.monitoring.register_event_duration_secs_listener(_on_duration)
    jax.monitoring.register_event_listener(_on_event)
    _registered = True


def count() -> int:
  """Compilations so far (since the listener was registered), persistent-cache loads included."""
  _register()
  return _counts[BACKEND_COMPILE_EVENT]


def cache_hits() -> int:
  """How many of `count()` were loaded from the persistent compilation cache."""
  _register()
  return _counts[CACHE_HIT_EVENT]


class Counter:
  """Compilations since it was made, or since its last `lap()`."""

  def __init__(self):
    self._start = count()

  def peek(self) -> int:
    return count() - self._start

  def lap(self) -> int:
    now = count()
    since, self._start = now - self._start, now
    return since
