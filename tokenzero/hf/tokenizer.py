"""A checkpoint's own tokenizer (`tokenizer.json`, via the `tokenizers` library) as a tokenzero
`Tokenizer`.

Prompts are encoded the way `transformers` (v5) encodes `tokenizer(text)`: the `tokenizer.json`
pipeline with its own post-processor, which is what adds Llama's BOS. Like `transformers` v5,
`add_bos_token` / `add_eos_token` in `tokenizer_config.json` are ignored when `tokenizer.json`
exists (v4 baked them into the post-processor it saved, so hub checkpoints agree). Special tokens
come from the checkpoint's files:

- BOS, EOS, PAD tokens of the tokenizer: `tokenizer_config.json`, then `special_tokens_map.json`.
- EOS ids that end a generation: `generation_config.json`, then `config.json`, then the
  tokenizer's EOS. `eos_id` is the tokenizer's EOS when it is one of them, else the first.
- PAD: the tokenizer's, then the configs'; a checkpoint without one (GPT-2, Llama) pads with
  EOS, as `transformers` generation does (`pad_token_id` stays None then).

There is no SEP: a prompt is fed as it is.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import jinja2.ext
import tokenizers
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tokenzero.errors import HFTokenizerError


@dataclasses.dataclass(frozen=True, eq=False)
class HFTokenizer:
  """Implements `tokenzero.tokenizer.Tokenizer` over a `tokenizers.Tokenizer`."""
  backend: tokenizers.Tokenizer
  name: str
  pad_id: int
  eos_id: int
  eos_ids: tuple[int, ...]  # every id that ends a generation (eos_id among them)
  bos_id: int | None
  pad_token_id: int | None  # the checkpoint's own PAD (None: it has none; pad_id is EOS)
  sep_id: int | None = None
  chat_template: str | None = None  # Jinja, as transformers' `apply_chat_template` reads it

  @property
  def vocab_size(self) -> int:
    return self.backend.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> list[int]:
    return self.backend.encode(text, add_special_tokens=True).ids

  def encode_continuation(self, text: str) -> list[int]:
    """Text that follows a prompt (a demo's completion): no BOS or other special tokens."""
    return self.backend.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids` up to the first EOS, special tokens dropped."""
    out = []
    for i in ids:
      i = int(i)
      if i in self.eos_ids:
        break
      out.append(i)
    return self.backend.decode(out, skip_special_tokens=True)

  def token_str(self, i: int) -> str:
    return self.backend.id_to_token(int(i)) or f"<{int(i)}>"

  def describe(self) -> str:
    return f"hf:{self.name}"

  def chat_prompt(self, text: str) -> str:
    """`text` as one user message in the checkpoint's chat template, ready for the assistant's
    reply (transformers' `apply_chat_template(..., add_generation_prompt=True)`)."""
    if not self.chat_template:
      raise HFTokenizerError(f"{self.name} has no chat template")
    def token(i):
      return None if i is None else self.backend.id_to_token(i)
    try:
      # Sandboxed, as transformers renders it: a template is data from the checkpoint.
      template = ImmutableSandboxedEnvironment(
          trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]).from_string(
          self.chat_template)
      return template.render(messages=[{"role": "user", "content": text}],
                             add_generation_prompt=True, bos_token=token(self.bos_id),
                             eos_token=token(self.eos_id))
    except TemplateError as err:
      raise HFTokenizerError(f"{self.name}: chat template failed: {err}") from err


def _read(path: Path) -> dict[str, Any]:
  if not path.exists():
    return {}
  try:
    with path.open() as f:
      return json.load(f)
  except json.JSONDecodeError as err:
    raise HFTokenizerError(f"{path} is not valid JSON: {err}") from err


def _token_text(value) -> str | None:
  """A special token as `tokenizer_config.json` writes it: a string or an AddedToken dict."""
  if isinstance(value, Mapping):
    return value.get("content")
  return value if isinstance(value, str) else None


def _ids(value) -> list[int]:
  if value is None:
    return []
  return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def load_tokenizer(tokenizer_dir) -> HFTokenizer:
  """The tokenizer of an HF model directory (`tokenizer.json` plus its config files)."""
  tokenizer_dir = Path(tokenizer_dir)
  path = tokenizer_dir / "tokenizer.json"
  if not path.exists():
    hint = (" (only a slow tokenizer is there: save it as tokenizer.json with transformers)"
            if any((tokenizer_dir / n).exists() for n in ("tokenizer.model", "vocab.json"))
            else "")
    raise HFTokenizerError(f"{tokenizer_dir}: no tokenizer.json{hint}")
  backend = tokenizers.Tokenizer.from_file(str(path))
  tok_config = _read(tokenizer_dir / "tokenizer_config.json")
  special_map = _read(tokenizer_dir / "special_tokens_map.json")
  model_config = _read(tokenizer_dir / "config.json")
  gen_config = _read(tokenizer_dir / "generation_config.json")

  def token_id(key: str) -> int | None:
    text = _token_text(tok_config.get(key)) or _token_text(special_map.get(key))
    if text is None:
      return None
    found = backend.token_to_id(text)
    if found is None:
      raise HFTokenizerError(f"{tokenizer_dir}: {key} {text!r} is not in tokenizer.json")
    return found

  bos_token, eos_token, pad_token = token_id("bos_token"), token_id("eos_token"), token_id(
      "pad_token")
  eos_ids = (_ids(gen_config.get("eos_token_id")) or _ids(model_config.get("eos_token_id"))
             or _ids(eos_token))
  if not eos_ids:
    raise HFTokenizerError(f"{tokenizer_dir}: no EOS token in tokenizer_config.json, "
                           "special_tokens_map.json, generation_config.json or config.json")
  eos_id = eos_token if eos_token in eos_ids else eos_ids[0]
  bos_id = bos_token if bos_token is not None else next(
      iter(_ids(gen_config.get("bos_token_id")) or _ids(model_config.get("bos_token_id"))),
      None)
  pad_token_id = pad_token if pad_token is not None else next(
      iter(_ids(model_config.get("pad_token_id")) or _ids(gen_config.get("pad_token_id"))),
      None)

  return HFTokenizer(
      backend=backend,
      name=tokenizer_dir.name,
      pad_id=pad_token_id if pad_token_id is not None else eos_id,
      eos_id=eos_id,
      eos_ids=tuple(eos_ids),
      bos_id=bos_id,
      pad_token_id=pad_token_id,
      chat_template=tok_config.get("chat_template") if isinstance(
          tok_config.get("chat_template"), str) else None)


load = load_tokenizer  # `hf.tokenizer.load(dir)`, as `hf.load(dir)` loads the model
