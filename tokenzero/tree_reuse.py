"""One tree per answer: the committed child becomes the next step's root, its subtree kept.

`reroot` compacts the committed child's subtree to the front of the arena (the child at index 0),
renumbering parents, children and paths, and frees the rest. Nodes are allocated after their
parents, so keeping the oldest nodes of the subtree keeps a tree; it keeps at most `max_nodes`
minus a step's most simulations of them, so the next step always has room for its simulations. An
edge whose child was dropped is reset to unvisited (its visits leave the parent's count as they
were: the parent's value keeps what they found).

`advance` appends the committed token to the episode. When the child is in the tree its forward
already ran (its own KV, value and top-K prior are the node's), so the episode takes them and no
forward runs; only rows whose token is not in the tree (an exploratory pick, a full arena, or the
recompute reference, whose nodes hold no KV) run one, and only those are billed.

Dimension letters: B batch, N tree nodes, K candidates, D max depth, V vocab, Y layers,
Hkv KV heads, E head width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tokenzero import episode as episode_lib
from tokenzero import model as model_lib
from tokenzero import search as search_lib
from tokenzero.config import ModelConfig, SearchConfig
from tokenzero.episode import Episode

ROOT, UNVISITED, NO_PARENT = search_lib.ROOT, search_lib.UNVISITED, -1


def _reroot_one(tree, num_nodes, action, keep_max):
  """One row (unbatched tree) -> (tree rooted at the child by `action`, nodes kept)."""
  size = tree.node_visits.shape[0]
  index = jnp.arange(size)
  nodes = tree.embeddings
  child = tree.children_index[ROOT, action]
  # path[:, 0] is a node's ancestor at depth 1 (itself at depth 1): the subtree it belongs to.
  under = (child > ROOT) & (index < num_nodes) & (nodes.depth >= 1) & (nodes.path[:, 0] == child)
  rank = jnp.cumsum(under) - 1
  keep = under & (rank < keep_max)
  count = jnp.sum(keep).astype(jnp.int32)
  new_index = jnp.where(keep, rank, UNVISITED)
  order = jnp.argsort(jnp.where(keep, index, size + index))  # kept first, in arena order
  used = index < count
  renumber = lambda i: jnp.where(i >= 0, new_index[jnp.maximum(i, 0)], i)

  def take(x, fill):
    x = x[order]
    return jnp.where(used.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.asarray(fill, x.dtype))

  children = take(tree.children_index, UNVISITED)
  kept_edge = renumber(children) >= 0
  dropped = (children >= 0) & ~kept_edge  # the edge's child was not kept: unvisited again
  edge = lambda x: jnp.where(dropped, jnp.zeros_like(x), take(x, 0))
  path = take(nodes.path, 0)
  path = jnp.concatenate([path[:, 1:], jnp.zeros_like(path[:, :1])], axis=1)
  nodes = nodes._replace(
      token=take(nodes.token, 0), depth=jnp.maximum(take(nodes.depth, 1) - 1, 0),
      terminal=take(nodes.terminal, False), candidates=take(nodes.candidates, 0),
      path=jnp.maximum(renumber(path), 0),
      k=None if nodes.k is None else take(nodes.k, 0),
      v=None if nodes.v is None else take(nodes.v, 0))
  tree = tree.replace(
      node_visits=take(tree.node_visits, 0), raw_values=take(tree.raw_values, 0),
      node_values=take(tree.node_values, 0),
      parents=jnp.where(used & (index > ROOT), renumber(take(tree.parents, NO_PARENT)),
                        NO_PARENT),
      action_from_parent=jnp.where(used & (index > ROOT), take(tree.action_from_parent, 0),
                                   NO_PARENT),
      children_index=jnp.where(kept_edge, renumber(children), UNVISITED),
      children_prior_logits=take(tree.children_prior_logits, 0),
      children_values=edge(tree.children_values), children_visits=edge(tree.children_visits),
      children_rewards=edge(tree.children_rewards),
      children_discounts=edge(tree.children_discounts), embeddings=nodes)
  return tree, count


def reroot(search_config: SearchConfig, out: search_lib.SearchOutput,
           slot: jax.Array) -> tuple[search_lib.KeptTree, jax.Array]:
  """The search's tree re-rooted at the child of slot `slot` [B] -> (KeptTree, fraction of the
  tree's nodes kept [B]). A row whose child was never expanded keeps nothing (`reused` False)."""
  size = out.tree.node_visits.shape[1]
  keep_max = max(1, size - search_lib.step_simulations(search_config))
  tree, count = jax.vmap(_reroot_one, in_axes=(0, 0, 0, None))(out.tree, out.num_nodes, slot,
                                                               keep_max)
  kept = search_lib.KeptTree(tree=tree, num_nodes=jnp.maximum(count, 1), reused=count > 0)
  return kept, count / out.num_nodes


def advance(params, config: ModelConfig, search_config: SearchConfig, episode: Episode,
            out: search_lib.SearchOutput, slot: jax.Array, eos_id: int
            ) -> tuple[Episode, jax.Array]:
  """Appends the token of slot `slot` [B] -> (episode, [B] bool: the row ran a forward for it).
  A token whose node the search expanded takes the node's KV, value and prior: no forward."""
  rows = jnp.arange(slot.shape[0])
  token = out.candidates[rows, slot]
  child = out.tree.children_index[rows, ROOT, slot]
  nodes = out.tree.embeddings
  in_tree = child > ROOT
  if not search_config.incremental:  # the reference's nodes hold no KV: always run it
    in_tree = jnp.zeros_like(in_tree)
  live = ~episode.done
  need = live & ~in_tree
  at = jnp.maximum(child, 0)
  # The node's top-K prior as next-token logits: enough for the next root (which, kept, reads
  # its candidates from the tree anyway); every other token is out of reach.
  prior = out.tree.children_prior_logits[rows, at]
  prior = jnp.where(prior > -1e8, prior, -jnp.inf)
  logits = jnp.full(episode.logits.shape, -jnp.inf, episode.logits.dtype)
  logits = logits.at[rows[:, None], nodes.candidates[rows, at]].set(prior.astype(logits.dtype))
  value = out.tree.raw_values[rows, at].astype(episode.value.dtype)
  cache_shape = episode.cache.k.shape  # [Y, B, L, Hkv, E]
  kv_shape = (cache_shape[0], cache_shape[1]) + cache_shape[3:]
  if nodes.k is None:
    k = v = jnp.zeros(kv_shape, episode.cache.k.dtype)
  else:
    k, v = (jnp.moveaxis(x[rows, at], 1, 0).astype(episode.cache.k.dtype)
            for x in (nodes.k, nodes.v))

  def run():
    out, (k, v) = model_lib.extend(params, config, token, episode.cache.length,
                                   [episode.cache.as_source()])
    return out.logits.astype(logits.dtype), out.value.astype(value.dtype), k, v

  ran = jax.lax.cond(jnp.any(need), run, lambda: (logits, value, k, v))
  logits = jnp.where(in_tree[:, None], logits, ran[0])
  value = jnp.where(in_tree, value, ran[1])
  k = jnp.where(in_tree[None, :, None, None], k, ran[2])
  v = jnp.where(in_tree[None, :, None, None], v, ran[3])
  return episode_lib.append(episode, token, logits, value, k, v, eos_id), need
