"""Reward plug-ins: every form on tokens, bad rewards stopped with a clear error, the contract
check, prompt-file tasks, and a planted reward that only the search finds through a callback."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tokenzero
from tokenzero import episode as episode_lib, prompts as prompts_lib, rewards
from tokenzero import search as search_lib
from tokenzero.config import SearchConfig
from tokenzero.rewards import RewardError
from tokenzero.tasks import PromptFileTask, TaskError, make_task
from tokenzero.tokenizer import CharTokenizer, answer_mask

TOKENIZER = CharTokenizer("abc")
PROMPTS = ["ab", "abc", "ca"]
COMPLETIONS = ["ba", "c", "aac"]
T = 4
A_ID = TOKENIZER.encode("a")[0]


def _run(token_fn, prompts=PROMPTS, completions=COMPLETIONS):
  """The TokenReward under jit on the pairs, blocked on, pending errors raised."""
  args = rewards.encode_pairs(TOKENIZER, prompts, completions, T)
  out = jax.block_until_ready(jax.jit(token_fn)(*args))
  rewards.raise_pending()
  return np.asarray(out)


# --- every form ------------------------------------------------------------------------------


def reversed_prompt(prompt, completion):
  return float(completion == prompt[::-1])


@tokenzero.batched_reward
def batched_length(prompts, completions):
  return [len(c) / 4 for c in completions]


@tokenzero.jax_reward
def count_a(tokens, lengths):
  del lengths
  return jnp.sum(tokens == A_ID, axis=1).astype(jnp.float32)


@tokenzero.jax_reward(with_prompt=True)
def same_length(prompt, prompt_len, completion, completion_len):
  del prompt, completion
  return (prompt_len == completion_len).astype(jnp.float32)  # SEP and EOS both counted


@tokenzero.step_reward
def step_a(prompt, partial):
  del prompt
  return float(partial[-1] == "a")


@tokenzero.jax_step_reward
def jax_step_a(tokens, lengths):
  del lengths
  return (tokens == A_ID).astype(jnp.float32)


@pytest.mark.parametrize("fn,expected", [
    (reversed_prompt, [1.0, 0.0, 0.0]),
    (batched_length, [0.5, 0.25, 0.75]),
    (count_a, [1.0, 0.0, 2.0]),
    (same_length, [1.0, 0.0, 0.0]),
    (step_a, [1.0, 0.0, 2.0]),
    (jax_step_a, [1.0, 0.0, 2.0]),
], ids=lambda x: getattr(x, "__name__", ""))
def test_each_reward_form_on_tokens(fn, expected):
  reward = rewards.as_reward(fn)
  assert reward.form == {"reversed_prompt": "text", "batched_length": "batched",
                         "count_a": "jax", "same_length": "jax", "step_a": "step",
                         "jax_step_a": "jax_step"}[fn.__name__]
  np.testing.assert_allclose(_run(rewards.token_reward(fn, TOKENIZER)), expected)
  np.testing.assert_allclose(
      rewards.score_texts(fn, TOKENIZER, PROMPTS, COMPLETIONS, max_new_tokens=T), expected)


def test_python_reward_sees_only_ended_rows_in_one_call():
  calls = []

  @tokenzero.batched_reward
  def spy(prompts, completions):
    calls.append(list(completions))
    return [1.0] * len(completions)

  args = list(rewards.encode_pairs(TOKENIZER, PROMPTS, COMPLETIONS, T))
  args[3] = args[3] - np.array([0, 1, 0], np.int32)  # row 1 has not ended (no EOS yet)
  out = jax.jit(rewards.token_reward(spy, TOKENIZER))(*args)
  np.testing.assert_allclose(out, [1.0, 0.0, 1.0])
  assert calls == [["ba", "aac"]]


def test_step_rewards_add_to_the_outcome():
  outcome = rewards.token_reward(reversed_prompt, TOKENIZER)
  step = rewards.token_reward(jax_step_a, TOKENIZER)
  np.testing.assert_allclose(_run(rewards.add_rewards(outcome, step, step_weight=0.5)),
                             [1.5, 0.0, 1.0])
  assert rewards.add_rewards(outcome, None) is outcome


def test_kl_to_reference():
  logits = jnp.log(jnp.asarray([[[0.5, 0.5], [0.9, 0.1]]]))
  reference = jnp.log(jnp.asarray([[[0.5, 0.5], [0.5, 0.5]]]))
  kl = rewards.kl_to_reference(logits, reference, jnp.asarray([[True, True]]))
  np.testing.assert_allclose(kl, [0.9 * np.log(1.8) + 0.1 * np.log(0.2)], rtol=1e-5)
  assert float(rewards.kl_to_reference(logits, reference, jnp.asarray([[True, False]]))[0]) == 0


# --- bad rewards -----------------------------------------------------------------------------


def raises_on_c(prompt, completion):
  if completion == "c":
    raise KeyError("no score for c")
  return 1.0


def nan_on_c(prompt, completion):
  return float("nan") if completion == "c" else 1.0


def inf_on_c(prompt, completion):
  return float("inf") if completion == "c" else 1.0


def none_on_c(prompt, completion):
  return None if completion == "c" else 1.0


def string_on_c(prompt, completion):
  return "high" if completion == "c" else 1.0


@tokenzero.batched_reward
def batched_raises_on_c(prompts, completions):
  return [raises_on_c(p, c) for p, c in zip(prompts, completions)]


@tokenzero.batched_reward
def batched_short(prompts, completions):
  return [1.0] * (len(completions) - 1)


@tokenzero.batched_reward
def batched_none(prompts, completions):
  return None


@tokenzero.batched_reward
def batched_nan_on_c(prompts, completions):
  return np.array([nan_on_c(p, c) for p, c in zip(prompts, completions)])


@tokenzero.jax_reward
def jax_nan_on_c(tokens, lengths):
  del lengths
  return jnp.where(tokens[:, 0] == TOKENIZER.encode("c")[0], jnp.nan, 1.0)


ON_C = ["prompt 'abc' and completion 'c'"]


@pytest.mark.parametrize("fn,fragments", [
    (raises_on_c, ["raised KeyError: 'no score for c'"] + ON_C),
    (nan_on_c, ["returned nan"] + ON_C + ["must return a finite float"]),
    (inf_on_c, ["returned inf"] + ON_C),
    (none_on_c, ["returned None (a NoneType)"] + ON_C),
    (string_on_c, ["returned 'high' (a str)"] + ON_C),
    (batched_raises_on_c, ["raised KeyError: 'no score for c'"] + ON_C),
    (batched_short, ["returned 2 values for 3 completions", "(the first: prompt 'ab' and "
                     "completion 'ba')", "one float per completion"]),
    (batched_none, ["returned None for a batch of 3 completions"]),
    (batched_nan_on_c, ["returned nan"] + ON_C),
    (jax_nan_on_c, ["returned nan"] + ON_C),
], ids=lambda x: getattr(x, "__name__", ""))
def test_bad_reward_stops_with_a_clear_error(fn, fragments):
  with pytest.raises(RewardError) as info:
    _run(rewards.token_reward(fn, TOKENIZER))
  message = str(info.value)
  for fragment in [f"reward '{fn.__name__}'"] + fragments:
    assert fragment in message, message
  assert info.value.reward_name == fn.__name__
  assert rewards.pending() is None  # raised once, then cleared
  # The plain call names the same input, with no jit in between.
  with pytest.raises(RewardError, match=f"reward '{fn.__name__}'"):
    rewards.score_texts(fn, TOKENIZER, PROMPTS, COMPLETIONS, max_new_tokens=T)


def test_bad_jax_reward_shape_fails_at_trace_time():
  @tokenzero.jax_reward
  def wrong_shape(tokens, lengths):
    return tokens.astype(jnp.float32)

  with pytest.raises(RewardError, match=r"'wrong_shape' returned shape \(3, 4\) for a batch of 3"):
    _run(rewards.token_reward(wrong_shape, TOKENIZER))


def test_failed_reward_is_not_called_again_until_raised():
  calls = []

  def flaky(prompt, completion):
    calls.append(completion)
    return float("nan")

  token_fn = jax.jit(rewards.token_reward(flaky, TOKENIZER))
  args = rewards.encode_pairs(TOKENIZER, PROMPTS, COMPLETIONS, T)
  with pytest.raises(RewardError, match="'flaky' returned nan for prompt 'ab'"):
    with rewards.reward_errors():
      for _ in range(3):
        out = jax.block_until_ready(token_fn(*args))
  assert calls == ["ba"]
  np.testing.assert_array_equal(out, 0.0)


def test_reward_errors_replaces_the_xla_error():
  # Something below the reward (here, raising inside the callback) fails in XLA; the recorded
  # reward error is what the user sees.
  def host(x):
    rewards._record(object(), RewardError("reward 'r' returned nan for prompt 'p'"))
    raise RuntimeError("lost in XLA")

  f = jax.jit(lambda x: jax.pure_callback(host, jax.ShapeDtypeStruct((), jnp.float32), x))
  with pytest.raises(RewardError, match="reward 'r' returned nan for prompt 'p'"):
    with rewards.reward_errors():
      jax.block_until_ready(f(1.0))


# --- loading reward files --------------------------------------------------------------------


def test_load_reward_from_a_file(tmp_path):
  path = tmp_path / "my_rewards.py"
  path.write_text("import tokenzero\n\n"
                  "def plain(prompt, completion):\n  return float(completion == prompt)\n\n"
                  "@tokenzero.batched_reward\n"
                  "def many(prompts, completions):\n  return [0.5] * len(prompts)\n\n"
                  "THRESHOLD = 3\n")
  plain = rewards.load_reward(f"{path}:plain")
  assert plain.form == "text" and plain.name == f"{path}:plain"
  assert plain.fn("ab", "ab") == 1.0
  assert rewards.load_reward(f"{path}:many").form == "batched"
  with pytest.raises(RewardError, match=r"has no function 'missing'; it defines: many, plain"):
    rewards.load_reward(f"{path}:missing")
  with pytest.raises(RewardError, match=r"'THRESHOLD' in reward file .* is a int, not a function"):
    rewards.load_reward(f"{path}:THRESHOLD")
  with pytest.raises(RewardError, match=r"reward file '.*nope.py' does not exist"):
    rewards.load_reward(f"{tmp_path}/nope.py:plain")
  with pytest.raises(RewardError, match="is not of the form path/to/file.py:function"):
    rewards.load_reward(str(path))
  broken = tmp_path / "broken.py"
  broken.write_text("import not_a_module_anywhere\n")
  with pytest.raises(RewardError, match="importing reward file .* raised ModuleNotFoundError"):
    rewards.load_reward(f"{broken}:f")


# --- the contract check ----------------------------------------------------------------------


@pytest.mark.parametrize("fn", [reversed_prompt, batched_length, count_a])
def test_check_reward_passes_good_rewards(fn):
  result = rewards.check_reward(fn, PROMPTS, alphabet="abc", max_new_tokens=T,
                                num_completions=8)
  assert result.ok, result.verdict
  assert result.verdict.startswith(f"PASS: reward '{fn.__name__}'")
  assert "ms per call on a batch of 8" in result.verdict
  assert len(result.values) == 8 and result.seconds_per_call > 0


def test_check_reward_fails_bad_rewards(tmp_path):
  @tokenzero.batched_reward
  def depends_on_batch(prompts, completions):
    return [float(len(prompts))] * len(prompts)

  result = rewards.check_reward(depends_on_batch, PROMPTS, alphabet="abc", num_completions=6)
  assert not result.ok
  assert "not batch-consistent" in result.verdict and "one at a time" in result.verdict
  result = rewards.check_reward(string_on_c, ["ab"], alphabet="c", max_new_tokens=3,
                                num_completions=40)
  assert not result.ok and result.verdict.startswith("FAIL: reward 'string_on_c' returned 'high'")
  result = rewards.check_reward(f"{tmp_path}/missing.py:f", PROMPTS)
  assert not result.ok and "does not exist" in result.verdict
  result = rewards.check_reward(lambda p, c: 2.0, PROMPTS)
  assert result.ok and "values outside [0, 1]" in result.verdict


# --- prompt-file tasks -----------------------------------------------------------------------


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
  token_fn = rewards.task_token_reward(task)
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
  check = rewards.check_task_reward(task, num_completions=8)
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


# --- a planted reward only the search finds, through a Python callback ----------------------


def test_search_finds_a_planted_python_reward(tiny_params, tiny_config, sort_task):
  tokenizer = sort_task.tokenizer
  texts = sort_task.sample(np.random.default_rng(0), 4)
  batch = prompts_lib.encode_batch(tokenizer, texts, sort_task.prompt_len)
  allowed = jnp.asarray(answer_mask(tokenizer, tokenizer.vocab_size))
  max_new_tokens = 1  # every child is terminal: its reward is what the search must find.
  state = episode_lib.start(tiny_params, tiny_config, batch.tokens, batch.lengths,
                            max_new_tokens)
  prior = jax.nn.softmax(episode_lib.mask_logits(state.logits, allowed))
  # The prior's least likely digit, the same for every row, is the only first token that pays.
  planted = int(jnp.argmin(jnp.where(allowed[None, 3:], prior[:, 3:], 1.0).max(0))) + 3
  planted_char = tokenizer.decode([planted])
  calls = []

  def starts_with_planted(prompt, completion):
    calls.append(completion)
    return float(completion.startswith(planted_char))

  reward_fn = rewards.token_reward(starts_with_planted, tokenizer)
  search_config = SearchConfig(num_simulations=24, top_k=tokenizer.vocab_size,
                               max_num_considered_actions=16)

  @jax.jit
  def search(params, key):
    start = episode_lib.start(params, tiny_config, batch.tokens, batch.lengths, max_new_tokens)
    return search_lib.run_search(params, tiny_config, search_config, start, key,
                                 reward_fn=reward_fn, allowed=allowed,
                                 eos_id=tokenizer.eos_id)

  out = jax.block_until_ready(search(tiny_params, jax.random.key(0)))
  rewards.raise_pending()
  assert calls, "the Python reward never ran inside the search"
  slot = np.argmax(np.asarray(out.candidates) == planted, axis=1)
  planted_weight = np.asarray(out.action_weights)[np.arange(4), slot]
  planted_prior = np.asarray(prior)[:, planted]
  assert np.all(planted_prior < 1 / 10), planted_prior
  assert np.all(planted_weight > 0.5), planted_weight
  np.testing.assert_array_equal(out.token, planted)


def test_a_rebuilt_prompt_task_runs_the_edited_reward(tmp_path):
  # Fix the reward file, build the task again in the same process (as --resume does): the new
  # code runs, never a cached function of the old task.
  reward = tmp_path / "judge.py"
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("ab\nba\n")
  params = {"prompts": str(prompts), "reward": f"{reward}:judge", "eval_fraction": 0.0}
  reward.write_text("def judge(prompt, completion):\n  return 0.25\n")
  old = make_task("prompts", params)
  old_fn = rewards.task_token_reward(old)
  reward.write_text("def judge(prompt, completion):\n  return 0.75\n")
  new = make_task("prompts", params)
  new_fn = rewards.task_token_reward(new)
  assert old != new and new_fn is not old_fn
  assert rewards.task_token_reward(new) is new_fn  # still one function per task
  args = rewards.encode_pairs(new.tokenizer, ["ab"], ["b"], 4)
  np.testing.assert_allclose(jax.jit(new_fn)(*args), [0.75])
  np.testing.assert_allclose(jax.jit(old_fn)(*args), [0.25])
