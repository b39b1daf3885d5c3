"""llama.cpp GGUF files (Llama family) as tokenzero params, config and tokenizer.

A GGUF file carries everything a model directory does, in one file: `llama.*` metadata for the
config, quantized tensors under llama.cpp's names, and `tokenizer.ggml.*` for the tokenizer.
`load_gguf` turns them into the HF `config.json` dict and HF tensor names that `configs` and
`params` already map, so a GGUF checkpoint goes through exactly the code an HF directory does:

- tensors are dequantized to float32 by the `gguf` package (F32, F16, Q8_0, Q4_0, Q4_1; any
  other type is an error naming the tensor), and llama.cpp's row permutation of Q and K (which
  interleaves the two RoPE halves of each head) is undone, back to HF's rotate-half order;
- the tokenizer is a `tokenizers` byte-level BPE from the vocabulary and merges, with the
  pre-tokenizer that `tokenizer.ggml.pre` names (only the ones listed in `PRE_TOKENIZERS`: an
  unknown one would silently split numbers differently from the original model).

Shapes use the package's letters: H heads, Hkv KV heads, E head width, M model width.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import gguf
import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors

from tokenzero.errors import HFError, HFTokenizerError
from tokenzero.hf.tokenizer import HFTokenizer

# Types the `gguf` package dequantizes that the tests cover (see tests/test_hf_gguf.py).
QUANT_TYPES = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1")
_TOKEN_CONTROL, _TOKEN_USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values (llama.cpp)
# llama.cpp tensor name (in block i) -> HF Llama tensor name.
_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
                 "output": "lm_head"}


def _byte_level() -> pre_tokenizers.PreTokenizer:
  return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


# `tokenizer.ggml.pre` -> the `tokenizers` pre-tokenizer of the model it was converted from.
PRE_TOKENIZERS = {
    "gpt2": _byte_level,
    # SmolLM's tokenizer.json: every digit its own piece, then GPT-2's byte-level split.
    "smollm": lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True), _byte_level()]),
}


class GGUFModel(NamedTuple):
  """What a GGUF file holds, in the forms `configs` and `params` read."""
  hf_config: dict[str, Any]  # as a Llama config.json would say it
  tensors: dict[str, np.ndarray]  # HF names -> float32, [out, in] for dense kernels


def gguf_path(path) -> Path | None:
  """The GGUF file `path` is, or the single one in directory `path`; None if neither."""
  path = Path(path)
  if path.is_file():
    return path if path.suffix == ".gguf" else None
  if path.is_dir():
    found = sorted(path.glob("*.gguf"))
    if len(found) > 1:
      raise HFError(f"{path} holds several GGUF files ({', '.join(p.name for p in found)}): "
                    "name one")
    return found[0] if found else None
  return None


def is_gguf(path) -> bool:
  try:
    return gguf_path(path) is not None
  except HFError:
    return True  # a GGUF directory, if an ambiguous one: loading says why


def _reader(path) -> tuple[Path, gguf.GGUFReader]:
  file = gguf_path(path)
  if file is None:
    raise HFError(f"{path} is not a GGUF file or a directory holding one")
  try:
    return file, gguf.GGUFReader(str(file))
  except (ValueError, OSError) as err:
    raise HFError(f"{file} is not a readable GGUF file: {err}") from err


def _field(reader: gguf.GGUFReader, key: str, default: Any = ...) -> Any:
  field = reader.fields.get(key)
  if field is None:
    if default is ...:
      raise HFError(f"GGUF metadata has no {key}")
    return default
  return field.contents()


def _unpermute(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """Inverse of llama.cpp's `permute` of q/k rows: [H * E, ...] with each head's rows in
  (E/2, 2) interleaved order -> HF's (2, E/2) halves order."""
  shape = weight.shape
  return (weight.reshape(num_heads, shape[0] // num_heads // 2, 2, *shape[1:])
          .swapaxes(1, 2).reshape(shape))


def _dequantize(tensor) -> np.ndarray:
  kind = tensor.tensor_type.name
  if kind not in QUANT_TYPES:
    raise HFError(f"tensor {tensor.name} has GGUF type {kind}: tokenzero reads "
                  f"{', '.join(QUANT_TYPES)}")
  array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
  # GGUF lists dimensions innermost first; numpy (and HF) outermost first.
  return np.asarray(array, np.float32).reshape(tuple(int(d) for d in reversed(tensor.shape)))


def _hf_name(name: str) -> str:
  stem, _, suffix = name.rpartition(".")
  parts = stem.split(".")
  if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_NAMES:
    return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{suffix}"
  if stem in _GLOBAL_NAMES:
    return f"{_GLOBAL_NAMES[stem]}.{suffix}"
  raise HFError(f"GGUF tensor {name} is not part of tokenzero's Llama layout")


def _float32(value) -> float:
  """A float32 metadata value as the decimal it was written from (9.99999974e-06 -> 1e-05):
  the shortest decimal that rounds to the same float32."""
  return float(str(np.float32(value)))


def _hf_config(file: Path, reader: gguf.GGUFReader) -> dict[str, Any]:
  """The Llama `config.json` dict equivalent to a GGUF file's metadata (no tensor is read)."""
  arch = _field(reader, "general.architecture")
  if arch != "llama":
    raise HFError(f"{file}: GGUF architecture {arch!r} is not supported (tokenzero reads "
                  "'llama')")
  num_heads = int(_field(reader, "llama.attention.head_count"))
  d_model = int(_field(reader, "llama.embedding_length"))
  names = {t.name for t in reader.tensors}
  vocab = _field(reader, "llama.vocab_size", None) or len(_field(reader, "tokenizer.ggml.tokens"))
  return {
      "architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "vocab_size": int(vocab),
      "num_hidden_layers": int(_field(reader, "llama.block_count")),
      "num_attention_heads": num_heads,
      "num_key_value_heads": int(_field(reader, "llama.attention.head_count_kv", num_heads)),
      "head_dim": int(_field(reader, "llama.attention.key_length", d_model // num_heads)),
      "hidden_size": d_model,
      "intermediate_size": int(_field(reader, "llama.feed_forward_length")),
      "max_position_embeddings": int(_field(reader, "llama.context_length", 2048)),
      "rms_norm_eps": _float32(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-6)),
      "rope_theta": _float32(_field(reader, "llama.rope.freq_base", 10000.0)),
      # llama.cpp ties the head by leaving `output.weight` out.
      "tie_word_embeddings": "output.weight" not in names,
      "attention_bias": any(n.endswith(".bias") for n in names), "mlp_bias": False,
      "hidden_act": "silu",
  }


def read_gguf_config(path) -> dict[str, Any]:
  """The HF config dict of a GGUF file (or a directory holding one), weights unread."""
  return _hf_config(*_reader(path))


def load_gguf(path) -> GGUFModel:
  """A Llama-family GGUF file (or a directory holding one) -> HF config dict and tensors."""
  file, reader = _reader(path)
  hf_config = _hf_config(file, reader)
  tensors = {}
  for tensor in reader.tensors:
    name = _hf_name(tensor.name)
    array = _dequantize(tensor)
    if ".q_proj." in name:
      array = _unpermute(array, hf_config["num_attention_heads"])
    elif ".k_proj." in name:
      array = _unpermute(array, hf_config["num_key_value_heads"])
    tensors[name] = array
  return GGUFModel(hf_config, tensors)


def load_gguf_tokenizer(path) -> HFTokenizer:
  """The tokenizer of a GGUF file: a `tokenizers` BPE with the file's pre-tokenizer, special
  tokens and chat template."""
  file, reader = _reader(path)
  model_kind = _field(reader, "tokenizer.ggml.model", None)
  if model_kind != "gpt2":
    raise HFTokenizerError(f"{file}: GGUF tokenizer model {model_kind!r} is not supported "
                           "(tokenzero reads byte-level BPE, 'gpt2')")
  pre = _field(reader, "tokenizer.ggml.pre", "gpt2")
  if pre not in PRE_TOKENIZERS:
    raise HFTokenizerError(f"{file}: GGUF pre-tokenizer {pre!r} is unknown to tokenzero (it "
                           f"knows {', '.join(PRE_TOKENIZERS)}): numbers and spaces would split "
                           "differently from the original model")
  tokens = list(_field(reader, "tokenizer.ggml.tokens"))
  token_types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
  merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges", [])]
  backend = tokenizers.Tokenizer(models.BPE(
      vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
  backend.pre_tokenizer = PRE_TOKENIZERS[pre]()
  backend.decoder = decoders.ByteLevel()
  backend.add_tokens([tokenizers.AddedToken(t, special=False, normalized=False)
                      for t, kind in zip(tokens, token_types) if kind == _TOKEN_USER_DEFINED])
  backend.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                              for t, kind in zip(tokens, token_types) if kind == _TOKEN_CONTROL])

  def token_id(key: str) -> int | None:
    value = _field(reader, f"tokenizer.ggml.{key}", None)
    return None if value is None else int(value)

  bos_id, eos_id, pad_id = token_id("bos_token_id"), token_id("eos_token_id"), token_id(
      "padding_token_id")
  if eos_id is None:
    raise HFTokenizerError(f"{file}: GGUF metadata has no tokenizer.ggml.eos_token_id")
  if bos_id is not None and _field(reader, "tokenizer.ggml.add_bos_token", False):
    bos = tokens[bos_id]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
  return HFTokenizer(backend=backend, name=file.stem, pad_id=eos_id if pad_id is None else pad_id,
                     eos_id=eos_id, eos_ids=(eos_id,), bos_id=bos_id, pad_token_id=pad_id,
                     chat_template=_field(reader, "tokenizer.chat_template", None))


def tokenizer_files(tokenizer: HFTokenizer, out_dir: Path) -> None:
  """Writes `tokenizer.json` and `tokenizer_config.json` for a GGUF's tokenizer, so an HF
  directory exported from a GGUF model (`tokenzero sft`) carries its tokenizer."""
  tokenizer.backend.save(str(out_dir / "tokenizer.json"))
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
            "eos_token": tokenizer.token_str(tokenizer.eos_id)}
  if tokenizer.bos_id is not None:
    config["bos_token"] = tokenizer.token_str(tokenizer.bos_id)
  if tokenizer.pad_token_id is not None:
    config["pad_token"] = tokenizer.token_str(tokenizer.pad_token_id)
  if tokenizer.chat_template:
    config["chat_template"] = tokenizer.chat_template
  (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
