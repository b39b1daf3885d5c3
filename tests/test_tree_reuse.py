"""One tree per answer (`tokenzero.tree_reuse`): a re-rooted tree keeps the committed child's
subtree with its statistics, playing an expanded token equals running its forward, and the next
step's root selection halves on its own visits."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenzero import episode as episode_lib, prompts, search as search_lib, tree_reuse
from tokenzero.config import SearchConfig
from tokenzero.tokenizer import answer_mask

B = 4
# One compilation of `_first_step` serves the reroot and the playing tests (memoised below).
REROOT_CONFIG = SearchConfig(num_simulations=12, top_k=3, max_nodes=14, gumbel_scale=0.0)


@pytest.fixture(scope="module")
def batch(sort_task):
  texts = sort_task.sample(np.random.default_rng(7), B)
  return prompts.encode_batch(sort_task.tokenizer, texts, sort_task.prompt_len)


_RUNS = {}  # (search_config, seed, next_config) -> outputs: the fixtures are session-wide


def _first_step(params, config, task, batch, search_config, seed, next_config=None):
  """One search from the start, its re-rooted tree, the episode after playing its action, and
  the next step's search (with `next_config`, same arena) on the kept tree."""
  if (search_config, seed, next_config) in _RUNS:
    return _RUNS[search_config, seed, next_config]
  allowed = jnp.asarray(answer_mask(task.tokenizer, task.tokenizer.vocab_size))
  eos = task.tokenizer.eos_id

  @jax.jit
  def f(params, tokens, lengths, key):
    state = episode_lib.start(params, config, tokens, lengths, task.max_new_tokens)
    out = search_lib.run_search(params, config, search_config, state, key,
                                reward_fn=task.jax_reward(), allowed=allowed, eos_id=eos)
    kept, fraction = tree_reuse.reroot(search_config, out, out.action)
    played, ran = tree_reuse.advance(params, config, search_config, state, out, out.action, eos)
    stepped = episode_lib.step(params, config, state, out.token, eos)
    again = search_lib.run_search(params, config, next_config or search_config, played, key,
                                  reward_fn=task.jax_reward(), allowed=allowed, eos_id=eos,
                                  kept=kept)
    return out, kept, fraction, played, ran, stepped, again

  out = jax.tree.map(np.asarray, f(params, batch.tokens, batch.lengths, jax.random.key(seed)))
  _RUNS[search_config, seed, next_config] = out
  return out


def _stats_by_token_path(tree, row, root, num_nodes):
  """{tuple of tokens below `root`: (visits, value, raw value, child visits)} over its subtree."""
  out = {}
  for node in range(num_nodes):
    tokens, at = [], node
    while at not in (root, -1) and at != 0:
      tokens.append(int(tree.embeddings.token[row, at]))
      at = int(tree.parents[row, at])
    if at == root or node == root:
      out[tuple(reversed(tokens))] = (
          int(tree.node_visits[row, node]), float(tree.node_values[row, node]),
          float(tree.raw_values[row, node]), tuple(tree.children_visits[row, node]))
  return out


def _check_structure(tree, count):
  """Parents before children, edges and parents agree, depths and paths consistent."""
  for row in range(tree.parents.shape[0]):
    assert tree.parents[row, 0] == -1 and tree.embeddings.depth[row, 0] == 0
    for node in range(1, count[row]):
      parent, action = tree.parents[row, node], tree.action_from_parent[row, node]
      assert 0 <= parent < node
      assert tree.children_index[row, parent, action] == node
      depth = tree.embeddings.depth[row, node]
      assert depth == tree.embeddings.depth[row, parent] + 1
      assert tree.embeddings.path[row, node, depth - 1] == node
    assert np.all(tree.children_index[row] < count[row])
    assert np.all(tree.node_visits[row, count[row]:] == 0)


