"""Prompt batches: encoding text prompts into padded arrays, and seeded train/eval streams."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from tokenzero.tokenizer import Tokenizer, encode_prompts


class PromptBatch(NamedTuple):
  tokens: np.ndarray  # [B, P] int32, right-padded with PAD
  lengths: np.ndarray  # [B] int32


def encode_batch(tokenizer: Tokenizer, texts: Sequence[str], prompt_len: int) -> PromptBatch:
  """Encodes prompt texts (SEP appended) into a [B, prompt_len] batch; too long is an error."""
  ids = encode_prompts(tokenizer, texts)
  tokens = np.full((len(ids), prompt_len), tokenizer.pad_id, np.int32)
  lengths = np.zeros((len(ids),), np.int32)
  for row, seq in enumerate(ids):
    if len(seq) > prompt_len:
      raise ValueError(f"prompt {texts[row]!r} is {len(seq)} tokens, longer than the "
                       f"prompt length {prompt_len}")
    if not seq:
      raise ValueError(f"prompt {row} is empty")
    tokens[row, :len(seq)] = seq
    lengths[row] = len(seq)
  return PromptBatch(tokens, lengths)


class PromptStream:
  """Training prompts from `sample_fn`, never one of the held-out `exclude` prompts.

  Each call draws from a generator keyed by (seed, call index), so a resumed run that starts
  at iteration i sees the same prompts as a run that never stopped.
  """

  def __init__(self, sample_fn, seed: int, exclude: Sequence[str] = ()):
    self._sample = sample_fn
    self._seed = seed
    self._exclude = frozenset(exclude)

  def draw(self, index: int, n: int) -> list[str]:
    rng = np.random.default_rng([self._seed, 1, index])
    out: list[str] = []
    for _ in range(20):  # rejection sampling; tiny prompt spaces may not be able to avoid all.
      out.extend(p for p in self._sample(rng, n) if p not in self._exclude)
      if len(out) >= n:
        return out[:n]
    raise ValueError("could not draw training prompts disjoint from the evaluation prompts: "
                     "the task's prompt space is too small for this many held-out prompts")


def eval_texts(task, seed: int, num_prompts: int) -> list[str]:
  """The held-out prompts of a run with seed `seed`: the task's fixed set (a prompts file) when
  it has one, else `num_prompts` drawn from the run's evaluation stream. Training and every
  evaluation after it choose them here, so they always agree."""
  texts = task.held_out() or eval_prompts(task.sample, seed, num_prompts)
  return list(texts)[:num_prompts]


def eval_prompts(sample_fn, seed: int, n: int) -> list[str]:
  """The fixed held-out prompt set for a run (its own seed stream, disjoint from training)."""
  return list(sample_fn(np.random.default_rng([seed, 2]), n))
