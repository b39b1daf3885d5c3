"""Built-in tasks: verifiers on known right and wrong answers, seeded samplers whose prompts all
have an answer within budget, and in-graph rewards equal to the text scorers."""

import jax
import numpy as np
import pytest

from tokenzero import rewards
from tokenzero.tasks import (TASKS, Addition, Anagram, Countdown, Parentheses, Reverse, Sort,
                             TaskError, describe_tasks, make_task, positional_credit)
from tokenzero.tasks import brackets, countdown, words

BUILT_IN = ["sort", "reverse", "addition", "anagram", "parentheses", "countdown"]

# (task, prompt, right answers, wrong answers)
KNOWN = [
    (Sort(length=3), "312", ["123"], ["132", "1234", "", "12"]),
    (Reverse(length=5), "12345", ["54321"], ["12345", "5432", "543210"]),
    (Addition(digits=2), "57+68", ["521"], ["125", "52", "5210"]),
    (Addition(digits=2, answer_reversed=False), "57+68", ["125"], ["521", "12"]),
    (Addition(digits=3), "999+1", ["0001"], ["1000", "000"]),
    (Parentheses(max_pairs=4), "([(", [")])"], [")]", ")]))", "])", "()"]),
    (Parentheses(max_pairs=4, kinds=1), "(()", [")"], ["))", ""]),
    (Countdown(), "3,7,2:20", ["(3+7)*2", "2*(7+3)", "(7+3)*2"],
     ["3*7-2", "20", "3+3+7+7", "(3+7)*2*1", "7/2*6", "(3+7)*2)", "", "3+7)*2", "2(3+7)"]),
    (Countdown(count=4, max_number=20, max_target=200), "12,5,3,8:4",
     ["12/3", "8-12/3", "(12-8)"], ["12/5", "8/0", "5-3", "(5+3)-12/3"]),
]


@pytest.mark.parametrize("task,prompt,right,wrong", KNOWN,
                         ids=[f"{k[0].name}-{k[1]}" for k in KNOWN])
def test_verifier_on_known_answers(task, prompt, right, wrong):
  for answer in right:
    assert task.verify(prompt, answer), answer
    assert task.score(prompt, answer) == 1.0
  for answer in wrong:
    assert not task.verify(prompt, answer), answer
    assert 0.0 <= task.score(prompt, answer) < 1.0, answer


def test_anagram_accepts_every_word_with_those_letters(tmp_path):
  word_file = tmp_path / "words.txt"
  word_file.write_text("listen\nsilent\nenlist\ntinsel\ncat\nact\ndog\n")
  task = Anagram(word_file=str(word_file))
  for answer in ("listen", "silent", "enlist", "tinsel"):
    assert task.verify("nlsiet", answer)
  for answer in ("lisent", "listens", "listen" + "s", "dog", ""):
    assert not task.verify("nlsiet", answer)
  assert task.verify("tca", "cat") and task.verify("tca", "act")
  assert task.score("xyz", "xyz") == 0.0  # letters of no word: nothing is right.
  assert task.max_new_tokens == 7 and set(task.tokenizer.alphabet) == set("listencatdog")


def test_generated_words_are_fixed_and_pronounceable():
  first = words.pronounceable_words(50, 3, 5, 0)
  assert first == words.pronounceable_words.__wrapped__(50, 3, 5, 0)
  assert len(set(first)) == 50
  vowels = set("aeiou")
  for word in first:
    assert 3 <= len(word) <= 5
    kinds = [c in vowels for c in word]
    assert all(a != b for a, b in zip(kinds, kinds[1:])), word  # consonants and vowels alternate
  task = Anagram(num_words=50)
  for prompt in task.sample(np.random.default_rng(0), 20):
    assert task.answers(prompt), prompt


def test_countdown_parser_never_evaluates_python():
  for text in ("__import__('os')", "1+", "()", "2**3", "1e3", "-1", "1 + 2", "(1))", "a"):
    with pytest.raises(countdown.ExpressionError):
      countdown.evaluate(text)
  assert countdown.evaluate("2*(3+4)-10/5") == (12, [2, 3, 4, 10, 5])
  assert countdown.evaluate("((7))") == (7, [7])


