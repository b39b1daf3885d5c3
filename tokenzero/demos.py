"""Demonstrations: `{"prompt", "completion"}` JSONL, encoded for a next-token loss on the
completion tokens only.

What `tokenzero sft` fits and what `optim.anchor_weight` mixes into self-play training. A demo
is laid out as decoding would produce it: the prompt encoded as training and `tokenzero decode`
encode it (SEP appended by tokenzero's tokenizers, BOS added by an HF tokenizer that adds one),
then the completion tokenized on its own (no special tokens), then EOS, then PAD. Tokenized on
its own means a BPE completion should carry the space that joins it to its prompt.

Dimension letters: B batch, L sequence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tokenzero import model as model_lib
from tokenzero.config import ModelConfig
from tokenzero.errors import DemoError
from tokenzero.tokenizer import Tokenizer, TokenizerError, encode_prompts


class Demo(NamedTuple):
  prompt: str
  completion: str


class DemoBatch(NamedTuple):
  tokens: jax.Array  # [B, L] int32: prompt, completion, EOS, then PAD
  target_mask: jax.Array  # [B, L] bool: token l is a completion token (EOS included)


def read_demos(path: str | Path) -> list[Demo]:
  """`{"prompt": str, "completion": str}` per non-empty line of a JSONL file, in file order."""
  path = Path(path)
  if not path.is_file():
    raise DemoError(f"demonstrations file '{path}' does not exist")
  demos = []
  for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as err:
      raise DemoError(f"{path}:{number}: not a JSON line ({err.msg})") from None
    if not (isinstance(record, dict) and isinstance(record.get("prompt"), str)
            and isinstance(record.get("completion"), str) and record["prompt"]):
      raise DemoError(f"{path}:{number}: each line needs string fields 'prompt' (non-empty) "
                      "and 'completion'")
    demos.append(Demo(record["prompt"], record["completion"]))
  if not demos:
    raise DemoError(f"demonstrations file '{path}' has no demonstrations")
  return demos


def _continuation_ids(tokenizer: Tokenizer, text: str) -> list[int]:
  # An HF tokenizer's `encode` adds BOS where transformers would; the continuation of a prompt
  # gets no special tokens. tokenzero's own tokenizers never add any.
  encode = getattr(tokenizer, "encode_continuation", tokenizer.encode)
  return list(encode(text))


def encode_demos(tokenizer: Tokenizer, demos: Sequence[Demo], *, context: int) -> DemoBatch:
  """Demos -> a numpy `DemoBatch` as long as its longest demo; longer than `context` is an
  error."""
  rows, masks = [], []
  for demo in demos:
    try:
      prompt = encode_prompts(tokenizer, [demo.prompt])[0]
      completion = _continuation_ids(tokenizer, demo.completion) + [tokenizer.eos_id]
    except TokenizerError as err:
      raise DemoError(f"demo with prompt {demo.prompt!r}: {err}") from None
    if not prompt:
      raise DemoError(f"demo prompt {demo.prompt!r} encodes to no tokens")
    if len(prompt) + len(completion) > context:
      raise DemoError(f"demo with prompt {demo.prompt!r} is {len(prompt)} + {len(completion)} "
                      f"tokens, longer than the model's context ({context})")
    rows.append(prompt + completion)
    masks.append([False] * len(prompt) + [True] * len(completion))
  length = max(len(r) for r in rows)
  tokens = np.full((len(rows), length), tokenizer.pad_id, np.int32)
  target_mask = np.zeros((len(rows), length), bool)
  for i, (row, mask) in enumerate(zip(rows, masks)):
    tokens[i, :len(row)] = row
    target_mask[i, :len(mask)] = mask
  return DemoBatch(tokens, target_mask)


def take(batch: DemoBatch, rows) -> DemoBatch:
  """The demos at `rows` (numpy indices)."""
  return DemoBatch(batch.tokens[rows], batch.target_mask[rows])


def lm_loss(params, config: ModelConfig, batch: DemoBatch) -> jax.Array:
  """Mean next-token cross-entropy over the completion tokens of `batch` -> []."""
  logits = model_lib.forward(params, config, batch.tokens).logits[:, :-1]  # [B, L-1, V]
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch.tokens[:, 1:])
  mask = batch.target_mask[:, 1:].astype(jnp.float32)
  return jnp.sum(nll * mask) / jnp.maximum(mask.sum(), 1.0)


_jit_lm_loss = jax.jit(lm_loss, static_argnums=1)


def mean_nll(params, config: ModelConfig, batch: DemoBatch, *, chunk: int = 64) -> float:
  """`lm_loss` over every demo of a (numpy) batch, in chunks; weighted by completion tokens."""
  total, count = 0.0, 0.0
  params = jax.device_put(params, jax.devices()[0])  # one placement, one compile (see sft.fit)
  for start in range(0, batch.tokens.shape[0], chunk):
    part = take(batch, slice(start, start + chunk))
    tokens = float(part.target_mask[:, 1:].sum())
    total += float(_jit_lm_loss(params, config, part)) * tokens
    count += tokens
  return total / max(count, 1.0)
