"""Curriculum from the task's own generator: the task at a small size first, one size up each
time the network masters it (`task.curriculum=true`).

A run then starts where reward is dense. A task with a size knob (`Task.size_param`: sort's
and reverse's `length`, addition's `digits`, parentheses' `max_pairs`, anagram's `max_len`,
countdown's `count`) builds itself at every size of its `size_range()` (`Task.at_size`). A
level's prompts are prompts of the full task: they encode into its slots with its tokenizer,
and its reward scores them, so the network's shapes and the compiled programs never change with
the level. Training draws from the level's generator, less the full task's held-out instances;
evaluation (`eval_greedy_*`) stays on the full task's held-out prompts, so curves compare with
runs without a curriculum.

The signal that moves the level up is the network's greedy success, after the iteration's
updates, on a fixed batch of the level's own prompts (`curriculum_success`, at each
evaluation), not self-play's success: that one is the search's (with exploration and sampling),
which finds answers the network alone does not give yet, and a level is learned when the
network alone answers it. Those prompts are the level's training distribution, not held-out
ones: the question is whether the level is learned (generalisation is `eval_greedy_*`'s), and a
small level may have no held-out instance at all (every 1-digit sort prompt trains).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from tokenzero import evaluate, prompts, rewards
from tokenzero.config import ConfigError, TaskConfig
from tokenzero.tasks import TASKS, Task

# Draws per wanted check prompt before giving up (a level's space is never that small).
_MAX_DRAWS = 1000


@dataclasses.dataclass(frozen=True)
class Level:
  """One size of the task, what the loop needs of it."""
  size: int
  stream: prompts.PromptStream  # its training prompts, none held out of the full task
  check: prompts.PromptBatch  # [B, P] its prompts whose greedy success moves the level up


@dataclasses.dataclass(frozen=True)
class Curriculum:
  levels: Mapping[int, Level]  # size -> level, from `start` to the full task's size
  start: int
  threshold: float

  @property
  def full(self) -> int:
    return max(self.levels)

  def size_after(self, rows: Sequence[dict[str, Any]]) -> int:
    """The size of the next iteration, from the rows so far (the last one decides): the same
    for a resumed run as for one that never stopped."""
    if not rows or "curriculum_level" not in rows[-1]:
      return self.start
    return next_size(rows[-1]["curriculum_level"], rows[-1].get("curriculum_success"),
                     threshold=self.threshold, full=self.full)


def next_size(size: int, success: float | None, *, threshold: float, full: int) -> int:
  """One size up once `success` (None: not measured at this iteration) reaches `threshold`;
  never past `full`, never down."""
  if success is not None and success >= threshold and size < full:
    return size + 1
  return size


def supported() -> list[str]:
  """The built-in tasks that have a size to grow."""
  return sorted(name for name, cls in TASKS.items() if cls.size_param)


def check_config(task_config: TaskConfig, task: Task) -> None:
  """`task.curriculum*` against the task; a ConfigError naming what to change."""
  if not task_config.curriculum:
    return
  if not task.size_param:
    raise ConfigError(f"task.curriculum=true needs a task with a size to grow; task "
                      f"{task.name!r} has none (the tasks with one: {', '.join(supported())})")
  low, high = task.size_range()
  start = task_config.curriculum_start
  if start and not low <= start <= high:
    raise ConfigError(f"task.curriculum_start={start} is outside task {task.name!r}'s sizes "
                      f"{low}..{high} (its {task.size_param}); 0 starts at {low}")


def check_texts(level: Task, seed: int, n: int, *, held_out) -> list[str]:
  """`n` prompts of `level`, none for which `held_out(prompt)`: its fixed check set (a stream
  of its own, keyed by the size, so the same at every evaluation and on resume)."""
  rng = np.random.default_rng([seed, 4, level.size_range()[1]])
  out: list[str] = []
  for _ in range(_MAX_DRAWS):
    out.extend(p for p in level.sample(rng, n) if not held_out(p))
    if len(out) >= n:
      return out[:n]
  raise ValueError(f"{level.name}: no prompt of size {level.size_range()[1]} is a training one")


def make(setup, eval_texts: Sequence[str]) -> Curriculum:
  """Every level of a run's curriculum (`setup`: a `run.Setup`, which imports this module; its
  `config.task` says where to start and the threshold): each level's training stream and its
  check batch, encoded into the full task's slots. The check batch is as large as the
  evaluation's (`eval_texts`), so that it reuses the evaluation's compiled program."""
  config, task = setup.config, setup.task
  low, high = task.size_range()
  start = config.task.curriculum_start or low
  levels = {}
  for size in range(start, high + 1):
    level_task = task.at_size(size) if size != high else task
    stream = prompts.training_stream(task, config.seed, split=config.eval.split,
                                     eval_texts=eval_texts, level=level_task)
    texts = check_texts(level_task, config.seed, len(eval_texts), held_out=stream.held_out)
    levels[size] = Level(size, stream,
                         prompts.encode_batch(setup.tokenizer, texts, task.prompt_len))
  return Curriculum(levels, start, config.task.curriculum_threshold)


def row(setup, params, plan: Curriculum, size: int) -> dict[str, Any]:
  """The metrics row's curriculum keys at an evaluation: the size, and the greedy success of
  `params` on its check prompts (`setup`: the run's `run.Setup`). At the full size there is no
  size to move up to, and the full task's own evaluation says the rest: no check."""
  if size == plan.full:
    return {"curriculum_level": size}
  batch = plan.levels[size].check
  result = evaluate.evaluate_greedy(
      params, batch.tokens, batch.lengths, setup.allowed, config=setup.config.model,
      reward_fn=setup.reward_fn, max_new_tokens=setup.max_new_tokens,
      eos_id=setup.tokenizer.eos_id, success_threshold=setup.config.task.success_threshold,
      mesh=setup.mesh)
  rewards.raise_pending()
  return {"curriculum_level": size, "curriculum_success": float(result.success.mean())}
