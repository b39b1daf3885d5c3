"""Policy+value decoder-only transformer (Flax linen), with three ways to run it.

- `forward`: the full causal forward over a sequence (the slow reference path).
- `prefill` + `decode_step`: a KV cache computed once for a prompt, then one token at a time.
- `extend`: one new token attending to any number of KV sources (the prompt's cache, the KV of
  a search-tree path); this is what a search simulation calls. `extend_siblings` runs G such
  tokens per row in one call, each blind to its siblings (value-guided beam's expansions).

All of them go through the same `Transformer.__call__`, whose attention takes the keys and values
to attend to as a tuple of `KVSource`s besides the tokens it is given. Softmax is joint over all
sources, so attending to (cache, path, self) equals attending to their concatenation without
ever copying the cache. Only this module touches the Flax module.

Dimension letters (the package's table): B batch, L sequence or cache slots (a call's tokens, a
source's keys), G sibling tokens per row, Y layers, H heads, Hkv KV heads, E head width,
M model width, F feed-forward width, V vocab.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokenzero.config import ModelConfig


class KVSource(NamedTuple):
  """Keys/values to attend to, for all layers at once."""
  k: jax.Array  # [Y, B, L, Hkv, E]
  v: jax.Array  # [Y, B, L, Hkv, E]
  mask: jax.Array  # [B, L] bool: which keys are visible.


class KVCache(NamedTuple):
  """Per-row KV cache; `length[b]` tokens of row b are filled, the next one goes there."""
  k: jax.Array  # [Y, B, L, Hkv, E]
  v: jax.Array  # [Y, B, L, Hkv, E]
  length: jax.Array  # [B] int32

  def as_source(self) -> KVSource:
    slots = jnp.arange(self.k.shape[2])
    return KVSource(self.k, self.v, slots[None, :] < self.length[:, None])


class ModelOutput(NamedTuple):
  logits: jax.Array  # [B, L, V] (or [B, V] for one-token calls)
  value: jax.Array  # [B, L] (or [B])


_NEG = -1e30  # additive mask; finite so fully masked rows stay NaN-free.


def _dtype(config: ModelConfig):
  try:
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.dtype]
  except KeyError:
    raise ValueError(f"model.dtype must be float32 or bfloat16, got {config.dtype!r}") from None


class RMSNorm(nn.Module):
  eps: float

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (x32 * scale).astype(x.dtype)


def _head_matmul(x, kernel):
  """The LM head: x [..., M] in the compute dtype, kernel [M, V] (the params' dtype) -> float32
  logits [..., V].

  Under bfloat16, a bf16 matmul accumulated and returned in float32 (`preferred_element_type`),
  rather than a float32 matmul: at real vocabularies the head is the model's largest matmul
  (65% of a token's matmul FLOPs at GPT-2's vocabulary and 6 layers of d=384), and bf16 runs at
  twice TF32's rate on an H100's tensor cores (float32 far below both). The logits are then no
  longer rounded to bf16's 8 bits (a logit of 20 moved by up to 0.06) before the softmax, top-K
  and log-probs; the inputs' rounding stays, as in every layer, and dominates:
  benchmarks/lm_head_dtype.py finds the same error against the float32 model with a float32
  head. On CPU a float32 head is faster (XLA's bf16 dot is slow there: a decode step in 0.86x
  the time), but a bf16 model is twice as slow as a float32 one: use float32 on CPU, where this
  is a float32 matmul.
  """
  return jnp.dot(x, kernel.astype(x.dtype), preferred_element_type=jnp.float32)


class LMHead(nn.Module):
  """An untied LM head: params `kernel` [M, V], as `nn.Dense(V, use_bias=False)` holds them."""
  vocab_size: int

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.vocab_size))
    return _head_matmul(x, kernel)


def _norm(config: ModelConfig, name: str):
  if config.arch == "llama":
    return RMSNorm(config.norm_eps, name=name)
  return nn.LayerNorm(epsilon=config.norm_eps, dtype=_dtype(config), name=name)


def _rope(x, positions, theta: float):
  """Rotary embedding, HF Llama's rotate-half convention. x [B, L, H, E], positions [B, L]."""
  half = x.shape[-1] // 2
  inv_freq = 1.0 / (theta ** (jnp.arange(0, half, dtype=jnp.float32) / half))
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, L, E/2]
  cos = jnp.cos(jnp.concatenate([angles, angles], -1))[:, :, None, :]
  sin = jnp.sin(jnp.concatenate([angles, angles], -1))[:, :, None, :]
  x32 = x.astype(jnp.float32)
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], -1)
  return (x32 * cos + rotated * sin).astype(x.dtype)


