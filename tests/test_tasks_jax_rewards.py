"""The in-graph rewards of anagram and countdown equal their Python `score` on the text the
host callback would decode, over each task's parameter range: true answers, near misses (one
character changed, one short, one too many, no EOS), random strings, tokens in any layout, and
countdown's values near the int32 limit; past that limit countdown keeps the host callback
(tokenzero/tasks/words.py, tokenzero/tasks/countdown_jax.py). One jit per shape, many rows."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenzero import rewards
from tokenzero.tasks import Anagram, Countdown, countdown, task_token_reward
from tokenzero.tasks.countdown_jax import INT32_MAX, value_bound


def _expected(task, prompt, prompt_len, completion, completion_len):
  """What the host callback scores: `score` on the decoded texts, as float32."""
  decode = task.tokenizer.decode
  return np.asarray([task.score(decode(p[:pl]), decode(c[:cl])) for p, pl, c, cl in
                     zip(prompt, prompt_len, completion, completion_len)], np.float32)


def _near_misses(rng, answer: str, symbols: str, budget: int) -> list[str]:
  changed = list(answer)
  changed[int(rng.integers(len(answer)))] = symbols[int(rng.integers(len(symbols)))]
  extra = answer + symbols[int(rng.integers(len(symbols)))]
  no_eos = (answer * budget)[:budget]  # the whole budget: no EOS fits
  return ["".join(changed), answer[:-1], extra, no_eos]


def _random_texts(rng, symbols: str, budget: int, n: int) -> list[str]:
  return ["".join(rng.choice(list(symbols), size=int(rng.integers(0, budget + 2))))
          for _ in range(n)]


def _encode(task, prompts, completions, *, width: int, prompt_width: int = 0):
  """Text pairs -> reward arguments; completions cut to `width` tokens, prompts padded."""
  prompt, prompt_len, completion, completion_len = rewards.encode_pairs(
      task.tokenizer, prompts, [c[:width] for c in completions], width)
  padded = np.zeros((len(prompts), max(prompt_width, task.prompt_len)), np.int32)
  padded[:, :prompt.shape[1]] = prompt
  return padded, prompt_len, completion, completion_len


def _scrambled_layouts(rng, completion, completion_len):
  """The same rows with specials dropped in, tokens after EOS and other lengths: `decode`
  skips the specials and stops at the first EOS, and so must the reward."""
  completion, completion_len = completion.copy(), completion_len.copy()
  batch, width = completion.shape
  for row in range(batch):
    kind = row % 3
    spots = rng.integers(0, width, size=2)
    if kind == 0:
      completion[row, spots] = rng.integers(0, 3, size=2)  # PAD, SEP or EOS anywhere
    elif kind == 1:
      completion[row, completion_len[row]:] = rng.integers(3, completion.max() + 1,
                                                           size=width - completion_len[row])
    completion_len[row] = rng.integers(0, width + 1) if kind == 2 else completion_len[row]
  return completion, completion_len


def _check(task, reward, args):
  got = np.asarray(reward(*map(jnp.asarray, args)))
  want = _expected(task, *args)
  wrong = np.flatnonzero(got != want)
  decode = task.tokenizer.decode
  assert wrong.size == 0, [(decode(args[0][r]), decode(args[2][r][:args[3][r]]), got[r],
                            want[r]) for r in wrong[:5]]
  return want


def _word_file(tmp_path):
  path = tmp_path / "words.txt"
  path.write_text("listen\nsilent\nenlist\ntinsel\ninlets\ncat\nact\ntac\ndog\ngod\na\nab\n"
                  "stone\nnotes\nonset\nseton\ntones\nbanana\n")
  return str(path)


ANAGRAMS = {
    "default": dict(),
    "smallest": dict(num_words=1, min_len=2, max_len=2),
    "largest": dict(num_words=600, min_len=2, max_len=10, word_seed=5),
    "word_file": dict(word_file=None),
}


@pytest.mark.parametrize("name", ANAGRAMS)
def test_anagram_reward_equals_score(name, tmp_path):
  params = dict(ANAGRAMS[name])
  if "word_file" in params:
    params["word_file"] = _word_file(tmp_path)
  task = Anagram(**params)
  rng = np.random.default_rng(0)
  budget, symbols = task.max_new_tokens, task.tokenizer.alphabet
  # A curriculum level's prompts (its shorter words) are the full task's, scored by its reward.
  level = task.at_size(task.size_range()[0])
  prompts, completions = [], []
  for prompt in (task.sample(rng, 40) + level.sample(rng, 8)
                 + [task.words[0][::-1], "".join(symbols[:3])]):
    answers = task.answers(prompt) or (prompt,)
    texts = list(answers) + _near_misses(rng, answers[0], symbols, budget) + [
        prompt, task.words[int(rng.integers(len(task.words)))], ""]
    texts += _random_texts(rng, symbols, budget, 3)
    prompts += [prompt] * len(texts)
    completions += texts
  # A run's answer budget may pass the task's (task.max_new_tokens): more columns.
  width = budget + 3 if name == "largest" else budget
  args = _encode(task, prompts, completions, width=width, prompt_width=task.prompt_len + 1)
  reward = jax.jit(task.jax_reward())
  want = _check(task, reward, args)
  assert want.max() == 1.0 and 0.0 < np.median(want) < 1.0
  _check(task, reward, args[:2] + _scrambled_layouts(rng, *args[2:]))


def _expression(rng, numbers: list[int]) -> str:
  """A random expression over `numbers`, composite operands in parentheses (as `solve`)."""
  items = [str(n) for n in numbers]
  while len(items) > 1:
    a = items.pop(int(rng.integers(len(items))))
    b = items.pop(int(rng.integers(len(items))))
    wrap = lambda x: f"({x})" if not x.isdigit() else x
    items.append(wrap(a) + "+-*/"[int(rng.integers(4))] + wrap(b))
  return items[0]


def _planted(rng, task, n: int) -> list[tuple[str, str]]:
  """(prompt, a right answer) with the target made from the answer: any value in range."""
  out = []
  while len(out) < n:
    numbers = [int(x) for x in rng.integers(1, task.max_number + 1, size=task.count)]
    used = [int(x) for x in rng.permutation(numbers)[:int(rng.integers(1, task.count + 1))]]
    text = _expression(rng, used)
    try:
      value = countdown.evaluate(text)[0]
    except countdown.ExpressionError:
      continue
    if value >= 1:
      out.append((",".join(map(str, numbers)) + f":{value}", text))
  return out


# Each parameter at its smallest, the default, and the largest int32 holds exactly.
COUNTDOWNS = {
    "default": dict(),
    "smallest": dict(count=2, max_number=1, max_target=2),
    "most_numbers": dict(count=9, max_number=9, max_target=10**9),
    "largest_numbers": dict(count=2, max_number=46340, max_target=INT32_MAX),
    "three_large": dict(count=3, max_number=1290, max_target=INT32_MAX),
    "four_of_100": dict(count=4, max_number=100, max_target=10**8),
}
# At the int32 limit: (prompt, completion), with the overflow in rows that score 0 anyway.
NEAR_INT32 = [
    ("46340,46340:2147395600", "46340*46340"),
    ("46340,46340:2147395599", "46340*46340"),
    ("46340,46339:2147395600", "46340*46339"),
    ("46340,46340:2147395600", "46340*46340*46340"),  # one 46340 too many (overflows)
    ("46340,46340:1", "46340*46340/46340"),
    ("46340,46340:1", "46340/46340"),
    ("46340,46340:2147395600", "0000046340*46340"),
    ("46340,46340:2147395600", "4294967296*46340"),
    ("46340,46340:1073741824", "46340*46340-46340"),
    ("1290,1290,1290:2146689000", "1290*1290*1290"),
    ("1290,1290,1290:2146689000", "1290*(1290*1290)"),
    ("1290,1290,1290:2146689000", "1290*1290*1289"),
    ("1290,1290,1290:1290", "1290*1290*1290/1290"),
    ("1290,1290,1290:1290", "1290*1290*1290/(1290*1290)"),
    ("1290,1290,1290:2146689000", "99999999999999999"),
    ("9,9,9,9,9,9,9,9,9:387420489", "9*9*9*9*9*9*9*9*9"),
    ("9,9,9,9,9,9,9,9,9:387420488", "9*9*9*9*9*9*9*9*9*9/9"),
    ("9,9,9,9,9,9,9,9,9:43046721", "9*9*9*9*9*9*9*9*9/9"),
]


def test_countdown_reward_equals_score():
  """Every parameter setting in one compile: the reward does not depend on them."""
  rng = np.random.default_rng(0)
  prompts, completions = [], []
  for name, params in COUNTDOWNS.items():
    task = Countdown(**params)
    assert value_bound(task.count, task.max_number) <= INT32_MAX
    symbols, budget = task.tokenizer.alphabet, task.max_new_tokens
    pairs = _planted(rng, task, 24)
    if task.count <= 4:
      pairs += [(p, countdown.solve(*countdown.parse_prompt(p))) for p in task.sample(rng, 12)]
    for prompt, answer in pairs:
      numbers, target = countdown.parse_prompt(prompt)
      texts = [answer] + _near_misses(rng, answer, symbols, budget) + [
          _expression(rng, [int(x) for x in rng.permutation(numbers)])]  # another value
      texts += _random_texts(rng, symbols, budget, 2) + _random_texts(rng, "0123456789+-*/()",
                                                                       budget, 2)
      prompts += [prompt] * len(texts)
      completions += [t[:budget] for t in texts]
      # The right answer to a nearby target: partial credit, up to the largest targets.
      near_target = target + int(rng.integers(-target + 1, target + 1))
      prompts.append(prompt.split(":")[0] + f":{near_target}")
      completions.append(answer)
  prompts += [p for p, _ in NEAR_INT32]
  completions += [c for _, c in NEAR_INT32]
  task = Countdown()
  reward = jax.jit(task.jax_reward())
  width = max(map(len, completions)) + 1
  prompt_width = max(map(len, prompts)) + 1
  args = _encode(task, prompts, completions, width=width, prompt_width=prompt_width)
  want = _check(task, reward, args)
  assert np.mean(want == 1.0) > 0.1 and np.mean((0 < want) & (want < 1)) > 0.05
  assert np.mean(want == 0.0) > 0.3
  near = want[-len(NEAR_INT32):]
  assert near[0] == 1.0 and 0 < near[1] < 1 and near[3] == 0.0 and near[9] == 1.0
  _check(task, reward, args[:2] + _scrambled_layouts(rng, *args[2:]))


def test_countdown_past_int32_keeps_the_host_callback():
  for params, jax_ok in [(dict(count=9, max_number=9), True), (dict(count=10), False),
                         (dict(count=4, max_number=100), True),
                         (dict(count=5, max_number=100), False),
                         (dict(count=2, max_number=46340), True),
                         (dict(count=2, max_number=46341), False)]:
    task = Countdown(**params)
    assert (task.jax_reward() is not None) == jax_ok, params


@pytest.mark.parametrize("task", [Anagram(), Countdown(), Countdown(count=10)],
                         ids=["anagram", "countdown", "countdown-10"])
def test_task_reward_has_no_host_callback(task):
  prompt, prompt_len, completion, completion_len = _encode(
      task, task.sample(np.random.default_rng(0), 4), [""] * 4, width=task.max_new_tokens)
  jaxpr = str(jax.make_jaxpr(task_token_reward(task))(prompt, prompt_len, completion,
                                                      completion_len))
  host = task.jax_reward() is None
  assert ("pure_callback" in jaxpr) == host
