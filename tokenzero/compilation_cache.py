"""A persistent XLA compilation cache for the `tokenzero` command.

Every `tokenzero` process compiles the same self-play, learner and evaluation programs; with the
cache, a resumed or repeated run loads them from disk instead (seconds instead of tens of
seconds on a CPU). `TOKENZERO_COMPILATION_CACHE` names the directory (default
`~/.cache/tokenzero/xla`); `off` disables it. Library users opt in by calling `enable()`.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV_VAR = "TOKENZERO_COMPILATION_CACHE"
DEFAULT_DIR = Path("~/.cache/tokenzero/xla")


def cache_dir(environ=os.environ) -> Path | None:
  """The cache directory the environment asks for, or None when it is `off`."""
  value = environ.get(ENV_VAR, "").strip()
  if value.lower() in ("off", "0", "false", "no", "none"):
    return None
  return Path(value or DEFAULT_DIR).expanduser()


def enable(directory: str | Path | None = None) -> Path | None:
  """Points JAX's persistent compilation cache at `directory` (default: from the environment).

  Caches every program, however fast it compiled: the small ones add up at start-up. A
  directory that cannot be created leaves the cache off rather than failing the run.
  """
  directory = cache_dir() if directory is None else Path(directory).expanduser()
  if directory is None:
    return None
  try:
    directory.mkdir(parents=True, exist_ok=True)
  except OSError:
    return None
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory
