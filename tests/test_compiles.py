"""The compilation counter: a fresh program counts once, a cached call never, a program loaded
from the persistent compilation cache counts too."""

import jax
import jax.numpy as jnp
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from tokenzero import compilation_cache, compiles


def test_a_fresh_jit_counts_once_and_a_cached_call_not_at_all():
  # Inputs made first: every eager op (even `x + 1`) is a program of its own.
  x, y, shorter = jnp.arange(5.0), jnp.ones(5), jnp.arange(3.0)
  counter = compiles.Counter()
  compiles.Counter()  # a second counter registers no second listener.
  double = jax.jit(lambda v: 2.0 * v + 0.5)
  double(x)
  assert counter.peek() == 1
  double(y)  # the same shapes: jit's in-memory cache.
  assert counter.lap() == 1 and counter.lap() == 0
  double(shorter)  # a new shape is a new program.
  assert counter.lap() == 1


def test_a_program_loaded_from_the_persistent_cache_counts(tmp_path):
  keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
          "jax_persistent_cache_min_entry_size_bytes")
  saved = {key: getattr(jax.config, key) for key in keys}
  x = jnp.arange(6.0)
  try:
    compilation_cache.enable(tmp_path)
    jax_cache.reset_cache()  # jax decides once per process whether the cache is on.
    fun = jax.jit(lambda v: jnp.sin(v) * 3.0 - 1.0)
    counter, hits = compiles.Counter(), compiles.cache_hits()
    fun(x)
    assert counter.lap() == 1 and compiles.cache_hits() == hits  # compiled, then written.
    assert any(tmp_path.iterdir())
    fun.clear_cache()  # as a new process would: only the disk has it.
    fun(x)
    assert counter.lap() == 1 and compiles.cache_hits() == hits + 1
  finally:
    for key, value in saved.items():
      jax.config.update(key, value)
    jax_cache.reset_cache()
