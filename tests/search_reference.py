"""Reference for tests: the search as it was before our own loop, through
`mctx.gumbel_muzero_policy` / `mctx.muzero_policy` with a recurrent_fn that carries the whole
path's KV per node. The new engine (`tokenzero.search`) must reproduce its root statistics.

An action appends a token. The actions of a node are slots over its top-K candidate tokens; the
candidate ids travel in the node's embedding, so no mctx array is sized by the vocabulary.

The network is an exact simulator (AlphaZero): a simulation runs ONE token through it. The
episode's KV cache (prompt + tokens decoded so far) is computed once, outside the tree, and
reaches `recurrent_fn` through mctx's `params`; a node carries only the KV of the tokens below
the root, `[D, Y, Hkv, E]` with D = max search depth. Bytes per node decide the speed, since
mctx gathers and scatters a node's embedding every simulation.

A node is terminal after EOS or when the answer budget is used: the edge into it carries the
reward with discount 0, and everything below a terminal node is worth 0. Without a reward
(value-only search) that edge is worth the network's value of the node it leaves: the state in
which the final token was chosen, as `ValueBeam` scores a finished beam. A value read after EOS
would be the value of a state the value head never trains on.

The search counts what it runs, per row (`SearchOutput.forward_tokens`, `reward_calls`): every
simulation runs the network once for every row, and a row whose root is live is billed for it,
below a terminal node too (the forward ran, useful or not); each completion the tree hands to the
reward (a row whose new node is newly terminal) is one reward call. The counts are added up in
mctx's simulation loop (`_Tally`), one simulation at a time.

Dimension letters: B batch, K candidates (actions), D max depth, T answer budget, V vocab,
Y layers, Hkv KV heads, E head width.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import mctx

from tokenzero import model as model_lib
from tokenzero.config import ModelConfig, SearchConfig
from tokenzero.episode import Episode, mask_logits
from tokenzero.rewards import TokenReward

_INVALID_LOGIT = -1e9  # finite: mctx subtracts maxima and would turn -inf into NaN.


class SearchOutput(NamedTuple):
  action: jax.Array  # [B] slot chosen by the search
  token: jax.Array  # [B] token id of that slot
  action_weights: jax.Array  # [B, K] search policy over the slots
  candidates: jax.Array  # [B, K] token ids of the slots
  valid: jax.Array  # [B, K] bool: slot holds an allowed token
  root_value: jax.Array  # [B] network value at the root
  search_value: jax.Array  # [B] value the search backed up to the root
  forward_tokens: jax.Array  # [B] int32 network evaluations run for the row (0: root was done)
  reward_calls: jax.Array  # [B] int32 completions of the row handed to the reward
  tree: mctx.Tree  # the search tree [B, N, ...], for inspection (dropped under jit if unused)


class _Node(NamedTuple):
  """mctx embedding of a node (mctx adds the leading tree dims)."""
  path_k: jax.Array | None  # [B, D, Y, Hkv, E] KV of the tokens below the root (None: recompute)
  path_v: jax.Array | None  # [B, D, Y, Hkv, E]
  path_tokens: jax.Array  # [B, D] tokens below the root, PAD after `depth`
  depth: jax.Array  # [B] int32 tokens below the root
  candidates: jax.Array  # [B, K] token ids of this node's actions
  terminal: jax.Array  # [B] bool
  value: jax.Array | None  # [B] network value here (value-only search; None: the reward's)


class _Context(NamedTuple):
  """What every simulation reads but never copies: it travels as mctx `params`."""
  params: object
  episode: Episode
  allowed: jax.Array  # [V] bool


class _Cost(NamedTuple):
  """What simulations ran, per row."""
  forward_tokens: jax.Array  # [B] int32 network evaluations for a live root
  reward_calls: jax.Array  # [B] int32 completions scored by the reward


class _Tally:
  """Adds up what each simulation ran, per row, inside mctx's simulation loop.

  mctx runs one simulation per iteration of its `loop_fn`, and each simulation calls the
  recurrent_fn once for every row. A recurrent_fn can only return a node, so `recurrent_fn`
  leaves the simulation's `_Cost` here and `loop_fn`, tracing the same iteration, moves it
  into the loop's carry: the count is of the simulations that ran, not a formula.
  """

  def __init__(self, recurrent_fn, batch: int, scores: bool):
    self._recurrent_fn = recurrent_fn
    self._scores = scores  # the tree calls the reward at newly terminal nodes
    self._pending: list[_Cost] = []
    self._zero = _Cost(jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), jnp.int32))
    self.total: _Cost | None = None

  def recurrent_fn(self, context: _Context, rng, action, node: _Node):
    step, child = self._recurrent_fn(context, rng, action, node)
    live = ~context.episode.done
    # A done root's nodes are all terminal, so it never scores; the forward still ran for it
    # (batched) but bills no one.
    scored = child.terminal & ~node.terminal & self._scores
    self._pending.append(_Cost(live.astype(jnp.int32), scored.astype(jnp.int32)))
    return step, child

  def loop_fn(self, lower, upper, body_fun, init):
    def body(index, carry):
      state, total = carry
      state = body_fun(index, state)
      cost = self._pending.pop()
      return state, _Cost(*(a + b for a, b in zip(total, cost)))

    state, self.total = jax.lax.fori_loop(lower, upper, body, (init, self._zero))
    return state


DEFAULT_TOP_K = 16  # candidates per node when `search.top_k` is 0.


def num_candidates(search_config: SearchConfig, vocab_size: int) -> int:
  return min(search_config.top_k or DEFAULT_TOP_K, vocab_size)


def search_depth(search_config: SearchConfig, max_new_tokens: int) -> int:
  return min(search_config.max_depth or max_new_tokens, max_new_tokens)


def _top_k(logits, allowed, k):
  """logits [B, V] -> (prior logits [B, K], ids [B, K], valid [B, K])."""
  values, ids = jax.lax.top_k(mask_logits(logits, allowed), k)
  valid = jnp.isfinite(values)
  return jnp.where(valid, values, _INVALID_LOGIT), ids.astype(jnp.int32), valid


def _with_path(completion, num_generated, path_tokens, depth):
  """The root's completion with the path's first `depth` tokens appended. -> [B, T]."""
  steps = jnp.arange(completion.shape[1])[None, :] - num_generated[:, None]
  in_path = (steps >= 0) & (steps < depth[:, None])
  from_path = jnp.take_along_axis(path_tokens, jnp.clip(steps, 0, path_tokens.shape[1] - 1), 1)
  return jnp.where(in_path, from_path, completion)


def _write(buffer, values, index):
  """buffer[b, index[b]] = values[b] for a [B, D, ...] buffer."""
  return model_lib.write_slot(buffer, values, index, axis=1)


def make_recurrent_fn(config: ModelConfig, search_config: SearchConfig,
                      reward_fn: TokenReward | None, eos_id: int):
  """mctx recurrent_fn: expand one child per batch row with a single-token forward. Without
  `reward_fn`, an answer's end is worth the value of the node it was chosen in."""
  def recurrent_fn(context: _Context, rng, action, node: _Node):
    del rng  # the network is deterministic.
    episode = context.episode
    token = jnp.take_along_axis(node.candidates, action[:, None], axis=1)[:, 0]
    depth = node.depth
    position = episode.cache.length + depth
    if search_config.incremental:
      path_mask = jnp.arange(node.path_tokens.shape[1])[None, :] < depth[:, None]
      path = model_lib.KVSource(jnp.moveaxis(node.path_k, 2, 0), jnp.moveaxis(node.path_v, 2, 0),
                                path_mask)
      out, (new_k, new_v) = model_lib.extend(
          context.params, config, token, position, [episode.cache.as_source(), path])
      path_k = _write(node.path_k, jnp.moveaxis(new_k, 0, 1), depth)
      path_v = _write(node.path_v, jnp.moveaxis(new_v, 0, 1), depth)
    else:
      out = _recompute(context.params, config, episode, node.path_tokens, depth, token)
      path_k = path_v = None
    path_tokens = _write(node.path_tokens, token, depth)
    # Below a terminal node the count runs past the budget; those rewards are never used.
    completion_len = jnp.minimum(episode.num_generated + depth + 1, episode.max_new_tokens)
    completion = _with_path(episode.completion, episode.num_generated, path_tokens, depth + 1)
    ends = (token == eos_id) | (completion_len >= episode.max_new_tokens)
    newly_terminal = ~node.terminal & ends
    if reward_fn is None:
      reward = jnp.where(newly_terminal, node.value, 0.0)
    else:
      reward = jnp.where(
          newly_terminal,
          reward_fn(episode.prompt, episode.prompt_len, completion, completion_len), 0.0)
    terminal = node.terminal | ends
    prior, candidates, _ = _top_k(out.logits, context.allowed, node.candidates.shape[1])
    step = mctx.RecurrentFnOutput(
        reward=reward.astype(jnp.float32),
        discount=jnp.where(terminal, 0.0, 1.0).astype(jnp.float32),
        prior_logits=prior,
        value=jnp.where(terminal, 0.0, out.value).astype(jnp.float32))
    value = None if node.value is None else out.value.astype(jnp.float32)
    return step, _Node(path_k, path_v, path_tokens, depth + 1, candidates, terminal, value)

  return recurrent_fn


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


