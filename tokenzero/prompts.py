"""Prompt batches: encoding text prompts into padded arrays, and seeded train/eval streams.

Which prompts are held out is a run's `eval.split`:
- `"hash"` (every new run): an instance is held out when its key hashes into the evaluation
  bucket (`Task.is_held_out`). Training rejects those; evaluation draws nothing else, from its
  own seeded stream a fixed chunk at a time, so the first k evaluation prompts are the same for
  any count, sampler and resume (a larger count extends a smaller one). They are draws of the
  task's distribution on the bucket: a prompt of a small space may come more than once, which
  the harness's clustered standard errors and `distinct_prompts` account for.
- `"legacy"` (runs saved before the split was recorded): the first `num_prompts` draws of the
  evaluation stream, and training rejects exactly those texts. Its set depends on the count, so
  it is kept only for those runs to keep the evaluation set they were made with.
A task with a fixed evaluation set (a prompts file) evaluates on it under either split.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np

from tokenzero.errors import TaskError
from tokenzero.tokenizer import Tokenizer, encode_prompts

HASH_SPLIT, LEGACY_SPLIT = "hash", "legacy"
SPLITS = (HASH_SPLIT, LEGACY_SPLIT)
# Evaluation prompts are drawn this many at a time whatever the count, so that the first k are
# the same for every count.
_EVAL_CHUNK = 64
# Draws per wanted evaluation prompt before giving up: the bucket holds about a tenth of the
# mass, so a task that needs a thousand draws per prompt has (almost) no held-out instances.
_MAX_DRAWS_PER_PROMPT = 1000


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
  """Training prompts from `sample_fn`, never one for which `held_out(prompt)` is true.

  Each call draws from a generator keyed by (seed, call index), and by the process index on
  several processes, so a resumed run that starts at iteration i sees the same prompts as a run
  that never stopped.
  """

  def __init__(self, sample_fn, seed: int, *, held_out: Callable[[str], bool]):
    self._sample = sample_fn
    self._seed = seed
    self._held_out = held_out

  @property
  def held_out(self) -> Callable[[str], bool]:
    """What this stream never draws."""
    return self._held_out

  def draw(self, index: int, n: int, *, process: tuple[int, int] = (0, 1)) -> list[str]:
    """Call `index`'s `n` prompts; `process=(i, count)` of a run on `count` processes: process
    `i`'s share of them, `n / count` from a stream of its own (one process keeps the stream a
    single-process run always had)."""
    rng = np.random.default_rng(process_key([self._seed, 1, index], process))
    n = _share(n, process)
    out: list[str] = []
    for _ in range(20):  # rejection sampling; tiny prompt spaces may not be able to avoid all.
      out.extend(p for p in self._sample(rng, n) if not self._held_out(p))
      if len(out) >= n:
        return out[:n]
    raise ValueError("could not draw training prompts disjoint from the evaluation prompts: "
                     "the task's prompt space is too small for this many held-out prompts")


def process_key(key: list[int], process: tuple[int, int]) -> list[int]:
  """A stream's seed key, made process `process[0]`'s own when there are several. The count
  goes in too: numpy's seeds ignore trailing zeros, and process 0's stream must not be a
  single-process run's."""
  index, count = process
  return key if count == 1 else [*key, count, index]


def _share(n: int, process: tuple[int, int]) -> int:
  count = process[1]
  if n % count:
    raise ValueError(f"a batch of {n} prompts does not divide over {count} processes")
  return n // count


def eval_texts(task, seed: int, num_prompts: int, *, split: str) -> list[str]:
  """The held-out prompts of a run with seed `seed` and evaluation split `split` (see the
  module docstring): the task's fixed set (a prompts file) when it has one, else `num_prompts`
  drawn by the split's rule. Training and every evaluation after it choose them here."""
  if split not in SPLITS:
    raise ValueError(f"unknown evaluation split {split!r}; known: {', '.join(SPLITS)}")
  fixed = task.held_out()
  if fixed:
    return list(fixed)[:num_prompts]
  if split == LEGACY_SPLIT:
    return eval_prompts(task.sample, seed, num_prompts)
  return held_out_draws(task, seed, num_prompts)


def training_stream(task, seed: int, *, split: str, eval_texts: Sequence[str],
                    level=None) -> PromptStream:
  """The training prompts of a run: the task's, less its held-out instances (`"hash"`) or less
  exactly the texts of its evaluation set (`"legacy"`). `level`: a curriculum level of `task`
  (`Task.at_size`), whose generator draws them instead; what is held out stays `task`'s rule,
  so that no evaluation prompt of the full task is ever trained on."""
  sample = (level or task).sample
  if split == LEGACY_SPLIT:
    return PromptStream(sample, seed, held_out=frozenset(eval_texts).__contains__)
  return PromptStream(sample, seed, held_out=task.is_held_out)


def held_out_draws(task, seed: int, n: int) -> list[str]:
  """The first `n` prompts of the task's evaluation stream that are held-out instances."""
  rng = np.random.default_rng([seed, 3])  # its own stream: 1 is training's, 2 the legacy set's.
  out: list[str] = []
  drawn = 0
  while len(out) < n:
    if drawn >= _MAX_DRAWS_PER_PROMPT * max(n, 16):
      raise TaskError(f"{task.name}: {drawn} prompts drawn and only {len(out)} of them held out: "
                      "the prompt space is too small for a held-out split; make it larger "
                      "(the task's task.params)")
    out.extend(p for p in task.sample(rng, _EVAL_CHUNK) if task.is_held_out(p))
    drawn += _EVAL_CHUNK
  return out[:n]


def eval_prompts(sample_fn, seed: int, n: int) -> list[str]:
  """The legacy held-out prompt set of a run: the first `n` draws of its evaluation stream."""
  return list(sample_fn(np.random.default_rng([seed, 2]), n))
