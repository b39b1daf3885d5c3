"""HF tensors <-> tokenzero params, whatever file format they were read from.

One table, `_names`, maps every tokenzero param path to its HF tensor name in both directions.
`params_from_hf` turns a state dict of numpy arrays into a param tree for `model.Transformer`;
`hf_state_dict` is the reverse (value head excluded: `files.export` writes it apart). Shapes use
the package's letters: Y layers, H heads, Hkv KV heads, E head width, M model width,
F feed-forward width, V vocab.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

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


class _Layout(NamedTuple):
  """Where one family keeps each tensor: HF names, relative to a layer where `layer` says."""
  embed: str
  positions: str | None  # learned position embedding (GPT-2)
  layer: str  # prefix of layer i's tensors
  final_norm: str
  transposed: bool  # dense kernels stored [out, in] (nn.Linear) rather than [in, out] (Conv1D)
  norm_bias: bool  # LayerNorm (weight and bias) rather than RMSNorm (weight only)
  norms: tuple[tuple[str, str], ...]  # (our norm, HF name)
  # (our dense path under the block, HF name, the ModelConfig flag that says it has a bias)
  dense: tuple[tuple[tuple[str, str], str, str], ...]


_LAYOUTS = {
    # GPT-2's Conv1D stores [in, out] like Flax (q: [M, H * E]); its fused c_attn appears as three
    # virtual names `c_attn.{q,k,v}` (see `_unfuse`).
    "gpt2": _Layout(
        embed="wte.weight", positions="wpe.weight", layer="h.{i}", final_norm="ln_f",
        transposed=False, norm_bias=True,
        norms=(("attn_norm", "ln_1"), ("mlp_norm", "ln_2")),
        dense=tuple((("attn", part), f"attn.c_attn.{part}", "attn_bias") for part in "qkv") + (
            (("attn", "o"), "attn.c_proj", "proj_bias"), (("mlp", "fc"), "mlp.c_fc", "proj_bias"),
            (("mlp", "proj"), "mlp.c_proj", "proj_bias"))),
    # Llama's (and Qwen2's) nn.Linear stores [out, in] (q: [H * E, M]).
    "llama": _Layout(
        embed="model.embed_tokens.weight", positions=None, layer="model.layers.{i}",
        final_norm="model.norm", transposed=True, norm_bias=False,
        norms=(("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm")),
        dense=tuple((("attn", part), f"self_attn.{part}_proj", "attn_bias") for part in "qkv") + (
            (("attn", "o"), "self_attn.o_proj", "proj_bias"),) + tuple(
                (("mlp", part), f"mlp.{part}_proj", "proj_bias") for part in ("gate", "up", "down"))),
}


def _names(config: ModelConfig, family: str) -> dict[ParamPath, tuple[str, bool]]:
  """tokenzero param path -> (HF tensor name, stored transposed), for every param but the value
  head, over the Y blocks."""
  layout = _LAYOUTS["gpt2" if family == "gpt2" else "llama"]
  names: dict[ParamPath, tuple[str, bool]] = {("embed", "embedding"): (layout.embed, False)}
  if layout.positions:
    names[("pos_embed", "embedding")] = (layout.positions, False)

  def norm(path: ParamPath, hf: str) -> None:
    names[path + ("scale",)] = (hf + ".weight", False)
    if layout.norm_bias:
      names[path + ("bias",)] = (hf + ".bias", False)

  for i in range(config.num_layers):
    block, prefix = f"block_{i}", layout.layer.format(i=i)
    for ours, hf in layout.norms:
      norm((block, ours), f"{prefix}.{hf}")
    for path, hf, bias_flag in layout.dense:
      names[(block,) + path + ("kernel",)] = (f"{prefix}.{hf}.weight", layout.transposed)
      if getattr(config, bias_flag):
        names[(block,) + path + ("bias",)] = (f"{prefix}.{hf}.bias", False)
  norm(("final_norm",), layout.final_norm)
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