class Attention(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x, positions, sources: Sequence[tuple], self_mask):
    """x [B, L, M]; sources: (k [B, L', Hkv, E], v, mask [B, L']); self_mask [B, L, L].

    Returns the attention output [B, L, M] and this call's own (k, v) [B, L, Hkv, E].
    """
    cfg = self.config
    heads, kv_heads, head_dim = cfg.num_heads, cfg.kv_heads, cfg.dim_per_head
    dense = functools.partial(nn.Dense, dtype=_dtype(cfg))
    batch, length, _ = x.shape
    q = dense(heads * head_dim, use_bias=cfg.attn_bias, name="q")(x)
    k = dense(kv_heads * head_dim, use_bias=cfg.attn_bias, name="k")(x)
    v = dense(kv_heads * head_dim, use_bias=cfg.attn_bias, name="v")(x)
    q = q.reshape(batch, length, heads, head_dim)
    k = k.reshape(batch, length, kv_heads, head_dim)
    v = v.reshape(batch, length, kv_heads, head_dim)
    if cfg.arch == "llama":
      q = _rope(q, positions, cfg.rope_theta)
      k = _rope(k, positions, cfg.rope_theta)
    groups = heads // kv_heads
    q = q.reshape(batch, length, kv_heads, groups, head_dim) / jnp.sqrt(head_dim).astype(q.dtype)

    keys = [(src_k, src_v, src_mask[:, None, :]) for src_k, src_v, src_mask in sources]
    keys.append((k, v, self_mask))
    # Scores accumulate and come out in float32 and the softmax runs there; only its weights go
    # back to the compute dtype for the values' matmul.
    scores = [
        jnp.einsum("blhge,bmhe->bhglm", q, key_k, preferred_element_type=jnp.float32)
        + jnp.where(mask, 0.0, _NEG)[:, None, None, :, :]
        for key_k, _, mask in keys
    ]
    sizes = [s.shape[-1] for s in scores]
    weights = jax.nn.softmax(jnp.concatenate(scores, axis=-1), axis=-1).astype(v.dtype)
    out = 0.0
    start = 0
    for (_, key_v, _), size in zip(keys, sizes):
      out = out + jnp.einsum("bhglm,bmhe->blhge", weights[..., start:start + size], key_v)
      start += size
    out = out.reshape(batch, length, heads * head_dim)
    out = dense(cfg.d_model, use_bias=cfg.proj_bias, name="o")(out)
    return out, (k, v)


class MLP(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    dense = functools.partial(nn.Dense, dtype=_dtype(cfg), use_bias=cfg.proj_bias)
    if cfg.arch == "llama":
      gate = dense(cfg.ff_dim, name="gate")(x)
      up = dense(cfg.ff_dim, name="up")(x)
      return dense(cfg.d_model, name="down")(jax.nn.silu(gate) * up)
    hidden = jax.nn.gelu(dense(cfg.ff_dim, name="fc")(x), approximate=True)
    return dense(cfg.d_model, name="proj")(hidden)


class Block(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x, positions, sources, self_mask):
    attn_out, kv = Attention(self.config, name="attn")(
        _norm(self.config, "attn_norm")(x), positions, sources, self_mask)
    x = x + attn_out
    x = x + MLP(self.config, name="mlp")(_norm(self.config, "mlp_norm")(x))
    return x, kv


class Transformer(nn.Module):
  """Tokens at given positions, attending to KV sources and to themselves (masked)."""
  config: ModelConfig

  @nn.compact
  def __call__(self, tokens, positions, sources: Sequence[KVSource] = (), self_mask=None,
               output_index=None):
    """tokens, positions [B, L] -> (ModelOutput [B, L, ...], (k, v) [Y, B, L, Hkv, E]).

    With `output_index` [B], the heads run only at that index of each row (outputs [B, 1, ...]):
    a prompt's prefill needs one row of logits, not [B, L, V].
    """
    cfg = self.config
    if cfg.arch not in ("gpt2", "llama"):
      raise ValueError(f"model.arch must be 'gpt2' or 'llama', got {cfg.arch!r}")
    if self_mask is None:
      length = tokens.shape[1]
      self_mask = jnp.broadcast_to(jnp.tril(jnp.ones((length, length), bool)),
                                   (tokens.shape[0], length, length))
    embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=_dtype(cfg),
                     embedding_init=nn.initializers.normal(0.02), name="embed")
    x = embed(tokens)
    if cfg.arch == "gpt2":
      x = x + nn.Embed(cfg.context, cfg.d_model, dtype=_dtype(cfg),
                       embedding_init=nn.initializers.normal(0.01), name="pos_embed")(positions)
    ks, vs = [], []
    for layer in range(cfg.num_layers):
      layer_sources = [(s.k[layer], s.v[layer], s.mask) for s in sources]
      x, (k, v) = Block(cfg, name=f"block_{layer}")(x, positions, layer_sources, self_mask)
      ks.append(k)
      vs.append(v)
    if output_index is not None:
      x = jnp.take_along_axis(x, output_index[:, None, None], axis=1)
    x = _norm(cfg, "final_norm")(x)
    if cfg.tie_embeddings:  # GPT-2, and Llama-family checkpoints that tie (SmolLM2)
      logits = _head_matmul(x, embed.embedding.T)
    else:
      logits = LMHead(cfg.vocab_size, name="lm_head")(x)
    # A new value head outputs ~0 so that a pretrained prior starts with a neutral value.
    value = nn.Dense(1, kernel_init=nn.initializers.zeros, dtype=jnp.float32,
                     name="value_head")(x.astype(jnp.float32))[..., 0]
    return ModelOutput(logits, value), (jnp.stack(ks), jnp.stack(vs))


