"""Anagrams over a word list: generated pronounceable words, or a user's word file.

No word list ships with the installed packages, so by default the list is made of pronounceable
words (consonant-vowel syllables) drawn from a fixed seed: the same list on every machine.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import ClassVar

import numpy as np

from tokenzero.tasks.base import Task, TaskError, positional_credit, register
from tokenzero.tokenizer import CharTokenizer

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


@functools.lru_cache(maxsize=16)
def pronounceable_words(num_words: int, min_len: int, max_len: int, seed: int) -> tuple[str, ...]:
  """`num_words` distinct words of alternating consonants and vowels, sorted."""
  rng = np.random.default_rng([seed, 7])
  words: set[str] = set()
  for _ in range(200 * num_words):
    if len(words) == num_words:
      return tuple(sorted(words))
    length = int(rng.integers(min_len, max_len + 1))
    first = int(rng.integers(2))  # start with a consonant or a vowel
    letters = [(_CONSONANTS, _VOWELS)[(first + i) % 2] for i in range(length)]
    words.add("".join(pool[int(rng.integers(len(pool)))] for pool in letters))
  raise TaskError(f"anagram: cannot make {num_words} distinct words of {min_len}..{max_len} "
                  "letters; ask for fewer or longer words")


@functools.lru_cache(maxsize=16)
def _read_words(path: str) -> tuple[str, ...]:
  file = Path(path)
  if not file.is_file():
    raise TaskError(f"anagram: word file '{path}' does not exist")
  words = sorted({w.strip() for w in file.read_text().splitlines() if w.strip()})
  if not words:
    raise TaskError(f"anagram: word file '{path}' has no words")
  return tuple(words)


def _key(word: str) -> str:
  return "".join(sorted(word))


@register
@dataclasses.dataclass(frozen=True)
class Anagram(Task):
  """Prompt: a word's letters scrambled. Answer: any word of the list with exactly those letters.

  Partial credit is the best positional credit against any valid answer, so it reaches 1 only
  for a valid word.
  """
  name: ClassVar[str] = "anagram"
  description: ClassVar[str] = "unscramble a word (any word of the list with those letters)"
  size_param: ClassVar[str] = "max_len"
  num_words: int = 200
  min_len: int = 3
  max_len: int = 5
  word_seed: int = 0
  word_file: str = ""  # one word per line; empty: generated pronounceable words.

  def __post_init__(self):
    if not 2 <= self.min_len <= self.max_len:
      raise TaskError(f"anagram: need 2 <= min_len <= max_len, got {self.min_len}, "
                      f"{self.max_len}")
    if self.num_words < 1:
      raise TaskError(f"anagram: num_words must be >= 1, got {self.num_words}")

  @property
  def words(self) -> tuple[str, ...]:
    if self.word_file:
      return _read_words(self.word_file)
    return pronounceable_words(self.num_words, self.min_len, self.max_len, self.word_seed)

  @functools.cached_property
  def _answers(self) -> dict[str, tuple[str, ...]]:
    """Sorted letters -> every word made of exactly those letters."""
    out: dict[str, list[str]] = {}
    for word in self.words:
      out.setdefault(_key(word), []).append(word)
    return {k: tuple(v) for k, v in out.items()}

  def answers(self, prompt: str) -> tuple[str, ...]:
    return self._answers.get(_key(prompt), ())

  @property
  def tokenizer(self) -> CharTokenizer:
    return CharTokenizer("".join(sorted(set("".join(self.words)))))

  @property
  def prompt_len(self) -> int:
    return max(map(len, self.words)) + 1

  @property
  def max_new_tokens(self) -> int:
    return max(map(len, self.words)) + 1

  def size_range(self):
    # The lengths of the list's words (a word file's may differ from min_len..max_len).
    lengths = [len(word) for word in self.words]
    return min(lengths), max(lengths)

  def at_size(self, size):
    low, high = self.size_range()
    if not low <= size <= high:
      raise TaskError(f"anagram: size {size} is outside {low}..{high}")
    fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
    return _AnagramLevel(**{**fields, "level_len": size})

  def _drawn_words(self) -> tuple[str, ...]:
    return self.words

  def sample(self, rng, n):
    words = self._drawn_words()
    out = []
    for index in rng.integers(0, len(words), size=n):
      word = words[int(index)]
      scrambled = word
      for _ in range(10):  # a scramble that is not already an answer, when there is one.
        scrambled = "".join(rng.permutation(list(word)))
        if scrambled not in self.answers(word):
          break
      out.append(scrambled)
    return out

  def instance_key(self, prompt):
    # Every scramble of a word's letters asks for the same words: one instance.
    return _key(prompt)

  def score(self, prompt, completion):
    return max((positional_credit(completion, answer, self.max_new_tokens)
                for answer in self.answers(prompt)), default=0.0)


@dataclasses.dataclass(frozen=True)
class _AnagramLevel(Anagram):
  """A curriculum level: the same word list (so the same tokenizer, slots and answers), prompts
  drawn from its words of at most `level_len` letters. Not registered: not a user's task."""
  level_len: int = 0

  def _drawn_words(self):
    return tuple(word for word in self.words if len(word) <= self.level_len)

  def size_range(self):
    return super().size_range()[0], self.level_len
