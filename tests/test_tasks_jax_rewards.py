"""The in-graph rewards of anagram and countdown equal their Python `score` on the text the
host callback would decode, over each task's parameter range: true answers, near misses (one
character changed, one short, one too many, no EOS), random strings, tokens in any layout, and
countdown's values near and past the int32 limit (past 10**9, and only there, the host scores
them). One jit per shape, many rows (tokenzero/tasks/words.py, tokenzero/tasks/countdown_jax.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenzero import rewards
from tokenzero.tasks import Anagram, Countdown, countdown, countdown_jax, task_token_reward
from tokenzero.tasks.countdown_jax import INT32_MAX, LIMIT, value_bound


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


def _check(task, reward, args, *, host_only=None):
  """`host_only(prompt, completion)`: the rows the reward scores only once ended (0 before),
  as the host callback of a Python reward does."""
  got = np.asarray(reward(*map(jnp.asarray, args)))
  want = _expected(task, *args)
  if host_only is not None:
    decode = task.tokenizer.decode
    completion, completion_len = args[2], args[3]
    last = completion[np.arange(len(completion)), np.maximum(completion_len - 1, 0)]
    ended = (completion_len >= completion.shape[1]) | (
        (completion_len > 0) & (last == task.tokenizer.eos_id))
    for row in np.flatnonzero(~ended):
      if host_only(decode(args[0][row]), decode(args[2][row][:args[3][row]])):
        want[row] = 0.0
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
  for prompt in (task.sample(rng, 24) + level.sample(rng, 6)
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


class _Recording(countdown._Parser):
  """The verifier's parser, keeping every value it computes."""

  def _chain(self, operand, ops):
    value = operand()
    while self.peek() in ops:
      op = self.peek()
      self.pos += 1
      value = countdown._apply(op, value, operand())
      self.values.append(value)
    return value


def _past_limit(prompt: str, completion: str) -> bool:
  """Whether a prompt's number or a value of a valid answer reaches LIMIT (the host's rows)."""
  numbers, target = countdown.parse_prompt(prompt)
  parser = _Recording(completion)
  parser.values = []
  try:
    parser.parse()
  except countdown.ExpressionError:
    return False  # scores 0 either way
  return max(numbers + [target] + [abs(v) for v in parser.values + parser.numbers]) >= LIMIT


# Each parameter at its smallest, the default, the largest the graph holds alone, and past it.
COUNTDOWNS = {
    "default": dict(),
    "smallest": dict(count=2, max_number=1, max_target=2),
    "most_numbers_in_graph": dict(count=9, max_number=9, max_target=10**9),
    "four_of_100": dict(count=4, max_number=100, max_target=10**8),
    "ten_numbers": dict(count=10, max_number=9, max_target=10**10),
    "near_int32": dict(count=2, max_number=46340, max_target=INT32_MAX),
    "huge": dict(count=3, max_number=10**6, max_target=10**15),
}
# At the limits: (prompt, completion), some past int32 in rows that score 0 anyway.
NEAR_LIMITS = [
    ("46340,46340:2147395600", "46340*46340"),
    ("46340,46340:2147395599", "46340*46340"),
    ("46340,46339:2147395600", "46340*46339"),
    ("46340,46340:2147395600", "46340*46340*46340"),  # one 46340 too many (wraps int32)
    ("46340,46340:1", "46340*46340/46340"),
    ("46340,46340:1", "46340/46340"),
    ("46340,46340:2147395600", "0000046340*46340"),
    ("46340,46340:2147395600", "4294967296*46340"),
    ("46340,46340:1073741824", "46340*46340-46340"),
    ("31622,31623:999982506", "31622*31623"),  # just below LIMIT
    ("31623,31623:1000014129", "31623*31623"),  # just past it
    ("1290,1290,1290:2146689000", "1290*1290*1290/1290"),
    ("1290,1290,1290,1290:1290", "1290*1290*1290/(1290*1290)"),
    ("1290,1290,1290:2146689000", "99999999999999999"),
    ("9,9,9,9,9,9,9,9,9:387420489", "9*9*9*9*9*9*9*9*9"),
    ("9,9,9,9,9,9,9,9,9:387420488", "9*9*9*9*9*9*9*9*9*9/9"),
    ("9,9,9,9,9,9,9,9,9,9:3486784401", "9*9*9*9*9*9*9*9*9*9"),
    ("9,9,9,9,9,9,9,9,9,9:43046721", "9*9*9*9*9*9*9*9*9*9/9/9"),
    ("999999,999999,999999:999997000002999999", "999999*999999*999999"),
    ("999999,999999,999999:999999", "999999*999999/999999"),
    ("1000000,7,3:1000000000000", "1000000*7+3"),
]


