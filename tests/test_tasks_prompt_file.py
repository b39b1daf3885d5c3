"""The prompts task: prompts files and their held-out split, its reward on tokens, its contract
check, its errors, and a rebuilt task running the edited reward (tokenzero/tasks/prompt_file.py,
`task_token_reward` of tokenzero/tasks/base.py)."""

import json

import jax
import numpy as np
import pytest

from tokenzero import rewards
from tokenzero.rewards import RewardError
from tokenzero.tasks import (PromptFileTask, TaskError, check_task_reward, make_task,
                             task_token_reward)


@pytest.fixture()
def reward_file(tmp_path):
  path = tmp_path / "reward.py"
  path.write_text("def echo(prompt, completion):\n"
                  "  return sum(a == b for a, b in zip(prompt, completion)) / len(prompt)\n")
  return f"{path}:echo"


def test_prompt_file_task_txt_and_split(tmp_path, reward_file):
  path = tmp_path / "prompts.txt"
  path.write_text("".join(f"q{i}\n" for i in range(20)) + "\n q0 \nq1\n")  # blank, dupes
  task = make_task("prompts", {"prompts": str(path), "reward": reward_file, "alphabet": "xyz"})
  held_out = task.held_out()
  assert len(held_out) == 2 + 1  # ceil(0.1 * 21 distinct prompts)
  assert not set(held_out) & set(task.train_prompts)
  assert len(held_out) + len(task.train_prompts) == 21
  assert task.held_out() == make_task("prompts", {"prompts": str(path),
                                                  "reward": reward_file}).held_out()
  assert set(task.sample(np.random.default_rng(0), 50)) <= set(task.train_prompts)
  assert task.tokenizer.alphabet == " 0123456789qxyz"
  assert task.prompt_len == 4 + 1 and task.max_new_tokens == 16
  assert task.score("q1", "q1") == 1.0 and task.score("q1", "x") == 0.0
  assert task.jax_reward() is None
  token_fn = task_token_reward(task)
  args = rewards.encode_pairs(task.tokenizer, ["q1", "q2"], ["q1", "qx"], 4)
  np.testing.assert_allclose(jax.jit(token_fn)(*args), [1.0, 0.5])
  rewards.raise_pending()


def test_prompt_file_task_jsonl_eval_file_and_tokenizer(tmp_path, reward_file):
  train = tmp_path / "train.jsonl"
  train.write_text("\n".join(json.dumps({"prompt": p, "id": i})
                             for i, p in enumerate(["aa", "ab", "ba"])) + "\n")
  held = tmp_path / "eval.txt"
  held.write_text("ab\nbb\n")
  task = PromptFileTask(prompts=str(train), reward=reward_file, eval_prompts=str(held),
                        tokenizer_spec="byte")
  assert task.train_prompts == ("aa", "ba") and task.held_out() == ["ab", "bb"]
  assert task.tokenizer.describe() == "byte"
  check = check_task_reward(task, num_completions=8)
  assert check.ok, check.verdict


def test_prompt_file_task_errors(tmp_path, reward_file):
  with pytest.raises(TaskError, match="needs task.params.prompts"):
    make_task("prompts", {"reward": reward_file})
  with pytest.raises(TaskError, match="prompts file '.*nope.txt' does not exist"):
    make_task("prompts", {"prompts": str(tmp_path / "nope.txt"), "reward": reward_file})
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"prompt": "a"}\n{"text": "b"}\n')
  with pytest.raises(TaskError, match=r"bad.jsonl:2: each line needs a non-empty string field"):
    make_task("prompts", {"prompts": str(bad), "reward": reward_file})
  good = tmp_path / "p.txt"
  good.write_text("abc\n")
  with pytest.raises(TaskError, match="prompt 'abc' of .*: character 'c'"):
    make_task("prompts", {"prompts": str(good), "reward": reward_file,
                          "tokenizer_spec": "char:ab"})
  with pytest.raises(RewardError, match="has no function 'nope'"):
    make_task("prompts", {"prompts": str(good), "reward": reward_file.replace("echo", "nope")})


def test_a_rebuilt_prompt_task_runs_the_edited_reward(tmp_path):
  # Fix the reward file, build the task again in the same process (as --resume does): the new
  # code runs, never a cached function of the old task.
  reward = tmp_path / "judge.py"
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("ab\nba\n")
  params = {"prompts": str(prompts), "reward": f"{reward}:judge", "eval_fraction": 0.0}
  reward.write_text("def judge(prompt, completion):\n  return 0.25\n")
  old = make_task("prompts", params)
  old_fn = task_token_reward(old)
  reward.write_text("def judge(prompt, completion):\n  return 0.75\n")
  new = make_task("prompts", params)
  new_fn = task_token_reward(new)
  assert old != new and new_fn is not old_fn
  assert task_token_reward(new) is new_fn  # still one function per task
  args = rewards.encode_pairs(new.tokenizer, ["ab"], ["b"], 4)
  np.testing.assert_allclose(jax.jit(new_fn)(*args), [0.75])
  np.testing.assert_allclose(jax.jit(old_fn)(*args), [0.25])
