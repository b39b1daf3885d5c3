"""The held-out split of every task: evaluation prompts never in training, the same set for every
count, a cap on the mass it takes, prompts files as declared, and the legacy rule of old runs
(tokenzero/prompts.py, `Task.instance_key` / `is_held_out` of tokenzero/tasks/)."""

import itertools

import numpy as np
import pytest

from tokenzero import prompts
from tokenzero.tasks import TASKS, TaskError, make_task
from tokenzero.tasks.base import in_eval_bucket

BUILT_IN = sorted(name for name in TASKS if name != "prompts")  # `prompts` needs files: below.
COUNTS = (32, 128, 512, 2048)


def _prompt_file_task(tmp_path):
  reward = tmp_path / "reward.py"
  reward.write_text("def score(prompt, completion):\n  return float(prompt == completion)\n")
  path = tmp_path / "prompts.txt"
  path.write_text("".join(f"q{i}\n" for i in range(300)))
  return make_task("prompts", {"prompts": str(path), "reward": f"{reward}:score"})


@pytest.mark.parametrize("name", BUILT_IN + ["prompts"])
def test_no_evaluation_prompt_is_ever_a_training_prompt(name, tmp_path):
  task = _prompt_file_task(tmp_path) if name == "prompts" else make_task(name)
  training = list(itertools.chain.from_iterable(
      prompts.training_stream(task, 7, split="hash", eval_texts=()).draw(i, 64)
      for i in range(200)))
  trained = {task.instance_key(p) for p in training}
  by_count = {n: prompts.eval_texts(task, 7, n, split="hash") for n in COUNTS}
  fixed = task.held_out()  # a prompts file's declared set; None: drawn
  for count, texts in by_count.items():
    assert len(texts) == (min(count, len(fixed)) if fixed else count)
    assert all(task.is_held_out(p) for p in texts)
    # Not the text, and not another prompt of the same instance (a scramble of the same word).
    assert not trained & {task.instance_key(p) for p in texts}, count
  # A larger count extends a smaller one.
  for small, large in zip(COUNTS, COUNTS[1:]):
    assert by_count[large][:small] == by_count[small]


@pytest.mark.parametrize("name", BUILT_IN)
def test_the_held_out_mass_is_about_a_tenth_and_at_most_a_fifth(name):
  task = make_task(name)
  held = [task.is_held_out(p) for p in task.sample(np.random.default_rng(1), 20_000)]
  assert 0.03 <= np.mean(held) <= 0.2


def test_parentheses_keeps_its_heavy_one_bracket_prompts_in_training():
  task = make_task("parentheses")
  assert not task.is_held_out("(") and not task.is_held_out("[")
  assert all(len(p) > 1 for p in prompts.eval_texts(task, 0, 256, split="hash"))


@pytest.mark.parametrize("name, prompt, same, other", [
    ("anagram", "tab", "bat", "bot"),  # letters, not their order
    ("sort", "312", "123", "124"),
    ("addition", "12+345", "345+12", "12+346"),
    ("countdown", "3,7,25:31", "25,3,7:31", "3,7,25:32"),
    ("reverse", "abc", "abc", "cba"),
    ("parentheses", "([", "([", "(("),
])
def test_an_instance_is_every_prompt_that_asks_the_same(name, prompt, same, other):
  task = make_task(name)
  assert task.instance_key(prompt) == task.instance_key(same)
  assert task.instance_key(prompt) != task.instance_key(other)


def test_the_bucket_is_a_fixed_hash():
  # Pinned: a change of hash or salt would silently move every "hash" run's evaluation set.
  assert [k for k in map(str, range(120)) if in_eval_bucket(k)] == [
      "11", "25", "39", "43", "72", "104", "105", "108", "111", "117", "118", "119"]


def test_prompt_files_keep_their_declared_split(tmp_path):
  task = _prompt_file_task(tmp_path)
  assert prompts.eval_texts(task, 3, 10, split="hash") == task.held_out()[:10]
  assert prompts.eval_texts(task, 3, 10, split="legacy") == task.held_out()[:10]
  assert all(task.is_held_out(p) for p in task.held_out())
  assert not any(task.is_held_out(p) for p in task.train_prompts)


def test_the_legacy_split_is_the_old_one():
  task = make_task("anagram")
  old = list(task.sample(np.random.default_rng([5, 2]), 128))  # what runs before it drew
  assert prompts.eval_texts(task, 5, 128, split="legacy") == old
  stream = prompts.training_stream(task, 5, split="legacy", eval_texts=old)
  assert not set(old) & set(stream.draw(1, 512))
  with pytest.raises(ValueError, match="unknown evaluation split"):
    prompts.eval_texts(task, 5, 128, split="nosuch")


def test_a_space_without_held_out_instances_is_an_error():
  task = make_task("parentheses", {"max_pairs": 1})  # only "(" and "[": nothing to hold out
  with pytest.raises(TaskError, match="too small for a held-out split"):
    prompts.eval_texts(task, 0, 4, split="hash")
