"""HF model directories in and out: `config.json` plus safetensors weights.

`load(model_dir)` reads `config.json` and the safetensors weights (one file or shards listed in
`model.safetensors.index.json`) into a `ModelConfig` and a param tree for `model.Transformer`.
`export(params, config, out_dir)` writes the reverse: a directory `transformers` loads with
`AutoModelForCausalLM.from_pretrained`, and the value head beside it in `value_head.safetensors`
(which `load` picks up again, so a trained policy round-trips).

Everything specific to the file format is here; the mapping of configs and tensor names, which
any format shares, is in `configs` and `params`. Only `numpy`, `safetensors` and `ml_dtypes` (for
bfloat16 tensors) are used; `transformers` is needed only by the parity tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, so safetensors can read BF16)
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from tokenzero.config import ModelConfig
from tokenzero.hf.configs import HFError, config_from_hf, family_of, hf_config_from
from tokenzero.hf import gguf
from tokenzero.hf import tokenizer as tokenizer_lib
from tokenzero.hf.params import DTYPES, hf_state_dict, params_from_hf

VALUE_HEAD_FILE = "value_head.safetensors"
_WEIGHTS_FILE = "model.safetensors"
_INDEX_FILE = "model.safetensors.index.json"
# Files of a tokenizer that `export(..., tokenizer_dir=...)` copies beside the weights.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "vocab.json", "merges.txt", "tokenizer.model")


def read_json(path: Path) -> dict[str, Any]:
  try:
    with path.open() as f:
      return json.load(f)
  except json.JSONDecodeError as err:
    raise HFError(f"{path} is not valid JSON: {err}") from err


def weight_files(model_dir: Path) -> list[Path]:
  """The safetensors file(s) of an HF model directory."""
  single, index = model_dir / _WEIGHTS_FILE, model_dir / _INDEX_FILE
  if single.exists():
    return [single]
  if index.exists():
    shards = sorted(set(read_json(index).get("weight_map", {}).values()))
    missing = [s for s in shards if not (model_dir / s).exists()]
    if missing:
      raise HFError(f"{model_dir}: shards listed in {_INDEX_FILE} are missing: "
                    f"{', '.join(missing)}")
    return [model_dir / s for s in shards]
  others = sorted(p.name for p in model_dir.glob("*.bin")) + sorted(
      p.name for p in model_dir.glob("*.pt"))
  hint = f" (found {', '.join(others)}: convert them to safetensors)" if others else ""
  raise HFError(f"{model_dir}: no {_WEIGHTS_FILE} or {_INDEX_FILE}{hint}")


def read_safetensors(paths) -> dict[str, np.ndarray]:
  """Every tensor of the given safetensors files, as numpy arrays in their stored dtype."""
  tensors = {}
  for path in paths:
    with safe_open(str(path), framework="numpy") as f:
      for name in f.keys():
        tensors[name] = f.get_tensor(name)
  return tensors


def load(model_dir, *, dtype: str = "float32", param_dtype: str = "float32"):
  """HF model directory -> (ModelConfig, params).

  `dtype` is the compute dtype written into the config; `param_dtype` the dtype the weights are
  stored in (float32 by default, whatever the checkpoint's own dtype; the value head is always
  float32). A `value_head.safetensors` beside the weights (written by `export`) is loaded too.
  """
  model_dir = Path(model_dir)
  for name, value in (("dtype", dtype), ("param_dtype", param_dtype)):
    if value not in DTYPES:
      raise HFError(f"{name} must be one of {', '.join(DTYPES)}, got {value!r}")
  config_path = model_dir / "config.json"
  if not config_path.exists() and gguf.is_gguf(model_dir):
    loaded = gguf.load_gguf(model_dir)
    config = config_from_hf(loaded.hf_config, dtype=dtype)
    return config, params_from_hf(loaded.tensors, config, loaded.hf_config,
                                  param_dtype=param_dtype)
  if not config_path.exists():
    raise HFError(f"{model_dir} is not an HF model directory: no config.json")
  hf_config = read_json(config_path)
  config = config_from_hf(hf_config, dtype=dtype)
  tensors = read_safetensors(weight_files(model_dir))
  if (model_dir / VALUE_HEAD_FILE).exists():
    tensors.update(read_safetensors([model_dir / VALUE_HEAD_FILE]))
  return config, params_from_hf(tensors, config, hf_config, param_dtype=param_dtype)


def load_tokenizer(path) -> tokenizer_lib.HFTokenizer:
  """The tokenizer of an HF model directory (`tokenizer.json`) or of a GGUF file."""
  if not (Path(path) / "tokenizer.json").exists() and gguf.is_gguf(path):
    return gguf.load_gguf_tokenizer(path)
  return tokenizer_lib.load_tokenizer(path)


def read_config(path) -> dict[str, Any]:
  """The `config.json` dict of an HF model directory, or its equivalent from a GGUF file."""
  if not (Path(path) / "config.json").exists() and gguf.is_gguf(path):
    return gguf.read_gguf_config(path)
  return read_json(Path(path) / "config.json")


def is_model(path) -> bool:
  """An HF model directory or a GGUF file (or a directory holding one)?"""
  return is_hf_dir(path) or gguf.is_gguf(path)


def is_hf_dir(path) -> bool:
  """Does `path` look like an HF model directory (config.json naming a supported layout)?"""
  path = Path(path)
  if not (path / "config.json").exists():
    return False
  try:
    family_of(read_json(path / "config.json"))
  except HFError:
    return False
  return True


def export(params, config: ModelConfig, out_dir, tokenizer_dir=None, *,
           dtype: str = "float32") -> Path:
  """Writes an HF model directory `transformers` loads: config.json, model.safetensors, and
  `value_head.safetensors` (kernel [M, 1], bias [1]) beside them. With `tokenizer_dir` (an HF
  directory or a GGUF file), its tokenizer files are copied (or, from a GGUF, written) and its
  special-token ids written into config.json. Returns `out_dir`."""
  if dtype not in DTYPES:
    raise HFError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  special = {}
  if tokenizer_dir is not None:
    tokenizer_dir = Path(tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    if gguf.is_gguf(tokenizer_dir) and not (tokenizer_dir / "tokenizer.json").exists():
      gguf.tokenizer_files(tokenizer, out_dir)
    for name in TOKENIZER_FILES:
      if tokenizer_dir.is_dir() and (tokenizer_dir / name).exists():
        shutil.copyfile(tokenizer_dir / name, out_dir / name)
    special = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
               "pad_token_id": tokenizer.pad_token_id}
  hf_config = hf_config_from(config, dtype=dtype, special_ids=special)
  with (out_dir / "config.json").open("w") as f:
    json.dump(hf_config, f, indent=2)
  save_file(hf_state_dict(params, config, dtype=dtype), str(out_dir / _WEIGHTS_FILE),
            metadata={"format": "pt"})
  head = params["value_head"]
  save_file({"value_head.kernel": np.asarray(head["kernel"], np.float32),
             "value_head.bias": np.asarray(head["bias"], np.float32)},
            str(out_dir / VALUE_HEAD_FILE), metadata={"format": "pt"})
  return out_dir
