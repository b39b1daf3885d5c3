"""The search tree's nodes, one token of KV each, and the network call that expands one.

A node holds the token that leads into it and that token's own keys and values,
`[Y, Hkv, E]` per node, so bytes per node do not grow with depth. To expand a child, the
parent's ancestors' KV is gathered along its path (`Nodes.path`, node indices, D ints per node)
and the new token attends over the episode's cache plus that path (`model.extend` with two
`KVSource`s). `search.incremental=False` recomputes the whole sequence instead (the reference).

A node is terminal after EOS or when the answer budget is used: the edge into it carries the
reward with discount 0. Nothing is ever expanded below a terminal node (the search backs up its
stored value instead). Without a reward (value-only search) the edge into a terminal node is
worth the network's value of the node it leaves, the state in which the final token was chosen.

Dimension letters: B batch, N tree nodes, K candidates, D max depth, T answer budget, V vocab,
Y layers, Hkv KV heads, E head width.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from tokenzero import model as model_lib
from tokenzero import vocab_ops
from tokenzero.config import ModelConfig, SearchConfig
from tokenzero.episode import Episode, mask_logits
from tokenzero.rewards import TokenReward

INVALID_LOGIT = -1e9  # finite: mctx subtracts maxima and would turn -inf into NaN.


class Nodes(NamedTuple):
  """Per-node data of the arena (the tree's embeddings)."""
  token: jax.Array  # [B, N] int32 token into the node (root: 0)
  depth: jax.Array  # [B, N] int32 tokens below the root
  terminal: jax.Array  # [B, N] bool
  candidates: jax.Array  # [B, N, K] int32 token ids of the node's actions
  path: jax.Array  # [B, N, D] int32 the node's ancestors below the root then itself, by depth
  k: jax.Array | None  # [B, N, Y, Hkv, E] the node's own token's keys (None: recompute)
  v: jax.Array | None  # [B, N, Y, Hkv, E]


class Expansion(NamedTuple):
  """What the network and the reward say about the new children, one per row."""
  prior_logits: jax.Array  # [B, K]
  value: jax.Array  # [B] 0 at a terminal node
  reward: jax.Array  # [B] reward of the edge into the child
  discount: jax.Array  # [B] 0 into a terminal node
  newly_terminal: jax.Array  # [B] bool: the child ends the answer (a reward call, if any)
  answer: jax.Array  # [B, T] the root's completion plus the path to the child
  answer_len: jax.Array  # [B] int32 its length
  token: jax.Array  # [B] int32
  depth: jax.Array  # [B] int32
  terminal: jax.Array  # [B] bool
  candidates: jax.Array  # [B, K]
  path: jax.Array  # [B, D]
  k: jax.Array | None  # [B, Y, Hkv, E]
  v: jax.Array | None  # [B, Y, Hkv, E]


def top_k(logits, allowed, k):
  """logits [B, V] -> (prior logits [B, K], ids [B, K], valid [B, K])."""
  values, ids = vocab_ops.top_k(mask_logits(logits, allowed), k)  # lax.top_k's, cheaper
  valid = jnp.isfinite(values)
  return jnp.where(valid, values, INVALID_LOGIT), ids.astype(jnp.int32), valid


def root_nodes(config: ModelConfig, search_config: SearchConfig, episode: Episode,
               candidates: jax.Array, num_nodes: int, depth: int) -> Nodes:
  """An empty arena of `num_nodes` with the root at index 0."""
  batch, num_actions = candidates.shape
  shape = (batch, num_nodes)
  if search_config.incremental:
    kv_shape = shape + (config.num_layers, config.kv_heads, config.dim_per_head)
    k = jnp.zeros(kv_shape, episode.cache.k.dtype)
    v = jnp.zeros(kv_shape, episode.cache.v.dtype)
  else:
    k = v = None
  return Nodes(
      token=jnp.zeros(shape, jnp.int32),
      depth=jnp.zeros(shape, jnp.int32),
      terminal=jnp.zeros(shape, bool).at[:, 0].set(episode.done),
      candidates=jnp.zeros(shape + (num_actions,), jnp.int32).at[:, 0].set(candidates),
      path=jnp.zeros(shape + (depth,), jnp.int32),
      k=k,
      v=v)


def _with_path(completion, num_generated, path_tokens, depth):
  """The root's completion with the path's first `depth` tokens appended. -> [B, T]."""
  steps = jnp.arange(completion.shape[1])[None, :] - num_generated[:, None]
  in_path = (steps >= 0) & (steps < depth[:, None])
  from_path = jnp.take_along_axis(path_tokens, jnp.clip(steps, 0, path_tokens.shape[1] - 1), 1)
  return jnp.where(in_path, from_path, completion)


def expand(params, config: ModelConfig, search_config: SearchConfig, episode: Episode,
           allowed: jax.Array, reward_fn: TokenReward | None, eos_id: int, nodes: Nodes,
           parent: jax.Array, action: jax.Array, parent_value: jax.Array,
           child: jax.Array) -> Expansion:
  """One forward per row: the child `child` [B] of node `parent` [B] by slot `action` [B].
  `parent_value` [B] is the parent's network value (what an answer ends on without a reward)."""
  rows = jnp.arange(parent.shape[0])
  at_parent = lambda x: x[rows, parent]
  depth = at_parent(nodes.depth)
  parent_path = at_parent(nodes.path)  # [B, D]
  token = at_parent(nodes.candidates)[rows, action]
  in_path = jnp.arange(parent_path.shape[1])[None, :] < depth[:, None]  # [B, D]
  path_tokens = jnp.where(in_path, nodes.token[rows[:, None], parent_path], 0)
  if search_config.incremental:
    # The ancestors' own KV, gathered by node index: the only per-path memory is this gather.
    gather = lambda x: jnp.moveaxis(x[rows[:, None], parent_path], 2, 0)  # [Y, B, D, Hkv, E]
    path = model_lib.KVSource(gather(nodes.k), gather(nodes.v), in_path)
    out, (k, v) = model_lib.extend(params, config, token, episode.cache.length + depth,
                                   [episode.cache.as_source(), path])
    k, v = jnp.moveaxis(k, 0, 1), jnp.moveaxis(v, 0, 1)  # [B, Y, Hkv, E]
  else:
    out = _recompute(params, config, episode, path_tokens, depth, token)
    k = v = None
  path_tokens = model_lib.write_slot(path_tokens, token, depth, axis=1)
  completion_len = jnp.minimum(episode.num_generated + depth + 1, episode.max_new_tokens)
  completion = _with_path(episode.completion, episode.num_generated, path_tokens, depth + 1)
  newly_terminal = (token == eos_id) | (completion_len >= episode.max_new_tokens)
  if reward_fn is None:
    reward = jnp.where(newly_terminal, parent_value, 0.0)
  else:
    reward = jnp.where(
        newly_terminal,
        reward_fn(episode.prompt, episode.prompt_len, completion, completion_len), 0.0)
  prior, candidates, _ = top_k(out.logits, allowed, nodes.candidates.shape[2])
  return Expansion(
      prior_logits=prior,
      value=jnp.where(newly_terminal, 0.0, out.value).astype(jnp.float32),
      reward=reward.astype(jnp.float32),
      discount=jnp.where(newly_terminal, 0.0, 1.0).astype(jnp.float32),
      newly_terminal=newly_terminal,
      answer=completion,
      answer_len=completion_len,
      token=token,
      depth=depth + 1,
      terminal=newly_terminal,
      candidates=candidates,
      path=model_lib.write_slot(parent_path, child, depth, axis=1),
      k=k,
      v=v)


def skip_expand(nodes: Nodes, parent: jax.Array, answer: jax.Array) -> Expansion:
  """What `expand` returns when no row has a node to expand: zeros, no forward run.
  `answer` [B, T]: any array of the answers' shape."""
  batch, _, num_actions = nodes.candidates.shape
  zeros = jnp.zeros((batch,), jnp.float32)
  no = jnp.zeros((batch,), bool)
  none = lambda x: None if x is None else jnp.zeros((batch,) + x.shape[2:], x.dtype)
  return Expansion(
      prior_logits=jnp.zeros((batch, num_actions), jnp.float32), value=zeros, reward=zeros,
      discount=zeros, newly_terminal=no, answer=answer,
      answer_len=jnp.zeros((batch,), jnp.int32), token=jnp.zeros((batch,), jnp.int32),
      depth=jnp.zeros((batch,), jnp.int32), terminal=no,
      candidates=jnp.zeros((batch, num_actions), jnp.int32),
      path=nodes.path[jnp.arange(batch), parent], k=none(nodes.k), v=none(nodes.v))


def _recompute(params, config, episode: Episode, path_tokens, depth, token):
  """Reference simulation: the whole sequence through the full forward, last logits taken."""
  rows = jnp.arange(token.shape[0])
  base = episode.cache.length
  slots = jnp.arange(episode.tokens.shape[1])[None, :] - base[:, None]
  in_path = (slots >= 0) & (slots < depth[:, None])
  from_path = jnp.take_along_axis(path_tokens, jnp.clip(slots, 0, path_tokens.shape[1] - 1), 1)
  tokens = jnp.where(in_path, from_path, episode.tokens)
  tokens = jnp.where(slots == depth[:, None], token[:, None], tokens)
  out = model_lib.forward(params, config, tokens)
  position = base + depth
  return model_lib.ModelOutput(out.logits[rows, position], out.value[rows, position])
