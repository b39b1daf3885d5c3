"""Anagrams over a word list: generated pronounceable words, or a user's word file.

No word list ships with the installed packages, so by default the list is made of pronounceable
words (consonant-vowel syllables) drawn from a fixed seed: the same list on every machine.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from tokenzero.rewards import TokenReward
from tokenzero.tasks.base import Task, TaskError, decoded_symbols, positional_credit, register
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


# Odd per-slot multipliers of the letters' hash (a fixed seed: the same on every machine).
_HASH_SEED = 20240614


def anagram_token_reward(words: tuple[str, ...], tokenizer: CharTokenizer,
                         width: int) -> TokenReward:
  """`Anagram.score` on tokens: the best positional credit of the completion against the words
  whose letters are the prompt's, over a `width`-token answer.

  The words sit sorted by a hash of their sorted letters (N words, keys [N, L] of L = the
  longest word's letters); a prompt's sorted letters find their hash's run with `searchsorted`
  and its G words (G: the longest run, known from the list) are checked letter by letter, so
  that a hash collision costs a comparison, never a wrong answer, and the work per row is G
  words whatever the list's length.
  """
  first_symbol = tokenizer.vocab_size - len(tokenizer.alphabet)
  eos_id, pad_id = tokenizer.eos_id, tokenizer.pad_id
  longest = width - 1
  sentinel = tokenizer.vocab_size  # past every id: pads a key, sorts after its letters.
  encoded = [tokenizer.encode(word) for word in words]
  keys = np.full((len(words), longest), sentinel, np.int32)  # [N, L] sorted letters
  targets = np.full((len(words), width), pad_id, np.int32)  # [N, width] word, EOS, PAD
  for row, ids in enumerate(encoded):
    keys[row, :len(ids)] = sorted(ids)
    targets[row, :len(ids)] = ids
    targets[row, len(ids)] = eos_id
  multipliers = np.random.default_rng(_HASH_SEED).integers(
      0, 2**32, size=longest, dtype=np.uint32) | np.uint32(1)  # [L]
  hashes = np.sum(keys.astype(np.uint32) * multipliers, axis=1, dtype=np.uint32)  # [N]
  order = np.argsort(hashes, kind="stable")
  keys, targets, hashes = keys[order], targets[order], hashes[order]
  run = int(np.unique(hashes, return_counts=True)[1].max())  # G
  keys, targets, hashes = jnp.asarray(keys), jnp.asarray(targets), jnp.asarray(hashes)
  multipliers = jnp.asarray(multipliers)
  # right / width as the host gets it (a double, then float32): XLA would multiply by a
  # rounded 1 / width instead, one float32 step off for some counts.
  fractions = jnp.asarray(np.arange(width + 1) / width, jnp.float32)  # [width + 1]

  def reward(prompt, prompt_len, completion, completion_len):
    letters, count = decoded_symbols(prompt, prompt_len, eos_id=eos_id, pad_id=pad_id,
                                     first_symbol=first_symbol)  # [B, P]
    cols = jnp.arange(letters.shape[1])[None, :]
    key = jnp.sort(jnp.where(cols < count[:, None], letters, sentinel), axis=1)
    key = jnp.pad(key, ((0, 0), (0, max(0, longest - key.shape[1]))),
                  constant_values=sentinel)[:, :longest]  # [B, L]; longer prompts match none
    key_hash = jnp.sum(key.astype(jnp.uint32) * multipliers, axis=1, dtype=jnp.uint32)  # [B]
    index = jnp.searchsorted(hashes, key_hash)[:, None] + jnp.arange(run)[None, :]  # [B, G]
    safe = jnp.minimum(index, hashes.shape[0] - 1)
    is_answer = ((index < hashes.shape[0]) & (hashes[safe] == key_hash[:, None])
                 & jnp.all(keys[safe] == key[:, None, :], axis=-1)
                 & (count <= longest)[:, None])
    symbols, length = decoded_symbols(completion, completion_len, eos_id=eos_id, pad_id=pad_id,
                                      first_symbol=first_symbol)
    symbols = jnp.pad(symbols, ((0, 0), (0, max(0, width - symbols.shape[1]))),
                      constant_values=pad_id)[:, :width]
    # As `positional_credit` lays the text out: EOS after a text shorter than the budget.
    produced = jnp.where(jnp.arange(width)[None, :] == length[:, None], eos_id, symbols)
    right = jnp.sum(produced[:, None, :] == targets[safe], axis=-1)  # [B, G]
    credit = fractions[right]
    return jnp.max(jnp.where(is_answer, credit, 0.0), axis=1)

  return reward


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

  def jax_reward(self):
    return anagram_token_reward(self.words, self.tokenizer, self.max_new_tokens)


@dataclasses.dataclass(frozen=True)
class _AnagramLevel(Anagram):
  """A curriculum level: the same word list (so the same tokenizer, slots and answers), prompts
  drawn from its words of at most `level_len` letters. Not registered: not a user's task."""
  level_len: int = 0

  def _drawn_words(self):
    return tuple(word for word in self.words if len(word) <= self.level_len)

  def size_range(self):
    return super().size_range()[0], self.level_len
