"""Hugging Face checkpoints in and out: GPT-2, Llama and Qwen2 layouts as tokenzero params.

`load(model_dir)` reads `config.json` and the safetensors weights (one file or shards listed in
`model.safetensors.index.json`) into a `ModelConfig` and a param tree for `model.Transformer`.
`export(params, config, out_dir)` writes the reverse: a directory `transformers` loads with
`AutoModelForCausalLM.from_pretrained`, and the value head beside it in `value_head.safetensors`
(which `load` picks up again, so a trained policy round-trips).

Only `numpy`, `safetensors` and `ml_dtypes` (for bfloat16 tensors) are used here; `transformers`
is needed only by the parity tests. One table, `_names`, maps every tokenzero param path to its
HF tensor name in both directions.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, so safetensors can read BF16)
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from tokenzero import model as model_lib
from tokenzero.config import ModelConfig

# HF `architectures[0]` -> our layout family.
ARCHITECTURES = {
    "GPT2LMHeadModel": "gpt2",
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
}
_MODEL_TYPES = ("gpt2", "llama", "qwen2")  # config.json `model_type`, same names as ours
VALUE_HEAD_FILE = "value_head.safetensors"
_WEIGHTS_FILE = "model.safetensors"
_INDEX_FILE = "model.safetensors.index.json"
# Files of a tokenizer that `export(..., tokenizer_dir=...)` copies beside the weights.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "vocab.json", "merges.txt", "tokenizer.model")
# Buffers some checkpoints carry that are not weights (causal masks, RoPE frequencies).
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")
_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


class HFError(ValueError):
  """An HF checkpoint tokenzero cannot load, or a config it cannot export."""


# ---------------------------------------------------------------------------------------------
# Configs.


def read_json(path: Path) -> dict[str, Any]:
  try:
    with path.open() as f:
      return json.load(f)
  except json.JSONDecodeError as err:
    raise HFError(f"{path} is not valid JSON: {err}") from err


def family_of(hf_config: Mapping[str, Any]) -> str:
  """'gpt2' | 'llama' | 'qwen2' from `architectures` (or `model_type`); else an HFError."""
  architectures = hf_config.get("architectures") or []
  for name in architectures:
    if name in ARCHITECTURES:
      return ARCHITECTURES[name]
  if not architectures and hf_config.get("model_type") in _MODEL_TYPES:
    return hf_config["model_type"]
  found = architectures or [hf_config.get("model_type")]
  raise HFError(f"unsupported architecture {', '.join(map(str, found))}: tokenzero loads "
                f"{', '.join(ARCHITECTURES)}")


def _rope(hf_config: Mapping[str, Any]) -> float:
  """RoPE theta, old (`rope_theta`, `rope_scaling`) or new (`rope_parameters`) config style."""
  params = dict(hf_config.get("rope_parameters") or {})
  scaling = dict(hf_config.get("rope_scaling") or {})
  rope_type = (params.get("rope_type") or scaling.get("rope_type") or scaling.get("type")
               or "default")
  if rope_type != "default":
    raise HFError(f"unsupported rope scaling {rope_type!r}: tokenzero implements plain RoPE "
                  "(rope_type 'default') only")
  return float(params.get("rope_theta", hf_config.get("rope_theta", 10000.0)))


def config_from_hf(hf_config: Mapping[str, Any], *, dtype: str = "float32") -> ModelConfig:
  """`ModelConfig` equivalent of an HF `config.json` dict (unsupported variants are errors)."""
  family = family_of(hf_config)
  get = hf_config.get
  if family == "gpt2":
    act = get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
      raise HFError(f"unsupported GPT-2 activation_function {act!r}: tokenzero uses tanh GELU "
                    "(gelu_new)")
    if not get("scale_attn_weights", True) or get("scale_attn_by_inverse_layer_idx", False):
      raise HFError("unsupported GPT-2 attention scaling: tokenzero scales by 1/sqrt(head_dim) "
                    "only (scale_attn_weights=true, scale_attn_by_inverse_layer_idx=false)")
    d_model = hf_config["n_embd"]
    return ModelConfig(
        arch="gpt2",
        vocab_size=hf_config["vocab_size"],
        num_layers=hf_config["n_layer"],
        num_heads=hf_config["n_head"],
        d_model=d_model,
        d_ff=get("n_inner") or 4 * d_model,
        context=get("n_positions") or get("n_ctx"),
        norm_eps=get("layer_norm_epsilon", 1e-5),
        tie_embeddings=get("tie_word_embeddings", True),
        attn_bias=True,
        proj_bias=True,
        dtype=dtype)
  act = get("hidden_act", "silu")
  if act != "silu":
    raise HFError(f"unsupported {family} hidden_act {act!r}: tokenzero's SwiGLU uses silu")
  if family == "qwen2":
    layer_types = get("layer_types") or []
    if get("use_sliding_window", False) and (
        not layer_types or any(t != "full_attention" for t in layer_types)):
      raise HFError("unsupported Qwen2 sliding-window attention (use_sliding_window=true)")
    attn_bias, proj_bias = True, False
  else:
    # Llama's attention_bias puts biases on q, k, v and o; tokenzero's `proj_bias` covers o and
    # the MLP together, so the bias HF lacks is loaded as zeros (exact).
    attn_bias = bool(get("attention_bias", False))
    proj_bias = attn_bias or bool(get("mlp_bias", False))
  d_model = hf_config["hidden_size"]
  num_heads = hf_config["num_attention_heads"]
  return ModelConfig(
      arch="llama",
      vocab_size=hf_config["vocab_size"],
      num_layers=hf_config["num_hidden_layers"],
      num_heads=num_heads,
      num_kv_heads=get("num_key_value_heads") or num_heads,
      head_dim=get("head_dim") or d_model // num_heads,
      d_model=d_model,
      d_ff=hf_config["intermediate_size"],
      context=get("max_position_embeddings", 2048),
      norm_eps=get("rms_norm_eps", 1e-6),
      rope_theta=_rope(hf_config),
      tie_embeddings=get("tie_word_embeddings", False),
      attn_bias=attn_bias,
      proj_bias=proj_bias,
      dtype=dtype)


def export_family(config: ModelConfig) -> str:
  """The HF layout a tokenzero config exports to."""
  if config.arch == "gpt2":
    if config.kv_heads != config.num_heads or config.dim_per_head * config.num_heads != (
        config.d_model):
      raise HFError("GPT-2 export needs num_kv_heads == num_heads and head_dim == "
                    "d_model / num_heads (GPT2LMHeadModel has neither option)")
    return "gpt2"
  if config.arch == "llama":
    # Qwen2 is exactly "biases on q/k/v only"; everything else fits Llama's two bias switches.
    return "qwen2" if config.attn_bias and not config.proj_bias else "llama"
  raise HFError(f"cannot export model.arch {config.arch!r}")


def hf_config_from(config: ModelConfig, *, dtype: str = "float32",
                   special_ids: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """`config.json` dict for `config` (see `export_family` for the layout chosen)."""
  family = export_family(config)
  special = {k: v for k, v in (special_ids or {}).items() if v is not None}
  common = {"vocab_size": config.vocab_size, "tie_word_embeddings": config.tie_embeddings,
            "torch_dtype": dtype, "use_cache": True, **special}
  if family == "gpt2":
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "n_embd": config.d_model, "n_layer": config.num_layers, "n_head": config.num_heads,
        "n_inner": config.ff_dim, "n_positions": config.context, "n_ctx": config.context,
        "layer_norm_epsilon": config.norm_eps, "activation_function": "gelu_new",
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, **common}
  out = {
      "hidden_size": config.d_model, "intermediate_size": config.ff_dim,
      "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.kv_heads, "head_dim": config.dim_per_head,
      "max_position_embeddings": config.context, "rms_norm_eps": config.norm_eps,
      "rope_theta": config.rope_theta, "hidden_act": "silu", "attention_dropout": 0.0,
      **common}
  if family == "qwen2":
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "use_sliding_window": False, **out}
  return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
          "attention_bias": config.attn_bias or config.proj_bias, "mlp_bias": config.proj_bias,
          **out}


# ---------------------------------------------------------------------------------------------
# The name table.


def _names(config: ModelConfig, family: str) -> dict[tuple[str, ...], tuple[str, bool]]:
  """tokenzero param path -> (HF tensor name, stored transposed), for every param but the value
  head. GPT-2's fused `c_attn` appears as three virtual names `c_attn.{q,k,v}` (see `_unfuse`)."""
  names: dict[tuple[str, ...], tuple[str, bool]] = {}

  def dense(path, hf, transposed, bias=True):
    names[path + ("kernel",)] = (hf + ".weight", transposed)
    if bias:
      names[path + ("bias",)] = (hf + ".bias", False)

  def norm(path, hf, bias):
    names[path + ("scale",)] = (hf + ".weight", False)
    if bias:
      names[path + ("bias",)] = (hf + ".bias", False)

  if family == "gpt2":
    # GPT-2's Conv1D stores [in, out] like Flax; Llama's nn.Linear stores [out, in].
    names[("embed", "embedding")] = ("wte.weight", False)
    names[("pos_embed", "embedding")] = ("wpe.weight", False)
    for i in range(config.num_layers):
      block, hf = f"block_{i}", f"h.{i}"
      norm((block, "attn_norm"), f"{hf}.ln_1", True)
      for part in "qkv":
        dense((block, "attn", part), f"{hf}.attn.c_attn.{part}", False, config.attn_bias)
      dense((block, "attn", "o"), f"{hf}.attn.c_proj", False, config.proj_bias)
      norm((block, "mlp_norm"), f"{hf}.ln_2", True)
      dense((block, "mlp", "fc"), f"{hf}.mlp.c_fc", False, config.proj_bias)
      dense((block, "mlp", "proj"), f"{hf}.mlp.c_proj", False, config.proj_bias)
    norm(("final_norm",), "ln_f", True)
  else:
    names[("embed", "embedding")] = ("model.embed_tokens.weight", False)
    for i in range(config.num_layers):
      block, hf = f"block_{i}", f"model.layers.{i}"
      norm((block, "attn_norm"), f"{hf}.input_layernorm", False)
      for part in "qkv":
        dense((block, "attn", part), f"{hf}.self_attn.{part}_proj", True, config.attn_bias)
      dense((block, "attn", "o"), f"{hf}.self_attn.o_proj", True, config.proj_bias)
      norm((block, "mlp_norm"), f"{hf}.post_attention_layernorm", False)
      for part in ("gate", "up", "down"):
        dense((block, "mlp", part), f"{hf}.mlp.{part}_proj", True, config.proj_bias)
    norm(("final_norm",), "model.norm", False)
  if not config.tie_embeddings:
    names[("lm_head", "kernel")] = ("lm_head.weight", True)
  return names


