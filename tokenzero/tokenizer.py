"""Tokenizers for from-scratch work: characters over an alphabet, or raw bytes.

Both put the special tokens first (PAD=0, SEP=1, EOS=2) so that ids of specials never depend
on the alphabet. SEP ends a prompt; EOS ends an answer.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Protocol, Sequence

import numpy as np

from tokenzero.errors import TokenizerError

PAD_ID, SEP_ID, EOS_ID = 0, 1, 2
_NUM_SPECIAL = 3
_SPECIAL_NAMES = {PAD_ID: "<pad>", SEP_ID: "<sep>", EOS_ID: "<eos>"}


class Tokenizer(Protocol):
  """What the rest of tokenzero needs from a tokenizer."""
  vocab_size: int
  pad_id: int
  eos_id: int
  sep_id: int | None

  def encode(self, text: str) -> list[int]: ...

  def decode(self, ids: Iterable[int]) -> str: ...

  def describe(self) -> str: ...


def _strip(ids: Iterable[int], eos_id: int) -> list[int]:
  """Ids up to (not including) the first EOS, with PAD/SEP dropped."""
  out = []
  for i in ids:
    i = int(i)
    if i == eos_id:
      break
    if i >= _NUM_SPECIAL:
      out.append(i)
  return out


@dataclasses.dataclass(frozen=True)
class CharTokenizer:
  """One token per character of `alphabet`, after the three specials."""
  alphabet: str
  pad_id: int = PAD_ID
  sep_id: int = SEP_ID
  eos_id: int = EOS_ID

  def __post_init__(self):
    if not self.alphabet:
      raise TokenizerError("CharTokenizer needs a non-empty alphabet")
    dupes = sorted({c for c in self.alphabet if self.alphabet.count(c) > 1})
    if dupes:
      raise TokenizerError(f"alphabet repeats characters: {''.join(dupes)!r}")

  @property
  def vocab_size(self) -> int:
    return _NUM_SPECIAL + len(self.alphabet)

  def encode(self, text: str) -> list[int]:
    ids = []
    for pos, char in enumerate(text):
      index = self.alphabet.find(char)
      if index < 0:
        raise TokenizerError(
            f"character {char!r} at position {pos} of {text!r} is not in the tokenizer's "
            f"alphabet {self.alphabet!r}")
      ids.append(index + _NUM_SPECIAL)
    return ids

  def decode(self, ids: Iterable[int]) -> str:
    return "".join(self.alphabet[i - _NUM_SPECIAL] for i in _strip(ids, self.eos_id))

  def token_str(self, i: int) -> str:
    return _SPECIAL_NAMES.get(i) or self.alphabet[i - _NUM_SPECIAL]

  def describe(self) -> str:
    return f"char:{self.alphabet}"


@dataclasses.dataclass(frozen=True)
class ByteTokenizer:
  """UTF-8 bytes: 256 byte tokens after the three specials."""
  pad_id: int = PAD_ID
  sep_id: int = SEP_ID
  eos_id: int = EOS_ID

  @property
  def vocab_size(self) -> int:
    return _NUM_SPECIAL + 256

  def encode(self, text: str) -> list[int]:
    return [b + _NUM_SPECIAL for b in text.encode("utf-8")]

  def decode(self, ids: Iterable[int]) -> str:
    return bytes(i - _NUM_SPECIAL for i in _strip(ids, self.eos_id)).decode(
        "utf-8", errors="replace")

  def describe(self) -> str:
    return "byte"


def from_spec(spec: str) -> CharTokenizer | ByteTokenizer:
  """`"byte"` or `"char:<alphabet>"` -> a tokenizer."""
  if spec == "byte":
    return ByteTokenizer()
  if spec.startswith("char:"):
    return CharTokenizer(spec[len("char:"):])
  raise TokenizerError(f"unknown tokenizer spec {spec!r}: use 'byte' or 'char:<alphabet>'")


def encode_prompts(tokenizer: Tokenizer, prompts: Sequence[str], *, append_sep: bool = True):
  """Encodes prompts (SEP appended when the tokenizer has one) -> list of id lists."""
  out = []
  for prompt in prompts:
    ids = tokenizer.encode(prompt)
    if append_sep and tokenizer.sep_id is not None:
      ids = ids + [tokenizer.sep_id]
    out.append(ids)
  return out


def answer_mask(tokenizer: Tokenizer, vocab_size: int) -> np.ndarray:
  """[V] bool: the tokens an answer may use. The one rule every decoder, search and run shares.

  SEP only ends a prompt and PAD only fills rows, so neither is ever generated; PAD stays when it
  is EOS too (an HF checkpoint without a PAD token pads with EOS). Ids past the tokenizer's
  vocabulary (a checkpoint's embedding padded to a round size, as Qwen2's) are never generated.
  """
  mask = np.arange(vocab_size) < tokenizer.vocab_size
  for token in (tokenizer.sep_id, tokenizer.pad_id):
    if token is not None and token != tokenizer.eos_id and 0 <= token < vocab_size:
      mask[token] = False
  return mask
