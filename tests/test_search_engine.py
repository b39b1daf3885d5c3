"""Our search loop against mctx's own policies (tests/search_reference.py runs them): same root
visit counts, action weights, chosen action and root value; and no forward below a terminal."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import search_reference
from tokenzero import episode as episode_lib, prompts, search as search_lib, tree_nodes, tree_walk
from tokenzero import model as model_lib
from tokenzero.config import SearchConfig
from tokenzero.tokenizer import answer_mask

B = 4


@pytest.fixture(scope="module")
def batch(sort_task):
  texts = sort_task.sample(np.random.default_rng(5), B)
  return prompts.encode_batch(sort_task.tokenizer, texts, sort_task.prompt_len)


def _allowed(task):
  return jnp.asarray(answer_mask(task.tokenizer, task.tokenizer.vocab_size))


def _search(module, params, config, task, batch, search_config, reward_fn, key, prefix):
  """One search per key: `key` [] or [seeds] (then every output gains a leading seed axis; the
  seeds share one compilation, and each runs alone so that its floats are a lone search's)."""
  eos = task.tokenizer.eos_id

  def f(params, tokens, lengths, key):
    state = episode_lib.start(params, config, tokens, lengths, task.max_new_tokens)
    for token in prefix:
      state = episode_lib.step(params, config, state, jnp.asarray(token), eos)
    return module.run_search(params, config, search_config, state, key, reward_fn=reward_fn,
                             allowed=_allowed(task), eos_id=eos)

  f = jax.jit(f)
  if not key.ndim:
    return f(params, batch.tokens, batch.lengths, key)
  outs = [f(params, batch.tokens, batch.lengths, one) for one in key]
  return jax.tree.map(lambda *xs: np.stack(xs), *outs)


# Prefixes: from the start; two tokens in (row 0 has ended with EOS, so its root is terminal);
# one token before the end, where most simulations reach terminal nodes.
_PREFIXES = {"start": (), "eos_row": ([2, 4, 5, 6], [4, 4, 4, 4]), "last": ([4] * B,) * 3}


SEEDS = 3


# Each starting state and each reward once, over both algorithms (each case compiles both engines).
@pytest.mark.parametrize("algorithm,reward,prefix", [
    ("gumbel", "tree", "start"), ("gumbel", "tree", "last"), ("puct", "value", "eos_row"),
    ("puct", "tree", "last")])
def test_engine_equals_mctx_policy(tiny_params, tiny_config, sort_task, batch, algorithm, reward,
                                   prefix):
  search_config = SearchConfig(algorithm=algorithm, num_simulations=16, top_k=6)
  reward_fn = sort_task.jax_reward() if reward == "tree" else None
  args = (tiny_params, tiny_config, sort_task, batch, search_config, reward_fn,
          jax.random.split(jax.random.key(0), SEEDS), _PREFIXES[prefix])
  ours = _search(search_lib, *args)
  theirs = _search(search_reference, *args)
  live = ~np.asarray(ours.tree.embeddings.terminal[..., 0])  # a done row is never played
  assert live.sum() >= SEEDS * (B - 1)
  np.testing.assert_array_equal(ours.candidates, theirs.candidates)
  np.testing.assert_array_equal(ours.tree.children_visits[..., 0, :][live],
                                theirs.tree.children_visits[..., 0, :][live])
  np.testing.assert_allclose(ours.action_weights[live], theirs.action_weights[live], atol=1e-6)
  np.testing.assert_array_equal(ours.action[live], theirs.action[live])
  np.testing.assert_allclose(ours.search_value[live], theirs.search_value[live], atol=1e-6)
  # The search ran fewer forwards than mctx wherever simulations reached known nodes.
  assert np.all(np.asarray(ours.forward_tokens) <= np.asarray(theirs.forward_tokens))
  if prefix == "last":
    assert np.all(np.asarray(ours.forward_tokens)[live] <= search_config.top_k)


# PUCT's incremental == recompute is held by test_search.py at a deeper root.
@pytest.mark.parametrize("algorithm", ["gumbel"])
def test_one_token_of_kv_per_node_equals_recompute(tiny_params, tiny_config, sort_task, batch,
                                                   algorithm):
  outs = [_search(search_lib, tiny_params, tiny_config, sort_task, batch,
                  SearchConfig(algorithm=algorithm, num_simulations=12, top_k=6,
                               incremental=incremental, terminal_reselect=2),
                  sort_task.jax_reward(), jax.random.key(4), ([5] * B,))
          for incremental in (True, False)]
  fast, slow = outs
  assert fast.tree.embeddings.k.shape == (B, 25, tiny_config.num_layers, tiny_config.kv_heads,
                                          tiny_config.dim_per_head)
  np.testing.assert_array_equal(fast.action, slow.action)
  np.testing.assert_array_equal(fast.tree.children_visits, slow.tree.children_visits)
  np.testing.assert_allclose(fast.action_weights, slow.action_weights, atol=1e-5)
  np.testing.assert_allclose(fast.search_value, slow.search_value, atol=1e-5)


@pytest.mark.parametrize("reselect", [0, 3])
def test_no_forward_below_a_terminal(tiny_params, tiny_config, sort_task, batch, monkeypatch,
                                     reselect):
  """Network calls counted on the host as they run: one batched forward per simulation in which
  some row expands a new node, none for simulations that all end at known nodes; each row is
  billed for the nodes it expanded, and no node lies below a terminal one."""
  calls = []
  real_extend = model_lib.extend

  def counted_extend(*args, **kwargs):
    out = real_extend(*args, **kwargs)
    jax.debug.callback(lambda: calls.append(1))
    return out

  monkeypatch.setattr(tree_nodes, "model_lib",
                      types.SimpleNamespace(**dict(vars(model_lib), extend=counted_extend)))
  search_config = SearchConfig(num_simulations=24, top_k=4, terminal_reselect=reselect)
  # One token before the end: at most K new nodes per row, all terminal.
  out = _search(search_lib, tiny_params, tiny_config, sort_task, batch, search_config,
                sort_task.jax_reward(), jax.random.key(3), ([4] * B,) * 3)
  jax.effects_barrier()
  tree = jax.tree.map(np.asarray, out.tree)
  nodes = (tree.node_visits > 0).sum(axis=1) - 1
  np.testing.assert_array_equal(out.forward_tokens, nodes)
  np.testing.assert_array_equal(out.reward_calls, nodes)  # every new node ends the answer
  assert len(calls) == nodes.max() <= search_config.top_k < search_config.num_simulations
  below = tree.parents >= 0
  parent_terminal = np.take_along_axis(tree.embeddings.terminal, np.maximum(tree.parents, 0), 1)
  assert not np.any(below & parent_terminal)
  # Every selection visits the root: known terminal values are backed up. Here each new node is
  # found by its simulation's first selection (sequential halving tries every child once
  # first), which ends that simulation's reselection.
  np.testing.assert_array_equal(tree.children_visits[:, 0].sum(-1),
                                search_config.num_simulations * (reselect + 1) - reselect * nodes)


def test_a_full_arena_ends_the_rows_search(tiny_params, tiny_config, sort_task, batch):
  """`search.max_nodes` below num_simulations + 1: a row stops expanding when its arena is full
  (no forward billed after that), and the root's statistics stay a valid search policy."""
  search_config = SearchConfig(num_simulations=12, top_k=4, max_nodes=5)
  out = _search(search_lib, tiny_params, tiny_config, sort_task, batch, search_config,
                sort_task.jax_reward(), jax.random.key(6), ())
  tree = jax.tree.map(np.asarray, out.tree)
  assert tree.node_visits.shape[1] == 5
  np.testing.assert_array_equal(out.forward_tokens, 4)
  assert np.all(tree.node_visits > 0)  # every node allocated, none written out of range
  np.testing.assert_allclose(np.asarray(out.action_weights).sum(-1), 1.0, atol=1e-5)
  # Root visits: the 4 expansions plus any returns to a known terminal child before the arena
  # filled; none after.
  root_visits = tree.children_visits[:, 0].sum(-1)
  assert np.all((root_visits >= 4) & (root_visits < search_config.num_simulations))


def test_the_tree_walk_uses_mctx_tree_indices():
  """tree_walk reads the tree without importing mctx: its root and unvisited markers are mctx's."""
  import mctx
  assert (tree_walk.ROOT, tree_walk.UNVISITED) == (mctx.Tree.ROOT_INDEX, mctx.Tree.UNVISITED)
