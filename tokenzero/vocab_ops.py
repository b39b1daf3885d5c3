"""Exact operations along a vocabulary axis, cheap where V is large: top-k, a categorical draw,
the first argmax and a picked token's log-probability.

At V = 49152 on a CPU, `jax.lax.top_k` over a row and `jax.random.categorical` (V Gumbel draws
per row) cost more than a small model's whole decoding step. Each function here returns what
its plain JAX counterpart returns (`top_k`: the same values and indices; `categorical`: a draw
from the same distribution) from two passes over blocks of `BLOCK` tokens: one cheap reduction
over the whole row, then the work on a few blocks only. Rows are the leading axes.
Dimension letters: R rows (any leading shape), V vocab, G blocks, K kept.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BLOCK = 128  # tokens a block; about sqrt(V) at V ~ 50k keeps both passes small.


def _blocks(x: jax.Array, fill) -> jax.Array:
  """x [R, V] -> [R, G, BLOCK], the tail padded with `fill`."""
  rows, vocab = x.shape
  num_blocks = -(-vocab // BLOCK)
  x = jnp.pad(x, [(0, 0), (0, num_blocks * BLOCK - vocab)], constant_values=fill)
  return x.reshape(rows, num_blocks, BLOCK)


def top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """`jax.lax.top_k(x, k)` over the last axis: values and int32 indices [..., K], ties to the
  lower index, for finite or -inf entries (not NaN).

  The k best entries lie in the k blocks whose best entries are best (a block holding one of
  them has a best entry at least as good, and k better blocks would give k better entries), so
  a top-k of the blocks' maxima picks k blocks, and a top-k of their k x BLOCK entries, kept in
  index order so that ties still go to the lower index, finishes.
  """
  lead, vocab = x.shape[:-1], x.shape[-1]
  if -(-vocab // BLOCK) <= k:  # as many blocks as picks: nothing to skip
    return jax.lax.top_k(x, k)
  blocks = _blocks(x.reshape(-1, vocab), -jnp.inf)  # [R, G, BLOCK]
  _, best_blocks = jax.lax.top_k(jnp.max(blocks, axis=-1), k)  # [R, K]
  best_blocks = jnp.sort(best_blocks, axis=-1)
  candidates = jnp.take_along_axis(blocks, best_blocks[:, :, None], axis=1)  # [R, K, BLOCK]
  values, where = jax.lax.top_k(candidates.reshape(candidates.shape[0], k * BLOCK), k)
  block = jnp.take_along_axis(best_blocks, where // BLOCK, axis=1)
  indices = (block * BLOCK + where % BLOCK).astype(jnp.int32)
  return values.reshape(lead + (k,)), indices.reshape(lead + (k,))


def argmax(x: jax.Array) -> jax.Array:
  """`jnp.argmax(x, -1)` for rows without NaN: the first index of the row's maximum [...].

  A max and a min over an iota: two plain reductions, cheaper on XLA:CPU than argmax's paired
  (value, index) one.
  """
  best = jnp.max(x, axis=-1, keepdims=True)
  iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  return jnp.min(jnp.where(x == best, iota, x.shape[-1]), axis=-1)


def log_prob(logits: jax.Array, token: jax.Array) -> jax.Array:
  """log softmax(logits)[token] per row (logits [..., V], token [...]): `jax.nn.log_softmax`'s
  formula at one entry, without writing the [..., V] result."""
  top = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  picked = jnp.take_along_axis(logits, token[..., None].astype(jnp.int32), axis=-1)
  return ((picked - top) - jnp.log(jnp.sum(jnp.exp(logits - top), axis=-1, keepdims=True)))[..., 0]


def categorical(key: jax.Array, logits: jax.Array) -> jax.Array:
  """A draw per row from softmax(logits) [..., V] -> int32 [...], as `jax.random.categorical`
  draws (another random stream), from two uniforms per row instead of V Gumbels.

  Inverse CDF in two stages: the first uniform picks a block by the cumulative sums of the
  blocks' masses, the second a token in it by the cumulative sum of its own masses. Each stage
  takes the first cumulative sum >= u x total with u in (0, 1] and total that cumulative sum's
  own last entry, so a token of zero mass (a -inf logit) is never drawn (its cumulative sum
  equals the one before it, or 0 < u x total) and the last token with mass is reached at u = 1.
  A row with no mass at all (every logit -inf) gives 0. float32 throughout: a token whose mass is
  below ~1e-7 of its block's is drawn at a rounded rate (the uniforms' resolution).
  """
  lead, vocab = logits.shape[:-1], logits.shape[-1]
  logits = logits.reshape(-1, vocab).astype(jnp.float32)
  rows = logits.shape[0]
  top = jnp.max(logits, axis=-1, keepdims=True)
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  mass = _blocks(jnp.exp(logits - top), 0.0)  # [R, G, BLOCK]
  u = 1.0 - jax.random.uniform(key, (rows, 2))  # (0, 1]
  block_cdf = jnp.cumsum(jnp.sum(mass, axis=-1), axis=-1)  # [R, G]
  block = jnp.sum(block_cdf < u[:, :1] * block_cdf[:, -1:], axis=-1)  # [R]
  inner_cdf = jnp.cumsum(jnp.take_along_axis(mass, block[:, None, None], axis=1)[:, 0], axis=-1)
  inner = jnp.sum(inner_cdf < u[:, 1:] * inner_cdf[:, -1:], axis=-1)  # [R]
  return (block * BLOCK + inner).astype(jnp.int32).reshape(lead)
