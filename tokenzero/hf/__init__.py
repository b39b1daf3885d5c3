"""Hugging Face checkpoints in and out: GPT-2, Llama and Qwen2 layouts as tokenzero params.

- `configs`: HF `config.json` <-> `ModelConfig` (format-independent).
- `params`: HF tensor names <-> the tokenzero param tree (format-independent).
- `files`: HF model directories (`config.json` + safetensors): `load`, `export`, `is_hf_dir`.
- `tokenizer`: a checkpoint's `tokenizer.json` as a tokenzero `Tokenizer` (`load_tokenizer`).
- `gguf`: llama.cpp GGUF files (Llama family): dequantized tensors, config and tokenizer, which
  `load` and `load_tokenizer` read when given a `.gguf` file or a directory holding one.

This package imports `tokenzero.model` and `tokenzero.config` only, so any other module may
import it.
"""

from tokenzero.hf.configs import (ARCHITECTURES, HFError, config_from_hf, export_family,
                                  family_of, hf_config_from)
from tokenzero.hf.files import (TOKENIZER_FILES, VALUE_HEAD_FILE, export, is_hf_dir, is_model,
                                load, load_tokenizer, read_config, read_json, read_safetensors,
                                weight_files)
from tokenzero.hf.gguf import is_gguf, load_gguf, load_gguf_tokenizer
from tokenzero.hf.params import hf_state_dict, params_from_hf
from tokenzero.hf.tokenizer import HFTokenizer, HFTokenizerError

__all__ = [
    "ARCHITECTURES", "HFError", "HFTokenizer", "HFTokenizerError", "TOKENIZER_FILES",
    "VALUE_HEAD_FILE", "config_from_hf", "export", "export_family", "family_of",
    "hf_config_from", "hf_state_dict", "is_gguf", "is_hf_dir", "is_model", "load", "load_gguf",
    "load_gguf_tokenizer", "load_tokenizer", "params_from_hf", "read_config", "read_json",
    "read_safetensors", "weight_files",
]
