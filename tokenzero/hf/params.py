"""HF tensors <-> tokenzero params, whatever file format they were read from.

One table, `_names`, maps every tokenzero param path to its HF tensor name in both directions.
`params_from_hf` turns a state dict of numpy arrays into a param tree for `model.Transformer`;
`hf_state_dict` is the reverse (value head excluded: `files.export` writes it apart). Shapes use
the package's letters: Y layers, H heads, Hkv KV heads, E head width, M model width,
F feed-forward width, V vocab.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from tokenzero import model as model_lib
from tokenzero.config import ModelConfig
from tokenzero.hf.configs import HFError, export_family, family_of, layout_config

# Param dtypes a checkpoint loads into or exports as.
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}
# Buffers some checkpoints carry that are not weights (causal masks, RoPE frequencies).
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")

ParamPath = tuple[str, ...]  # keys from the root: ("block_0", "attn", "q", "kernel")


def _names(config: ModelConfig, family: str) -> dict[ParamPath, tuple[str, bool]]:
  """tokenzero param path -> (HF tensor name, stored transposed), for every param but the value
  head, over the Y blocks. GPT-2's fused `c_attn` appears as three virtual names
  `c_attn.{q,k,v}` (see `_unfuse`)."""
  names: dict[ParamPath, tuple[str, bool]] = {}

  def dense(path, hf, transposed, bias=True):
    names[path + ("kernel",)] = (hf + ".weight", transposed)
    if bias:
      names[path + ("bias",)] = (hf + ".bias", False)

  def norm(path, hf, bias):
    names[path + ("scale",)] = (hf + ".weight", False)
    if bias:
      names[path + ("bias",)] = (hf + ".bias", False)

  if family == "gpt2":
    # GPT-2's Conv1D stores [in, out] like Flax (q: [M, H * E]); Llama's nn.Linear stores
    # [out, in] (q: [H * E, M]).
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
    names[("lm_head", "kernel")] = ("lm_head.weight", True)  # [V, M] in HF, [M, V] here
  return names


def _unfuse(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """GPT-2 names without the `transformer.` prefix, `c_attn` ([M, 3 * M], bias [3 * M]) split
  on its last axis into q, k, v ([M, M], bias [M])."""
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


def _flatten(tree) -> dict[ParamPath, Any]:
  return {tuple(k.key for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _shapes(config: ModelConfig) -> dict[ParamPath, tuple[int, ...]]:
  """Every param's shape under `config` (traced, never run: eager init is slow)."""
  shapes = jax.eval_shape(lambda: model_lib.init_params(config, jax.random.key(0)))
  return {path: leaf.shape for path, leaf in _flatten(shapes).items()}


def _cast(array, dtype) -> jax.Array:
  return jnp.asarray(np.asarray(array).astype(dtype))


def _nest(flat: dict[ParamPath, Any]) -> dict[str, Any]:
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
  `value_head.kernel` [M, 1] / `value_head.bias` [1].
  """
  family = family_of(hf_config)
  dtype = DTYPES[param_dtype]
  expected = _shapes(config)
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


def hf_state_dict(params, config: ModelConfig, *, dtype: str = "float32") -> dict[str, np.ndarray]:
  """tokenzero params -> HF tensors (numpy, `dtype`), value head excluded."""
  family = export_family(config)
  np_dtype = DTYPES[dtype]
  layout = layout_config(config, family)
  expected = _shapes(layout)
  flat = _flatten(params)
  out = {}
  for path, (hf_name, transposed) in _names(layout, family).items():
    if path in flat:
      array = np.asarray(jax.device_get(flat[path]), np.float32)
    else:
      array = np.zeros(expected[path], np.float32)
    out[hf_name] = np.ascontiguousarray(array.T if transposed else array).astype(np_dtype)
  return _fuse(out) if family == "gpt2" else out