@functools.partial(jax.jit, static_argnums=0)  # one compile instead of op-by-op dispatch.
def init_params(config: ModelConfig, rng: jax.Array):
  """Random-init parameters for `config`."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  return Transformer(config).init(rng, tokens, tokens)["params"]


def num_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def forward(params, config: ModelConfig, tokens: jax.Array) -> ModelOutput:
  """Full causal forward (reference path). tokens [B, L] -> logits [B, L, V], value [B, L]."""
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  out, _ = Transformer(config).apply({"params": params}, tokens, positions)
  return out


def prefill(params, config: ModelConfig, tokens: jax.Array, lengths: jax.Array,
            cache_size: int) -> tuple[ModelOutput, KVCache]:
  """Runs right-padded prompts [B, L] (row b has `lengths[b]` real tokens) into a fresh cache.

  Returns the outputs at each row's last real token (logits [B, V], value [B]) and a cache with
  `cache_size` slots whose `length` is `lengths`. Padding after a row's end is causal-masked
  from its real tokens, and the slots it fills are overwritten by the decoding that follows.
  """
  batch, length = tokens.shape
  if cache_size < length:
    raise ValueError(f"cache_size {cache_size} is shorter than the prompt ({length})")
  positions = jnp.broadcast_to(jnp.arange(length), tokens.shape)
  out, (k, v) = Transformer(config).apply({"params": params}, tokens, positions,
                                          output_index=lengths - 1)
  pad = [(0, 0), (0, 0), (0, cache_size - length), (0, 0), (0, 0)]
  cache = KVCache(jnp.pad(k, pad), jnp.pad(v, pad), lengths.astype(jnp.int32))
  return ModelOutput(out.logits[:, 0], out.value[:, 0]), cache


def extend_siblings(
    params, config: ModelConfig, tokens: jax.Array, positions: jax.Array,
    sources: Sequence[KVSource]) -> tuple[ModelOutput, tuple[jax.Array, jax.Array]]:
  """G sibling tokens per row at `positions`, each attending to `sources` and itself only.

  tokens, positions [B, G] -> ModelOutput (logits [B, G, V], value [B, G]) and their (k, v)
  [Y, B, G, Hkv, E]: G alternative next tokens of a row cost one call, not G.
  """
  rows, siblings = tokens.shape
  self_mask = jnp.broadcast_to(jnp.eye(siblings, dtype=bool), (rows, siblings, siblings))
  return Transformer(config).apply({"params": params}, tokens, positions, sources, self_mask)


def extend(params, config: ModelConfig, token: jax.Array, position: jax.Array,
           sources: Sequence[KVSource]) -> tuple[ModelOutput, tuple[jax.Array, jax.Array]]:
  """One new token per row at `position`, attending to `sources` and itself.

  token, position [B] -> ModelOutput (logits [B, V], value [B]) and its (k, v) [Y, B, Hkv, E].
  """
  out, (k, v) = extend_siblings(params, config, token[:, None], position[:, None], sources)
  return ModelOutput(out.logits[:, 0], out.value[:, 0]), (k[:, :, 0], v[:, :, 0])


def write_slot(buffer: jax.Array, values: jax.Array, index: jax.Array, axis: int) -> jax.Array:
  """buffer[..., b, index[b], ...] = values[..., b, ...] with batch on axis `axis - 1`.

  A one-hot blend rather than a scatter: on CPU and GPU it fuses into one elementwise pass.
  """
  slots = jnp.arange(buffer.shape[axis])
  hit = slots[None, :] == index[:, None]  # [B, L]
  shape = [1] * buffer.ndim
  shape[axis - 1] = hit.shape[0]
  shape[axis] = hit.shape[1]
  hit = hit.reshape(shape)
  return jnp.where(hit, jnp.expand_dims(values, axis), buffer)


def decode_step(params, config: ModelConfig, token: jax.Array,
                cache: KVCache) -> tuple[ModelOutput, KVCache]:
  """Appends one token per row [B] at `cache.length` -> (logits [B, V], value [B]), new cache."""
  out, (k, v) = extend(params, config, token, cache.length, [cache.as_source()])
  cache = KVCache(write_slot(cache.k, k, cache.length, axis=2),
                  write_slot(cache.v, v, cache.length, axis=2), cache.length + 1)
  return out, cache
