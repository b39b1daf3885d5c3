"""Walking and writing the search tree (an `mctx.Tree`, unbatched per row unless said): select
from the root to a new action or a known leaf, write an expanded child, back a value up. The
arithmetic is mctx's own (`simulate`, `expand`, `backward`), so that the same selections give the
same floats; the loop that calls these is `search.run_search`.

Dimension letters: B batch, N tree nodes, K candidates.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from tokenzero import tree_nodes

# mctx.Tree.ROOT_INDEX and mctx.Tree.UNVISITED (tests/test_search_engine.py holds them equal):
# this module only reads and writes the tree's arrays, so it does not import mctx.
ROOT = 0
UNVISITED = -1


def select_one(key, tree, select_fn, max_depth: int):
  """One row (unbatched tree): from the root down to a new action or a known leaf. The keys
  split as in mctx's `simulate`, so that selections that use them match it."""
  def body(state):
    key, _, _, node, depth, _ = state
    key, select_key = jax.random.split(key)
    action = select_fn(select_key, tree, node, depth)
    child = tree.children_index[node, action]
    depth = depth + 1
    known = child != UNVISITED
    go_on = known & (depth < max_depth) & ~tree.embeddings.terminal[jnp.maximum(child, 0)]
    return key, node, action, child, depth, go_on

  root_live = ~tree.embeddings.terminal[ROOT]
  init = (key, jnp.int32(-1), jnp.int32(-1), jnp.int32(ROOT), jnp.int32(0), root_live)
  _, parent, action, leaf, _, _ = jax.lax.while_loop(lambda s: s[-1], body, init)
  return parent, action, leaf


def backward_one(tree, leaf, active) -> Any:
  """One row: mctx's backup from `leaf` to the root (the same arithmetic, so the same floats);
  nothing when not `active`."""
  def body(state):
    tree, leaf_value, index = state
    parent = tree.parents[index]
    count = tree.node_visits[parent]
    action = tree.action_from_parent[index]
    reward = tree.children_rewards[parent, action]
    leaf_value = reward + tree.children_discounts[parent, action] * leaf_value
    parent_value = (tree.node_values[parent] * count + leaf_value) / (count + 1.0)
    tree = tree.replace(
        node_values=tree.node_values.at[parent].set(parent_value),
        node_visits=tree.node_visits.at[parent].set(count + 1),
        children_values=tree.children_values.at[parent, action].set(tree.node_values[index]),
        children_visits=tree.children_visits.at[parent, action].add(1))
    return tree, leaf_value, parent

  start = jnp.where(active, leaf, ROOT).astype(jnp.int32)
  tree, _, _ = jax.lax.while_loop(lambda s: s[2] != ROOT, body,
                                  (tree, tree.node_values[start], start))
  return tree


def visit_known(tree, leaf, active) -> Any:
  """A simulation that ended at a known node (terminal, or at the depth limit) counts a visit
  there and backs up its stored value: what mctx's re-expansion of it would leave."""
  rows = jnp.arange(leaf.shape[0])
  visits = tree.node_visits.at[rows, jnp.where(active, leaf, tree.node_visits.shape[1])].add(
      1, mode="drop")
  return jax.vmap(backward_one)(tree.replace(node_visits=visits), leaf, active)


def add_child(tree, parent, action, child, new: tree_nodes.Expansion, write):
  """Writes the expanded child into the arena (rows where `write`), as mctx's `expand`."""
  rows = jnp.arange(parent.shape[0])
  size = tree.node_visits.shape[1]
  child = jnp.where(write, child, size)  # out of range: dropped
  parent_at = jnp.where(write, parent, size)
  set_node = lambda x, v: x.at[rows, child].set(v.astype(x.dtype), mode="drop")
  set_edge = lambda x, v: x.at[rows, parent_at, action].set(v.astype(x.dtype), mode="drop")
  nodes = tree.embeddings
  nodes = tree_nodes.Nodes(
      token=set_node(nodes.token, new.token), depth=set_node(nodes.depth, new.depth),
      terminal=set_node(nodes.terminal, new.terminal),
      candidates=set_node(nodes.candidates, new.candidates), path=set_node(nodes.path, new.path),
      k=None if nodes.k is None else set_node(nodes.k, new.k),
      v=None if nodes.v is None else set_node(nodes.v, new.v))
  return tree.replace(
      children_prior_logits=set_node(tree.children_prior_logits, new.prior_logits),
      raw_values=set_node(tree.raw_values, new.value),
      node_values=set_node(tree.node_values, new.value),
      node_visits=set_node(tree.node_visits, jnp.ones_like(parent)),
      embeddings=nodes,
      children_index=set_edge(tree.children_index, child),
      children_rewards=set_edge(tree.children_rewards, new.reward),
      children_discounts=set_edge(tree.children_discounts, new.discount),
      parents=set_node(tree.parents, parent),
      action_from_parent=set_node(tree.action_from_parent, action))
