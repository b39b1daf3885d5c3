"""A task made of the user's prompts file and the user's reward function.

`tokenzero train --reward rewards.py:score --prompts prompts.txt` builds this task:
prompts come one per line (`.txt`) or as `{"prompt": ...}` lines (`.jsonl`); the reward is any
form of `tokenzero.rewards` (plain, batched, JAX, per-step). Held-out evaluation prompts come
from `eval_prompts` or, by default, a fixed `eval_fraction` of the prompts file.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tokenzero.hf import HFTokenizerError, load_tokenizer
from tokenzero.rewards import RewardCheck, check_reward, load_reward, score_texts, token_reward
from tokenzero.tasks.base import Task, TaskError, register
from tokenzero.tokenizer import CharTokenizer, Tokenizer, TokenizerError, from_spec

DEFAULT_MAX_NEW_TOKENS = 16


def read_prompts(path: str | Path) -> list[str]:
  """Prompts of a `.txt` (one per non-empty line) or `.jsonl` (a "prompt" string per line)
  file, duplicates dropped, in file order."""
  path = Path(path)
  if not path.is_file():
    raise TaskError(f"prompts file '{path}' does not exist")
  try:
    text = path.read_text(encoding="utf-8")
  except UnicodeDecodeError as err:
    line = path.read_bytes()[:err.start].count(b"\n") + 1
    raise TaskError(f"{path}:{line}: not UTF-8 text (byte {err.object[err.start]:#04x}); "
                    "save the prompts file as UTF-8") from None
  out: dict[str, None] = {}
  for number, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    if path.suffix == ".jsonl":
      try:
        record = json.loads(line)
      except json.JSONDecodeError as err:
        raise TaskError(f"{path}:{number}: not a JSON line ({err.msg})") from err
      prompt = record.get("prompt") if isinstance(record, dict) else None
      if not isinstance(prompt, str) or not prompt:
        raise TaskError(f"{path}:{number}: each line needs a non-empty string field 'prompt'")
    else:
      prompt = line.rstrip("\r")
    out[prompt] = None
  if not out:
    raise TaskError(f"prompts file '{path}' has no prompts")
  return list(out)


@register
@dataclasses.dataclass(frozen=True)
class PromptFileTask(Task):
  """Prompts from a file, scored by a user reward (`file.py:function`).

  The tokenizer is `tokenizer_spec` (`char:<alphabet>`, `byte`, or `hf:<model dir>` for an HF
  checkpoint's `tokenizer.json`, which `init_from` sets) or, by default, characters
  over every prompt's characters plus `alphabet` (the characters answers may use besides).
  The answer budget is `task.max_new_tokens` (default 16); success is reward >=
  `task.success_threshold`.
  """
  name: ClassVar[str] = "prompts"
  description: ClassVar[str] = ("your prompts file (.txt or .jsonl) scored by your reward "
                                "function (file.py:function)")
  prompts: str = ""
  reward: str = ""
  eval_prompts: str = ""  # empty: hold out `eval_fraction` of `prompts`.
  eval_fraction: float = 0.1
  tokenizer_spec: str = ""
  alphabet: str = ""
  # Loaded once by __post_init__; not parameters. The loaded function takes part in equality:
  # a task built again from the same (maybe edited) file is a different task, so nothing that
  # caches per task (`tasks.task_token_reward`, jit) ever runs the old code.
  user_reward: Any = dataclasses.field(init=False, repr=False, compare=True, default=None)
  _train: tuple = dataclasses.field(init=False, repr=False, compare=False, default=())
  _eval: tuple = dataclasses.field(init=False, repr=False, compare=False, default=())
  _eval_set: frozenset = dataclasses.field(init=False, repr=False, compare=False,
                                           default=frozenset())
  _tokenizer: Any = dataclasses.field(init=False, repr=False, compare=False, default=None)

  def __post_init__(self):
    if not self.prompts or not self.reward:
      raise TaskError("the prompts task needs task.params.prompts (a .txt or .jsonl file) and "
                      "task.params.reward (path/to/file.py:function); on the command line: "
                      "tokenzero train --prompts FILE --reward FILE.py:FUNCTION")
    if not 0.0 <= self.eval_fraction < 1.0:
      raise TaskError(f"prompts: eval_fraction must be in [0, 1), got {self.eval_fraction}")
    everything = read_prompts(self.prompts)
    if self.eval_prompts:
      held_out = read_prompts(self.eval_prompts)
      unseen = set(held_out)
      train = [p for p in everything if p not in unseen]
      if not train:
        raise TaskError(f"every prompt of '{self.prompts}' is also in the evaluation file "
                        f"'{self.eval_prompts}'; nothing is left to train on")
    else:
      count = min(len(everything) - 1, math.ceil(self.eval_fraction * len(everything)))
      order = np.random.default_rng(0).permutation(len(everything))
      held_out = [everything[i] for i in sorted(order[:count])]
      train = [everything[i] for i in sorted(order[count:])]
    tokenizer = self._make_tokenizer(everything + held_out)
    for source, texts in ((self.prompts, train), (self.eval_prompts or self.prompts, held_out)):
      for text in texts:
        try:
          tokenizer.encode(text)
        except TokenizerError as err:
          raise TaskError(f"prompt {text!r} of '{source}': {err}") from err
    object.__setattr__(self, "user_reward", load_reward(self.reward))
    object.__setattr__(self, "_train", tuple(train))
    object.__setattr__(self, "_eval", tuple(held_out))
    object.__setattr__(self, "_eval_set", frozenset(held_out))
    object.__setattr__(self, "_tokenizer", tokenizer)

  def _make_tokenizer(self, texts: list[str]) -> Tokenizer:
    if self.tokenizer_spec.startswith("hf:"):  # a checkpoint's own (what `init_from` sets)
      try:
        return load_tokenizer(self.tokenizer_spec[len("hf:"):])
      except HFTokenizerError as err:
        raise TaskError(f"prompts: tokenizer_spec {self.tokenizer_spec!r}: {err}") from None
    if self.tokenizer_spec:
      return from_spec(self.tokenizer_spec)
    return CharTokenizer("".join(sorted(set("".join(texts)) | set(self.alphabet))))

  @property
  def tokenizer(self) -> Tokenizer:
    return self._tokenizer

  @property
  def prompt_len(self) -> int:
    return max(len(self._tokenizer.encode(p)) for p in self._train + self._eval) + 1

  @property
  def max_new_tokens(self) -> int:
    return DEFAULT_MAX_NEW_TOKENS

  def longest_prompt(self) -> str:
    return max(self._train + self._eval, key=lambda p: len(self._tokenizer.encode(p)))

  @property
  def train_prompts(self) -> tuple[str, ...]:
    return self._train

  def held_out(self) -> list[str] | None:
    return list(self._eval) or None

  def is_held_out(self, prompt):
    return prompt in self._eval_set

  def sample(self, rng, n):
    return [self._train[int(i)] for i in rng.integers(0, len(self._train), size=n)]

  def score(self, prompt, completion):
    return float(self.score_batch([prompt], [completion])[0])

  def score_batch(self, prompts, completions):
    return score_texts(self.user_reward, self._tokenizer, prompts, completions,
                       max_new_tokens=self.max_new_tokens)

  def jax_reward(self):
    if self.user_reward.is_jax:
      return token_reward(self.user_reward, self._tokenizer)
    return None  # Python forms: `score_batch` through the host callback.

  @property
  def reward_name(self) -> str:
    return self.reward


def check_task_reward(task: Task, *, max_new_tokens: int = 0, num_completions: int = 32,
                      seed: int = 0) -> RewardCheck | None:
  """The pre-training check of a task that wraps a user reward (None for built-in tasks).

  `max_new_tokens`: the run's answer budget (0: the task's own).
  """
  reward = getattr(task, "user_reward", None)
  if reward is None:
    return None
  prompts = task.sample(np.random.default_rng(seed), min(num_completions, 8))
  return check_reward(reward, prompts, tokenizer=task.tokenizer,
                      max_new_tokens=max_new_tokens or task.max_new_tokens,
                      num_completions=num_completions, seed=seed)


def _absolute(path: str) -> str:
  return str(Path(path).expanduser().resolve())


def prompt_task_values(*, reward: str | None, prompts: str | None,
                       eval_prompts: str | None = None, alphabet: str | None = None,
                       tokenizer: str | None = None) -> dict[str, Any]:
  """`train --reward F.py:fn --prompts P [...]` -> the typed config values (dotted keys) of the
  `prompts` task. Paths become absolute, so that `--resume` works from any directory."""
  extras = {"eval_prompts": eval_prompts, "alphabet": alphabet, "tokenizer": tokenizer}
  if reward is None and prompts is None:
    given = [f"--{k.replace('_', '-')}" for k, v in extras.items() if v is not None]
    if given:
      raise TaskError(f"{', '.join(given)} only go with --reward and --prompts")
    return {}
  if reward is None or prompts is None:
    raise TaskError("--reward and --prompts go together: tokenzero train --reward "
                    "FILE.py:FUNCTION --prompts PROMPTS.txt")
  path, sep, function = reward.rpartition(":")
  params = {
      "reward": f"{_absolute(path)}{sep}{function}" if sep else reward,
      "prompts": _absolute(prompts),
      "eval_prompts": _absolute(eval_prompts) if eval_prompts else None,
      "alphabet": alphabet,
      "tokenizer_spec": tokenizer,
  }
  return {"task.name": "prompts", **{f"task.params.{key}": value
                                     for key, value in params.items() if value is not None}}