def _unfuse(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """GPT-2 names without the `transformer.` prefix, `c_attn` split into q, k, v."""
  out = {}
  for name, tensor in tensors.items():
    name = name.removeprefix("transformer.")
    if ".attn.c_attn." in name:
      for part, piece in zip("qkv", np.split(tensor, 3, axis=-1)):
        out[name.replace(".c_attn.", f".c_attn.{part}.")] = piece
    else:
      out[name] = tensor
  return out


def _fuse(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Inverse of `_unfuse`, with the `transformer.` prefix HF writes."""
  out = {}
  for name, tensor in tensors.items():
    if ".attn.c_attn.q." in name:
      parts = [tensors[name.replace(".c_attn.q.", f".c_attn.{p}.")] for p in "qkv"]
      out["transformer." + name.replace(".c_attn.q.", ".c_attn.")] = np.concatenate(parts, -1)
    elif ".attn.c_attn." not in name:
      out[name if name.startswith("lm_head.") else "transformer." + name] = tensor
  return out


def _optional_zero(family: str, hf_name: str, hf_config: Mapping[str, Any]) -> bool:
  """Biases tokenzero's config has but this HF layout lacks: they load as zeros (exact)."""
  if not hf_name.endswith(".bias") or family == "gpt2":
    return False
  if ".mlp." in hf_name:
    return not hf_config.get("mlp_bias", False)
  if ".o_proj." in hf_name:
    return family == "qwen2" or not hf_config.get("attention_bias", False)
  return False


# ---------------------------------------------------------------------------------------------
# Loading.


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


def _cast(array, dtype) -> jax.Array:
  return jnp.asarray(np.asarray(array).astype(dtype))


def _nest(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, leaf in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = leaf
  return tree


def params_from_hf(tensors: Mapping[str, np.ndarray], config: ModelConfig,
                   hf_config: Mapping[str, Any], *, param_dtype: str = "float32"):
  """HF state dict (numpy) -> tokenzero params; a missing or misshapen tensor is an error.

  The value head is zeros (a neutral value for a new prior) unless `tensors` carries
  `value_head.kernel` / `value_head.bias`.
  """
  family = family_of(hf_config)
  dtype = _DTYPES[param_dtype]
  shapes = jax.eval_shape(lambda: model_lib.init_params(config, jax.random.key(0)))
  expected = {tuple(k.key for k in path): leaf.shape
              for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]}
  source = _unfuse(dict(tensors)) if family == "gpt2" else dict(tensors)
  names = _names(config, family)
  flat, missing, misshapen, used = {}, [], [], set()
  for path, (hf_name, transposed) in names.items():
    shape = expected[path]
    if hf_name not in source:
      if _optional_zero(family, hf_name, hf_config):
        flat[path] = jnp.zeros(shape, dtype)
      else:
        missing.append(hf_name)
      continue
    used.add(hf_name)
    array = source[hf_name].T if transposed else source[hf_name]
    if array.shape != shape:
      misshapen.append(f"{hf_name} {list(array.shape)} (want {list(shape)})")
      continue
    flat[path] = _cast(array, dtype)
  if missing or misshapen:
    problems = ([f"missing tensors: {', '.join(missing)}"] if missing else []) + (
        [f"wrong shapes: {', '.join(misshapen)}"] if misshapen else [])
    raise HFError(f"checkpoint does not match its config.json ({family}): "
                  + "; ".join(problems))
  head_shape = expected[("value_head", "kernel")]
  flat[("value_head", "kernel")] = _cast(
      source.get("value_head.kernel", np.zeros(head_shape)), np.float32)
  flat[("value_head", "bias")] = _cast(source.get("value_head.bias", np.zeros((1,))), np.float32)
  used.update(("value_head.kernel", "value_head.bias"))
  unused = [n for n in source if n not in used and not n.endswith(_BUFFER_SUFFIXES)
            and not (config.tie_embeddings and n == "lm_head.weight")]
  if unused:
    raise HFError(f"checkpoint has tensors tokenzero's {family} layout does not use: "
                  f"{', '.join(sorted(unused)[:10])}{' ...' if len(unused) > 10 else ''}")
  return _nest(flat)


def load(model_dir, *, dtype: str = "float32", param_dtype: str = "float32"):
  """HF model directory -> (ModelConfig, params).

  `dtype` is the compute dtype written into the config; `param_dtype` the dtype the weights are
  stored in (float32 by default, whatever the checkpoint's own dtype; the value head is always
  float32). A `value_head.safetensors` beside the weights (written by `export`) is loaded too.
  """
  model_dir = Path(model_dir)
  for name, value in (("dtype", dtype), ("param_dtype", param_dtype)):
    if value not in _DTYPES:
      raise HFError(f"{name} must be one of {', '.join(_DTYPES)}, got {value!r}")
  config_path = model_dir / "config.json"
  if not config_path.exists():
    raise HFError(f"{model_dir} is not an HF model directory: no config.json")
  hf_config = read_json(config_path)
  config = config_from_hf(hf_config, dtype=dtype)
  tensors = read_safetensors(weight_files(model_dir))
  if (model_dir / VALUE_HEAD_FILE).exists():
    tensors.update(read_safetensors([model_dir / VALUE_HEAD_FILE]))
  return config, params_from_hf(tensors, config, hf_config, param_dtype=param_dtype)


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


# ---------------------------------------------------------------------------------------------
# Export.


def _layout_config(config: ModelConfig, family: str) -> ModelConfig:
  """`config` with the biases the HF layout stores (tokenzero may lack some: they export as 0)."""
  if family == "gpt2":
    return dataclasses.replace(config, attn_bias=True, proj_bias=True)
  if family == "llama":
    # Llama's attention_bias covers q, k, v and o; mlp_bias the MLP (see `hf_config_from`).
    bias = config.attn_bias or config.proj_bias
    return dataclasses.replace(config, attn_bias=bias, proj_bias=bias)
  return config


def hf_state_dict(params, config: ModelConfig, *, dtype: str = "float32") -> dict[str, np.ndarray]:
  """tokenzero params -> HF tensors (numpy, `dtype`), value head excluded."""
  family = export_family(config)
  np_dtype = _DTYPES[dtype]
  layout = _layout_config(config, family)
  shapes = jax.eval_shape(lambda: model_lib.init_params(layout, jax.random.key(0)))
  expected = {tuple(k.key for k in path): leaf.shape
              for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]}
  flat = {tuple(k.key for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  out = {}
  for path, (hf_name, transposed) in _names(layout, family).items():
    if path in flat:
      array = np.asarray(jax.device_get(flat[path]), np.float32)
    else:
      array = np.zeros(expected[path], np.float32)
    out[hf_name] = np.ascontiguousarray(array.T if transposed else array).astype(np_dtype)
  return _fuse(out) if family == "gpt2" else out


def export(params, config: ModelConfig, out_dir, tokenizer_dir=None, *,
           dtype: str = "float32") -> Path:
  """Writes an HF model directory `transformers` loads: config.json, model.safetensors, and
  `value_head.safetensors` beside them. With `tokenizer_dir`, its tokenizer files are copied
  and its special-token ids written into config.json. Returns `out_dir`."""
  if dtype not in _DTYPES:
    raise HFError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  special = {}
  if tokenizer_dir is not None:
    tokenizer_dir = Path(tokenizer_dir)
    for name in TOKENIZER_FILES:
      if (tokenizer_dir / name).exists():
        shutil.copyfile(tokenizer_dir / name, out_dir / name)
    from tokenzero import hf_tokenizer  # pylint: disable=import-outside-toplevel
    tokenizer = hf_tokenizer.load(tokenizer_dir)
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
