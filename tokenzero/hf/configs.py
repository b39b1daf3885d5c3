"""HF `config.json` <-> tokenzero `ModelConfig`, whatever file format the weights come in.

`config_from_hf` reads GPT-2, Llama and Qwen2 configs and rejects what tokenzero cannot compute
exactly (other activations, attention scalings, rope scalings, sliding windows);
`hf_config_from` writes the `config.json` of the layout `export_family` picks for a config.
Shapes use the package's letters: Y layers, H heads, Hkv KV heads, E head width, M model width,
F feed-forward width, V vocab.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from tokenzero.config import ModelConfig
from tokenzero.errors import HFError

# HF `architectures[0]` -> our layout family.
ARCHITECTURES = {
    "GPT2LMHeadModel": "gpt2",
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
}
_MODEL_TYPES = ("gpt2", "llama", "qwen2")  # config.json `model_type`, same names as ours


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
      # GPT-2 has Hkv == H and H * E == M built in.
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


def layout_config(config: ModelConfig, family: str) -> ModelConfig:
  """`config` with the biases the HF layout stores (tokenzero may lack some: they export as 0)."""
  if family == "gpt2":
    return dataclasses.replace(config, attn_bias=True, proj_bias=True)
  if family == "llama":
    # Llama's attention_bias covers q, k, v and o; mlp_bias the MLP (see `hf_config_from`).
    bias = config.attn_bias or config.proj_bias
    return dataclasses.replace(config, attn_bias=bias, proj_bias=bias)
  return config