def run_search(params, config: ModelConfig, search_config: SearchConfig, episode: Episode,
               rng: jax.Array, *, reward_fn: TokenReward | None, allowed: jax.Array,
               eos_id: int) -> SearchOutput:
  """Searches from each row's current end. Jit the caller; every argument but the configs,
  `reward_fn` and `eos_id` is an array. `reward_fn=None` is value-only search: the tree never
  calls a reward, and an answer is worth the value of the state its last token was chosen in."""
  batch = episode.prompt.shape[0]
  num_actions = num_candidates(search_config, config.vocab_size)
  depth = search_depth(search_config, episode.max_new_tokens)
  prior, candidates, valid = _top_k(episode.logits, allowed, num_actions)
  if search_config.incremental:
    kv_shape = (batch, depth, config.num_layers, config.kv_heads, config.dim_per_head)
    kv_dtype = episode.cache.k.dtype
    path_k, path_v = jnp.zeros(kv_shape, kv_dtype), jnp.zeros(kv_shape, kv_dtype)
  else:
    path_k = path_v = None
  root_node = _Node(
      path_k=path_k,
      path_v=path_v,
      path_tokens=jnp.zeros((batch, depth), jnp.int32),
      depth=jnp.zeros((batch,), jnp.int32),
      candidates=candidates,
      terminal=episode.done,
      value=episode.value.astype(jnp.float32) if reward_fn is None else None)
  root = mctx.RootFnOutput(prior_logits=prior, value=episode.value.astype(jnp.float32),
                           embedding=root_node)
  context = _Context(params, episode, allowed)
  tally = _Tally(make_recurrent_fn(config, search_config, reward_fn, eos_id), batch,
                 scores=reward_fn is not None)
  recurrent_fn = tally.recurrent_fn
  common = dict(num_simulations=search_config.num_simulations, invalid_actions=~valid,
                max_depth=depth, loop_fn=tally.loop_fn)
  if search_config.algorithm == "gumbel":
    out = mctx.gumbel_muzero_policy(
        context, rng, root, recurrent_fn, **common,
        max_num_considered_actions=search_config.max_num_considered_actions,
        gumbel_scale=search_config.gumbel_scale,
        qtransform=functools.partial(
            mctx.qtransform_completed_by_mix_value,
            value_scale=search_config.value_scale,
            maxvisit_init=search_config.maxvisit_init,
            rescale_values=search_config.rescale_values))
  elif search_config.algorithm == "puct":
    out = mctx.muzero_policy(
        context, rng, root, recurrent_fn, **common,
        dirichlet_fraction=search_config.dirichlet_fraction,
        dirichlet_alpha=search_config.dirichlet_alpha,
        pb_c_init=search_config.pb_c_init,
        pb_c_base=search_config.pb_c_base)
  else:
    raise ValueError(f"search.algorithm must be 'gumbel' or 'puct', got "
                     f"{search_config.algorithm!r}")
  search_value = out.search_tree.node_values[:, out.search_tree.ROOT_INDEX]
  token = jnp.take_along_axis(candidates, out.action[:, None], axis=1)[:, 0]
  return SearchOutput(
      action=out.action,
      token=token,
      action_weights=out.action_weights,
      candidates=candidates,
      valid=valid,
      root_value=episode.value,
      search_value=search_value,
      forward_tokens=tally.total.forward_tokens,
      reward_calls=tally.total.reward_calls,
      tree=out.search_tree)