def test_countdown_partial_credit_is_closeness():
  task = Countdown()
  assert task.score("3,7,2:20", "3*7-2") == pytest.approx(0.5 * (1 - 1 / 20))
  assert task.score("3,7,2:20", "3*7*7") == 0.0  # 7 twice: not allowed
  assert task.score("3,7,2:20", "3*(") == 0.0


@pytest.mark.parametrize("name", BUILT_IN)
def test_samples_are_seeded_answerable_and_fit(name):
  task = make_task(name)
  a = task.sample(np.random.default_rng(3), 40)
  assert a == task.sample(np.random.default_rng(3), 40)
  assert a != task.sample(np.random.default_rng(4), 40)
  for prompt in a:
    ids = task.tokenizer.encode(prompt)
    assert 1 <= len(ids) + 1 <= task.prompt_len, prompt
    answer = _reference_answer(task, prompt)
    assert answer is not None, prompt
    assert len(task.tokenizer.encode(answer)) + 1 <= task.max_new_tokens, (prompt, answer)
    assert task.verify(prompt, answer), (prompt, answer)


def _reference_answer(task, prompt):
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
  numbers, target = countdown.parse_prompt(prompt)
  return countdown.solve(numbers, target)


JAX_TASKS = [Sort(length=4), Reverse(length=5, min_length=1, alphabet="abc"), Addition(digits=3),
             Addition(digits=2, min_digits=2, answer_reversed=False),
             Parentheses(max_pairs=3, kinds=3)]


@pytest.mark.parametrize("task", JAX_TASKS, ids=lambda t: repr(t))
def test_jax_reward_equals_score(task):
  rng = np.random.default_rng(0)
  prompts = task.sample(rng, 48)
  symbols = list(task.tokenizer.alphabet)
  completions = []
  for i, prompt in enumerate(prompts):
    answer = _reference_answer(task, prompt)
    kind = i % 5
    if kind == 0:
      text = answer
    elif kind == 1:
      text = answer[:-1]  # one short
    elif kind == 2:
      text = answer + symbols[0]  # one too many
    elif kind == 3:  # anything up to the full budget (which then has no EOS)
      text = "".join(rng.choice(symbols, size=int(rng.integers(0, task.max_new_tokens + 1))))
    else:
      text = answer[::-1]
    completions.append(text[:task.max_new_tokens])
  prompt, prompt_len, completion, completion_len = rewards.encode_pairs(
      task.tokenizer, prompts, completions, task.max_new_tokens)
  padded = np.zeros((len(prompts), task.prompt_len), np.int32)
  padded[:, :prompt.shape[1]] = prompt
  in_graph = jax.jit(task.jax_reward())(padded, prompt_len, completion, completion_len)
  text_scores = [task.score(p, c) for p, c in zip(prompts, completions)]
  np.testing.assert_allclose(np.asarray(in_graph), text_scores, atol=1e-6)
  assert max(text_scores) == 1.0 and min(text_scores) < 1.0


def test_positional_credit_counts_eos_and_padding():
  assert positional_credit("123", "123", 4) == 1.0  # answer then EOS: all 4 slots right
  assert positional_credit("1234", "123", 4) == 0.75  # no EOS: the last slot is wrong
  assert positional_credit("12", "123", 4) == 0.5
  assert positional_credit("1", "1", 4) == 1.0  # EOS then PAD PAD match


def test_tasks_registry_and_errors():
  assert set(BUILT_IN) <= set(TASKS)
  listing = describe_tasks()
  for name in BUILT_IN + ["prompts"]:
    assert f"{name}:" in listing
  assert "task.params.answer_reversed = True" in listing
  assert make_task("addition", {"digits": 4}).max_new_tokens == 6
  with pytest.raises(TaskError, match="unknown task 'adition'"):
    make_task("adition")
  with pytest.raises(TaskError, match="has no parameter"):
    make_task("reverse", {"size": 3})
  with pytest.raises(TaskError, match="wants int"):
    make_task("countdown", {"count": "3"})
  with pytest.raises(TaskError, match="min_digits"):
    make_task("addition", {"digits": 2, "min_digits": 3})
  with pytest.raises(TaskError, match="kinds"):
    make_task("parentheses", {"kinds": 9})
