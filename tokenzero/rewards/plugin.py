"""The reward plug-in API: the markers a reward file uses, `Reward`, `load_reward`, `TokenReward`.

Three forms of outcome reward, told apart by a marker a decorator sets:

- plain Python, one completion at a time: `def reward(prompt: str, completion: str) -> float`;
- `@batched_reward`: `def reward(prompts: list[str], completions: list[str]) -> Sequence[float]`;
- `@jax_reward`: `def reward(tokens [B, T], lengths [B]) -> [B]`, jittable, on the completion
  tokens (`lengths` counts the EOS); `@jax_reward(with_prompt=True)` takes the whole
  `TokenReward` signature `(prompt [B, P], prompt_len [B], completion [B, T], completion_len [B])`.

and two optional per-step (process) forms, paid once per answer token: `@step_reward` on
`def reward(prompt: str, partial: str) -> float` and `@jax_step_reward` on
`(tokens [B, T], lengths [B]) -> [B, T]`.

Trust boundary: `load_reward("file.py:function")` imports and runs the user's file in this
process, with this process's permissions. A reward file is code, not data: load only files
you would run yourself.

Dimension letters: B batch, P prompt slots, T answer budget.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Callable

import jax

from tokenzero.rewards.errors import RewardError

# (prompt [B, P], prompt_len [B], completion [B, T], completion_len [B]) -> reward [B] float32.
# Completions are the generated tokens, PAD after the end; completion_len counts the EOS.
TokenReward = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]

_MARK = "__tokenzero_reward__"
_FORMS = ("text", "batched", "jax", "step", "jax_step")
_FORM_NAMES = {"text": "Python, one completion at a time", "batched": "batched Python",
               "jax": "JAX on tokens", "step": "per-step Python",
               "jax_step": "per-step JAX on tokens"}


def batched_reward(fn: Callable) -> Callable:
  """Marks `fn(prompts: list[str], completions: list[str]) -> Sequence[float]`."""
  setattr(fn, _MARK, ("batched", False))
  return fn


def jax_reward(fn: Callable | None = None, *, with_prompt: bool = False):
  """Marks a jittable `fn(tokens [B, T], lengths [B]) -> [B]` over completion tokens.

  `with_prompt=True`: `fn(prompt [B, P], prompt_len [B], completion [B, T], completion_len [B])`.
  Usable bare (`@jax_reward`) or called (`@jax_reward(with_prompt=True)`).
  """
  def mark(f):
    setattr(f, _MARK, ("jax", with_prompt))
    return f
  return mark if fn is None else mark(fn)


def step_reward(fn: Callable) -> Callable:
  """Marks a per-step `fn(prompt: str, partial: str) -> float`, called on every prefix."""
  setattr(fn, _MARK, ("step", False))
  return fn


def jax_step_reward(fn: Callable) -> Callable:
  """Marks a per-step jittable `fn(tokens [B, T], lengths [B]) -> [B, T]` (reward per token)."""
  setattr(fn, _MARK, ("jax_step", False))
  return fn


@dataclasses.dataclass(frozen=True)
class Reward:
  """A user reward with its form and the name errors call it by."""
  fn: Callable
  form: str  # one of _FORMS
  name: str
  with_prompt: bool = False  # JAX outcome rewards only

  def __post_init__(self):
    if self.form not in _FORMS:
      raise RewardError(f"reward form must be one of {_FORMS}, got {self.form!r}")

  @property
  def is_jax(self) -> bool:
    return self.form in ("jax", "jax_step")

  def describe(self) -> str:
    return f"'{self.name}' ({_FORM_NAMES[self.form]})"


def as_reward(fn: Callable | Reward, name: str | None = None) -> Reward:
  """A callable (marked by a decorator, or plain text form) -> `Reward`."""
  if isinstance(fn, Reward):
    return fn
  if not callable(fn):
    raise RewardError(f"a reward must be a function, got {fn!r}")
  form, with_prompt = getattr(fn, _MARK, ("text", False))
  name = name or getattr(fn, "__name__", None) or repr(fn)
  return Reward(fn, form, name, with_prompt)


def load_reward(spec: str) -> Reward:
  """`"path/to/file.py:function"` -> the `Reward` it names. Runs the file: see the trust note."""
  path_text, sep, func_name = spec.rpartition(":")
  if not sep or not path_text or not func_name:
    raise RewardError(f"reward {spec!r} is not of the form path/to/file.py:function")
  path = Path(path_text)
  if not path.is_file():
    raise RewardError(f"reward file '{path}' does not exist (from {spec!r})", reward_name=spec)
  module_name = f"tokenzero_user_reward_{abs(hash(str(path.resolve())))}"
  module_spec = importlib.util.spec_from_file_location(module_name, path)
  if module_spec is None or module_spec.loader is None:
    raise RewardError(f"reward file '{path}' cannot be imported as Python", reward_name=spec)
  module = importlib.util.module_from_spec(module_spec)
  sys.modules[module_name] = module  # dataclasses and pickling inside the file need this.
  try:
    module_spec.loader.exec_module(module)
  except Exception as err:
    del sys.modules[module_name]
    raise RewardError(f"importing reward file '{path}' raised {type(err).__name__}: {err}",
                      reward_name=spec) from err
  fn = getattr(module, func_name, None)
  if fn is None:
    defined = sorted(k for k, v in vars(module).items()
                     if callable(v) and not k.startswith("_")
                     and getattr(v, "__module__", None) == module_name)
    raise RewardError(f"reward file '{path}' has no function '{func_name}'; it defines: "
                      f"{', '.join(defined) or 'no functions'}", reward_name=spec)
  if not callable(fn):
    raise RewardError(f"'{func_name}' in reward file '{path}' is a {type(fn).__name__}, not a "
                      "function", reward_name=spec)
  return as_reward(fn, name=spec)