@pytest.mark.parametrize("algorithm,max_nodes", [("gumbel", 14)])
def test_reroot_keeps_the_subtree_with_its_statistics(tiny_params, tiny_config, sort_task, batch,
                                                      algorithm, max_nodes):
  search_config = dataclasses.replace(REROOT_CONFIG, algorithm=algorithm, max_nodes=max_nodes)
  out, kept, fraction, *_ = _first_step(tiny_params, tiny_config, sort_task, batch,
                                        search_config, 2)
  keep_max = search_lib.num_nodes(search_config) - search_config.num_simulations
  count = kept.num_nodes
  for row in range(B):
    child = out.tree.children_index[row, 0, out.action[row]]
    assert child > 0 and kept.reused[row]
    before = _stats_by_token_path(out.tree, row, child, out.num_nodes[row])
    after = _stats_by_token_path(kept.tree, row, 0, count[row])
    assert count[row] == min(len(before), keep_max)
    assert fraction[row] == pytest.approx(count[row] / out.num_nodes[row])
    # Every kept node has the statistics it had; edges into dropped nodes are unvisited again.
    for path, (visits, value, raw, _) in after.items():
      assert before[path][:3] == pytest.approx((visits, value, raw), abs=1e-6)
    root_before = before[()]
    kept_edges = kept.tree.children_index[row, 0] >= 0
    np.testing.assert_array_equal(np.asarray(root_before[3])[kept_edges],
                                  kept.tree.children_visits[row, 0][kept_edges])
    if count[row] == len(before):  # nothing dropped: the whole subtree, unchanged
      assert after == pytest.approx(before)
  _check_structure(kept.tree, count)


def test_playing_an_expanded_token_equals_its_forward(tiny_params, tiny_config, sort_task, batch):
  """The node's KV, value and top-K prior stand for `episode.step`'s forward: no forward ran."""
  out, _, _, played, ran, stepped, _ = _first_step(tiny_params, tiny_config, sort_task, batch,
                                                   REROOT_CONFIG, 2)
  assert not ran.any()
  np.testing.assert_allclose(played.cache.k, stepped.cache.k, atol=1e-5)
  np.testing.assert_allclose(played.cache.v, stepped.cache.v, atol=1e-5)
  np.testing.assert_allclose(played.value, stepped.value, atol=1e-5)
  for name in ("tokens", "completion", "num_generated", "done"):
    np.testing.assert_array_equal(getattr(played, name), getattr(stepped, name))
  allowed = answer_mask(sort_task.tokenizer, sort_task.tokenizer.vocab_size)
  k = REROOT_CONFIG.top_k
  top = np.argsort(-np.where(allowed, stepped.logits, -np.inf), axis=1)[:, :k]
  np.testing.assert_array_equal(np.sort(np.argsort(-played.logits, axis=1)[:, :k]),
                                np.sort(top))


def test_a_reused_root_halves_on_this_steps_visits(tiny_params, tiny_config, sort_task, batch):
  """Sequential halving's first round visits each considered child once: with as many
  simulations as children, a reused root (which has visits already) gets one visit per child,
  as a fresh root would; Q and the target come from the full statistics."""
  search_config = SearchConfig(num_simulations=12, top_k=3, max_num_considered_actions=3,
                               max_nodes=20)
  _, kept, _, _, _, _, again = _first_step(
      tiny_params, tiny_config, sort_task, batch, search_config, 5,
      next_config=SearchConfig(num_simulations=3, top_k=3, max_num_considered_actions=3,
                               max_nodes=20))
  before = kept.tree.children_visits[:, 0]
  live = kept.reused & (before.sum(-1) > 0) & ~kept.tree.embeddings.terminal[:, 0]
  assert live.sum() >= 2
  step = again.tree.children_visits[:, 0] - before
  np.testing.assert_array_equal(step[live], 1)
  np.testing.assert_allclose(again.action_weights.sum(-1), 1.0, atol=1e-5)
