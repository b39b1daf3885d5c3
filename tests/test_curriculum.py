"""task.curriculum (tokenzero/curriculum.py): a level's prompts are the full task's (same slots,
tokenizer and reward), the level rises past the threshold only, no held-out prompt trains at any
level, and the config errors. A tiny curriculum run is tests/test_loop.py's (it shares that
file's compiled programs)."""

import itertools

import jax
import numpy as np
import pytest

from tokenzero import curriculum, prompts, rewards, run
from tokenzero import config as config_lib
from tokenzero.tasks import (TASKS, Addition, Anagram, Countdown, Parentheses, Reverse, Sort,
                             make_task)
from tokenzero.tasks import brackets, countdown

SIZED = [Sort(length=4), Reverse(length=4, min_length=2, alphabet="abc"), Addition(digits=3),
         Addition(digits=3, min_digits=2, answer_reversed=False), Parentheses(max_pairs=3),
         Anagram(), Countdown()]


def _answer(task, prompt):
  if isinstance(task, Sort):
    return "".join(sorted(prompt))
  if isinstance(task, Reverse):
    return prompt[::-1]
  if isinstance(task, Addition):
    return task.answer(prompt)
  if isinstance(task, Anagram):
    return task.answers(prompt)[0]
  if isinstance(task, Parentheses):
    return brackets.closing(prompt, task.pairs)
  return countdown.solve(*countdown.parse_prompt(prompt))


def test_every_built_in_task_but_prompt_files_has_a_size():
  assert curriculum.supported() == sorted(set(TASKS) - {"prompts"})


@pytest.mark.parametrize("task", SIZED, ids=repr)
def test_a_level_is_prompts_of_the_full_task_that_its_reward_scores(task):
  low, high = task.size_range()
  assert task.at_size(high) == task or isinstance(task, Anagram)
  reward = jax.jit(task.jax_reward()) if task.jax_reward() else None
  rng = np.random.default_rng(0)
  for size in range(low, high + 1):
    level = task.at_size(size)
    assert level.size_range() == (low, size)
    assert level.tokenizer == task.tokenizer
    texts = level.sample(rng, 24)
    batch = prompts.encode_batch(task.tokenizer, texts, task.prompt_len)  # the full task's slots
    answers = [_answer(level, p) for p in texts]
    wrong = [a[:-1] if i % 2 else a[::-1] + a[:1] for i, a in enumerate(answers)]
    for completions in (answers, wrong):
      completions = [c[:task.max_new_tokens] for c in completions]
      scores = [task.score(p, c) for p, c in zip(texts, completions)]
      # The full task's verifier is the level's own.
      assert [s >= 1 for s in scores] == [level.verify(p, c) for p, c in zip(texts, completions)]
      if reward is not None:  # and the compiled reward, on the full task's slots, agrees.
        _, _, completion, completion_len = rewards.encode_pairs(
            task.tokenizer, texts, completions, task.max_new_tokens)
        in_graph = reward(batch.tokens, batch.lengths, completion, completion_len)
        np.testing.assert_allclose(np.asarray(in_graph), scores, atol=1e-6)
    assert all(task.verify(p, a) for p, a in zip(texts, answers))
  with pytest.raises(Exception, match="outside"):
    task.at_size(high + 1)


def test_the_level_rises_once_success_reaches_the_threshold():
  step = lambda size, success: curriculum.next_size(size, success, threshold=0.8, full=3)
  assert step(1, 0.79) == 1 and step(1, None) == 1  # None: no evaluation this iteration
  assert step(1, 0.8) == 2 and step(2, 1.0) == 3
  assert step(3, 1.0) == 3  # never past the full size
  plan = curriculum.Curriculum(levels={1: None, 2: None, 3: None}, start=1, threshold=0.8)
  assert plan.size_after([]) == 1
  assert plan.size_after([{"curriculum_level": 2, "curriculum_success": 0.9}]) == 3
  assert plan.size_after([{"curriculum_level": 2, "curriculum_success": 0.9},
                          {"curriculum_level": 2}]) == 2  # the last row decides


@pytest.mark.parametrize("name", curriculum.supported())
def test_no_level_ever_trains_on_a_held_out_prompt(name):
  config = config_lib.resolve(overrides=[f"task.name={name}", "task.curriculum=true"])
  setup = run.build(config)
  task = setup.task
  eval_texts = prompts.eval_texts(task, config.seed, 128, split="hash")
  plan = curriculum.make(setup, eval_texts)
  assert sorted(plan.levels) == list(range(task.size_range()[0], task.size_range()[1] + 1))
  evaluated = {task.instance_key(p) for p in eval_texts}
  for size, level in plan.levels.items():
    drawn = list(itertools.chain.from_iterable(level.stream.draw(i, 64) for i in range(30)))
    assert level.check.tokens.shape == (128, task.prompt_len)
    checked = [task.tokenizer.decode(row[:n - 1].tolist()) for row, n in
               zip(level.check.tokens, level.check.lengths)]
    # The level's own sizes (a level of anagram keeps the full word list's slots).
    assert max(map(len, drawn + checked)) < task.at_size(size).prompt_len
    for texts in (drawn, checked):
      assert not any(task.is_held_out(p) for p in texts), size
      assert not evaluated & {task.instance_key(p) for p in texts}, size


def test_curriculum_config_errors(tmp_path):
  reward = tmp_path / "reward.py"
  reward.write_text("def score(prompt, completion):\n  return float(prompt == completion)\n")
  path = tmp_path / "prompts.txt"
  path.write_text("".join(f"q{i}\n" for i in range(50)))
  task = make_task("prompts", {"prompts": str(path), "reward": f"{reward}:score"})
  config = config_lib.resolve(overrides=["task.name=prompts", "task.curriculum=true"])
  with pytest.raises(config_lib.ConfigError, match=r"task 'prompts' has none \(the tasks with "
                     r"one: addition, anagram, countdown, parentheses, reverse, sort\)"):
    run.build(config, task=task)
  with pytest.raises(config_lib.ConfigError, match=r"curriculum_start=7 is outside task "
                     r"'sort'.s sizes 1\.\.5 \(its length\)"):
    run.build(config_lib.resolve(overrides=["task.curriculum=true", "task.curriculum_start=7"]))
  with pytest.raises(config_lib.ConfigError, match=r"curriculum_threshold must be in \[0, 1\]"):
    run.build(config_lib.resolve(overrides=["task.curriculum=true",
                                            "task.curriculum_threshold=1.5"]))
  with pytest.raises(config_lib.ConfigError, match=r"needs eval\.split='hash'"):
    run.build(config_lib.resolve(overrides=["task.curriculum=true", "eval.split=legacy"]))