def test_countdown_reward_equals_score():
  """Every parameter setting in one compile (the reward reads its numbers from the prompts);
  the host scores only the rows whose values reach LIMIT."""
  rng = np.random.default_rng(0)
  prompts, completions, in_graph = [], [], []
  for name, params in COUNTDOWNS.items():
    task = Countdown(**params)
    symbols, budget = task.tokenizer.alphabet, task.max_new_tokens
    pairs = _planted(rng, task, 12)
    if task.count <= 4:
      pairs += [(p, countdown.solve(*countdown.parse_prompt(p))) for p in task.sample(rng, 6)]
    start = len(prompts)
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
    if value_bound(task.count, task.max_number) < LIMIT:
      in_graph += range(start, len(prompts))
  prompts += [p for p, _ in NEAR_LIMITS]
  completions += [c for _, c in NEAR_LIMITS]
  task = Countdown(**COUNTDOWNS["huge"])
  scored = []

  def score(prompt, completion):
    scored.append((prompt, completion))
    return task.score(prompt, completion)

  reward = jax.jit(countdown_jax.countdown_token_reward(task.tokenizer, score=score))
  width = max(map(len, completions)) + 1
  args = _encode(task, prompts, completions, width=width,
                 prompt_width=max(map(len, prompts)) + 1)
  want = _check(task, reward, args)
  assert np.mean(want == 1.0) > 0.1 and np.mean((0 < want) & (want < 1)) > 0.05
  assert np.mean(want == 0.0) > 0.3
  near = want[-len(NEAR_LIMITS):]
  assert near[0] == 1.0 and 0 < near[1] < 1 and near[3] == 0.0 and near[9] == near[10] == 1.0
  assert 0 < len(scored) < 0.2 * len(prompts)
  assert not {(prompts[i], completions[i]) for i in in_graph} & set(scored)
  # The rows of the settings the graph holds alone never leave it.
  del scored[:]
  rows = np.resize(np.asarray(in_graph), len(prompts))
  _check(task, reward, tuple(a[rows] for a in args))
  assert scored == []
  _check(task, reward, args[:2] + _scrambled_layouts(rng, *args[2:]), host_only=_past_limit)


def test_countdown_host_callback_only_past_the_limit():
  for params, in_graph in [(dict(count=9, max_number=9), True), (dict(count=10), False),
                           (dict(count=2, max_number=31622), True),
                           (dict(count=2, max_number=31623), False)]:
    task = Countdown(**params)
    assert (value_bound(task.count, task.max_number) < LIMIT) == in_graph, params
    prompt, prompt_len, completion, completion_len = _encode(
        task, ["1,2:3"] * 4, [""] * 4, width=task.max_new_tokens)
    jaxpr = str(jax.make_jaxpr(task_token_reward(task))(prompt, prompt_len, completion,
                                                        completion_len))
    assert ("pure_callback" in jaxpr) != in_graph, params
    assert ("cond" in jaxpr) != in_graph, params  # the callback only behind its cond


def test_anagram_and_countdown_rewards_have_no_host_callback():
  for task in (Anagram(), Countdown(), Anagram(num_words=600, min_len=2, max_len=10)):
    prompt, prompt_len, completion, completion_len = _encode(
        task, task.sample(np.random.default_rng(0), 4), [""] * 4, width=task.max_new_tokens)
    jaxpr = str(jax.make_jaxpr(task_token_reward(task))(prompt, prompt_len, completion,
                                                        completion_len))
    assert "pure_callback" not in jaxpr and "callback" not in jaxpr
