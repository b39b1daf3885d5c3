"""The errors that are the user's input, not a bug: `tokenzero` prints each as one line, exit 2.

They live here, apart from the modules that raise them, so that the command line can name them
without importing JAX (`tokenzero --help` stays fast). Each module re-exports its own.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
  """A bad key or value in a config file or a command-line override."""


class TaskError(ValueError):
  """Bad task name or parameters."""


class TokenizerError(ValueError):
  """Text a tokenizer cannot encode, or a bad tokenizer spec."""


class DemoError(ValueError):
  """A demonstrations file that cannot be read or encoded."""


class UsageError(ValueError):
  """A bad command line."""


class HFError(ValueError):
  """A model directory or file tokenzero cannot load or write."""


class HFTokenizerError(ValueError):
  """A tokenizer directory tokenzero cannot use."""


class RewardError(ValueError):
  """A reward function that cannot be loaded or that misbehaved on some input."""

  def __init__(self, message: str, *, reward_name: str = "", prompt: str | None = None,
               completion: str | None = None, value: Any = None):
    super().__init__(message)
    self.reward_name = reward_name
    self.prompt = prompt
    self.completion = completion
    self.value = value


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, TaskError, TokenizerError, DemoError, UsageError, HFError, HFTokenizerError,
    RewardError)
