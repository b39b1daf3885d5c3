"""Search: KV-incremental == full-recompute reference, planted rewards are found, the tree is
never sized by the vocabulary, and the compute it reports is the compute it ran."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenzero import episode as episode_lib, model as model_lib, prompts, search as search_lib
from tokenzero import tree_nodes
from tokenzero.config import SearchConfig
from tokenzero.tokenizer import answer_mask

B = 4


@pytest.fixture(scope="module")
def batch(sort_task):
  texts = sort_task.sample(np.random.default_rng(0), B)
  return prompts.encode_batch(sort_task.tokenizer, texts, sort_task.prompt_len)


def _allowed(task):
  tok = task.tokenizer
  return jnp.asarray(answer_mask(tok, tok.vocab_size))


def _run(params, config, task, batch, search_config, reward_fn, key, *, prefix=(),
         max_new_tokens=None):
  max_new_tokens = max_new_tokens or task.max_new_tokens

  @jax.jit
  def f(params, tokens, lengths, key):
    state = episode_lib.start(params, config, tokens, lengths, max_new_tokens)
    for token in prefix:  # search from deeper in the answer, too
      state = episode_lib.step(params, config, state, jnp.full((B,), token), task.tokenizer.eos_id)
    out = search_lib.run_search(params, config, search_config, state, key, reward_fn=reward_fn,
                                allowed=_allowed(task), eos_id=task.tokenizer.eos_id)
    return out

  return f(params, batch.tokens, batch.lengths, key)


# Gumbel's incremental == recompute is held by test_search_engine.py (reuse, reselection).
@pytest.mark.parametrize("algorithm,prefix", [("puct", (4, 5))])
def test_incremental_search_equals_full_recompute(tiny_params, tiny_config, sort_task, batch,
                                                  algorithm, prefix):
  outs = [
      _run(tiny_params, tiny_config, sort_task, batch,
           SearchConfig(algorithm=algorithm, num_simulations=12, top_k=6, incremental=inc),
           sort_task.jax_reward(), jax.random.key(7), prefix=prefix)
      for inc in (True, False)
  ]
  fast, slow = outs
  np.testing.assert_array_equal(fast.action, slow.action)
  np.testing.assert_array_equal(fast.candidates, slow.candidates)
  np.testing.assert_allclose(fast.action_weights, slow.action_weights, atol=1e-5)
  np.testing.assert_allclose(fast.search_value, slow.search_value, atol=1e-5)


def _planted_reward(planted, partial=False):
  """Reward 1 only when the completion starts with the planted tokens; with `partial`, the
  fraction of them in place."""
  planted = jnp.asarray(planted)

  def reward(prompt, prompt_len, completion, completion_len):
    del prompt, prompt_len, completion_len
    hits = (completion[:, :planted.shape[0]] == planted).astype(jnp.float32)
    return jnp.mean(hits, axis=-1) if partial else jnp.min(hits, axis=-1)

  return reward


@pytest.mark.parametrize("algorithm,sims", [("gumbel", 32), ("puct", 64)])
def test_search_finds_planted_token(tiny_params, tiny_config, sort_task, batch, algorithm, sims):
  # The prior's least likely allowed first token is the only one that pays.
  state = episode_lib.start(tiny_params, tiny_config, batch.tokens, batch.lengths, 1)
  prior = episode_lib.mask_logits(state.logits, _allowed(sort_task))
  planted = int(jnp.argmin(jnp.where(jnp.isfinite(prior[0]), prior[0], jnp.inf)))
  assert int(jnp.argmax(prior[0])) != planted
  out = _run(tiny_params, tiny_config, sort_task, batch,
             SearchConfig(algorithm=algorithm, num_simulations=sims, top_k=16),
             _planted_reward([planted]), jax.random.key(0), max_new_tokens=1)
  if algorithm == "gumbel":  # PUCT samples its action from the visit counts.
    assert int(out.token[0]) == planted
  best_slot = int(jnp.argmax(out.action_weights[0]))
  assert int(out.candidates[0, best_slot]) == planted


def test_search_finds_planted_pair_two_deep(tiny_params, tiny_config, sort_task, batch):
  planted = [7, 3]
  out = _run(tiny_params, tiny_config, sort_task, batch,
             SearchConfig(num_simulations=128), _planted_reward(planted, partial=True),
             jax.random.key(1), max_new_tokens=2)
  np.testing.assert_array_equal(out.token, planted[0])
  best = jnp.take_along_axis(out.candidates, jnp.argmax(out.action_weights, -1)[:, None], 1)
  np.testing.assert_array_equal(best[:, 0], planted[0])


@pytest.mark.parametrize("algorithm", ["gumbel", "puct"])
def test_action_weights_are_a_distribution_over_valid_candidates(
    tiny_params, tiny_config, sort_task, batch, algorithm):
  out = _run(tiny_params, tiny_config, sort_task, batch,
             SearchConfig(algorithm=algorithm, num_simulations=8), sort_task.jax_reward(),
             jax.random.key(2))
  np.testing.assert_allclose(out.action_weights.sum(-1), 1.0, atol=1e-5)
  assert np.all(np.asarray(out.action_weights)[~np.asarray(out.valid)] == 0)
  pad, sep = sort_task.tokenizer.pad_id, sort_task.tokenizer.sep_id
  valid_ids = np.asarray(out.candidates)[np.asarray(out.valid)]
  assert pad not in valid_ids and sep not in valid_ids
  # The root prior is the network's policy renormalized over the candidates, without PUCT's
  # Dirichlet noise.
  state = episode_lib.start(tiny_params, tiny_config, batch.tokens, batch.lengths,
                            sort_task.max_new_tokens)
  full = jax.nn.softmax(episode_lib.mask_logits(state.logits, _allowed(sort_task)), axis=-1)
  at_candidates = np.where(out.valid, np.take_along_axis(np.asarray(full), out.candidates, 1), 0)
  np.testing.assert_allclose(out.root_prior, at_candidates / at_candidates.sum(-1, keepdims=True),
                             atol=1e-5)


def test_tree_is_sized_by_candidates_not_vocab(tiny_params, tiny_config, sort_task, batch):
  """No array of the search has a [.., V] trailing axis once K < V."""
  search_config = SearchConfig(num_simulations=6, top_k=4)
  state = episode_lib.start(tiny_params, tiny_config, batch.tokens, batch.lengths, 4)
  tree = search_lib.run_search(tiny_params, tiny_config, search_config, state,
                               jax.random.key(0), reward_fn=sort_task.jax_reward(),
                               allowed=_allowed(sort_task), eos_id=2).tree
  vocab = tiny_config.vocab_size
  nodes = 2 * 6 + 1  # the default arena with reuse_tree: 2 S + 1
  assert tree.children_prior_logits.shape == (B, nodes, 4)
  for leaf in jax.tree.leaves(tree):
    assert vocab not in leaf.shape[2:], leaf.shape
  # One token of KV per node, whatever the depth.
  assert tree.embeddings.k.shape == (B, nodes, tiny_config.num_layers, tiny_config.kv_heads,
                                     tiny_config.dim_per_head)


@pytest.mark.parametrize("max_new_tokens", [1, 2])
def test_value_only_search_ends_answers_with_the_deciding_value(
    tiny_params, tiny_config, sort_task, batch, max_new_tokens):
  """Without a reward, an edge into a terminal node carries the network value of the node it
  leaves (the state its token was chosen in), other edges 0; a terminal node's own value is 0."""
  out = _run(tiny_params, tiny_config, sort_task, batch, SearchConfig(num_simulations=24),
             None, jax.random.key(3), max_new_tokens=max_new_tokens)
  tree = jax.tree.map(np.asarray, out.tree)
  child = tree.children_index  # [B, N, K], -1 where unvisited
  visited = child >= 0
  terminal = np.take_along_axis(tree.embeddings.terminal, np.maximum(child, 0).reshape(B, -1),
                                1).reshape(child.shape) & visited
  parent_value = np.broadcast_to(tree.raw_values[:, :, None], child.shape)
  assert terminal.any() and (visited & ~terminal).any() == (max_new_tokens > 1)
  np.testing.assert_allclose(tree.children_rewards[terminal], parent_value[terminal], rtol=1e-6)
  np.testing.assert_array_equal(tree.children_rewards[visited & ~terminal], 0.0)
  np.testing.assert_array_equal(tree.children_discounts[terminal], 0.0)


@pytest.mark.parametrize("algorithm", ["gumbel", "puct"])
def test_search_counts_the_network_evaluations_and_reward_calls_it_ran(
    tiny_params, tiny_config, sort_task, batch, monkeypatch, algorithm):
  """The reported counts equal what is observed apart from them: the forwards counted on the
  host as they run, and the nodes and completions read off the finished tree."""
  eos = sort_task.tokenizer.eos_id
  evaluations = []
  real_extend = model_lib.extend

  def counted_extend(*args, **kwargs):
    out = real_extend(*args, **kwargs)
    jax.debug.callback(lambda: evaluations.append(1))  # once per batched forward that runs
    return out

  monkeypatch.setattr(tree_nodes, "model_lib",
                      types.SimpleNamespace(**dict(vars(model_lib), extend=counted_extend)))
  # Two tokens of the answer already played: row 0 has ended (EOS), the others search the last
  # two. With the depth limit of 2, every node at depth 2 ends the answer.
  search_config = SearchConfig(algorithm=algorithm, num_simulations=24, top_k=4, max_depth=2)

  @jax.jit
  def f(params, tokens, lengths, key):
    state = episode_lib.start(params, tiny_config, tokens, lengths, sort_task.max_new_tokens)
    assert sort_task.max_new_tokens == 4
    for played in ([eos, 4, 5, 6], [4, 4, 4, 4]):
      state = episode_lib.step(params, tiny_config, state, jnp.array(played), eos)
    out = search_lib.run_search(params, tiny_config, search_config, state, key,
                                reward_fn=sort_task.jax_reward(), allowed=_allowed(sort_task),
                                eos_id=eos)
    return out, state.done

  out, done = f(tiny_params, batch.tokens, batch.lengths, jax.random.key(3))
  jax.effects_barrier()
  np.testing.assert_array_equal(done, [True, False, False, False])
  # A row is billed one forward per node it added to the tree; a batched forward runs only in
  # simulations where some row adds one, so never more often than the simulations, and at least
  # as often as the busiest row.
  tree = jax.tree.map(np.asarray, out.tree)
  node = tree.embeddings
  exists = tree.node_visits > 0
  created = exists.sum(axis=1) - 1
  np.testing.assert_array_equal(created[done], 0)
  np.testing.assert_array_equal(out.forward_tokens, created)
  assert created.max() <= len(evaluations) <= search_config.num_simulations
  # Each new node that ends the answer was scored once: at depth 1 when it is EOS, at depth 2
  # (the budget's end) always, since nothing is ever created below an EOS node.
  first = np.take_along_axis(node.token, node.path[:, :, 0], 1)
  at_depth = lambda d: exists & (node.depth == d)
  assert not np.any(at_depth(2) & (first == eos))
  scored = np.sum(at_depth(1) & (first == eos), axis=1) + np.sum(at_depth(2), axis=1)
  np.testing.assert_array_equal(out.reward_calls, scored)
  # Every node that ends the answer was scored: the tree holds one exactly where one was (never
  # in the ended row, whose root is terminal but not below itself).
  np.testing.assert_array_equal(out.terminal_reached, scored > 0)
  under_pick = (node.depth >= 1) & (first == np.asarray(out.token)[:, None])  # by token, not index
  np.testing.assert_array_equal(out.terminal_on_pick,
                                np.any(exists & node.terminal & under_pick, axis=1))
  assert np.any(out.terminal_on_pick)
  # The case is not trivial: simulations came back to known terminal nodes (visits > 1) and the
  # row backed up their values without a forward.
  assert np.any(at_depth(2) & (tree.node_visits > 1))
  assert np.any(at_depth(1) & (first == eos))


@pytest.mark.parametrize("settled_weight", [1e-6])
def test_adaptive_allocation_runs_its_allowance_or_stops_when_settled(
    tiny_params, tiny_config, sort_task, batch, settled_weight):
  """A row runs its allowance (at most 2 S) unless its choice settles first: with a weight of 1
  hardly ever, with a tiny one as soon as every considered action was tried once. The forwards
  billed are the simulations run."""
  search_config = SearchConfig(num_simulations=6, top_k=3, allocation="adaptive",
                               settled_weight=settled_weight)
  allowance = jnp.array([1, 4, 9, 20])
  state = episode_lib.start(tiny_params, tiny_config, batch.tokens, batch.lengths,
                            sort_task.max_new_tokens)
  out = jax.jit(lambda state, allowance: search_lib.run_search(
      tiny_params, tiny_config, search_config, state, jax.random.key(1),
      reward_fn=sort_task.jax_reward(), allowed=_allowed(sort_task),
      eos_id=sort_task.tokenizer.eos_id, allowance=allowance))(state, allowance)
  full = np.minimum(allowance, 12)
  ran = np.asarray(out.simulations)
  early = ran < full
  # A row stops early only once settled: every action tried, one at settled_weight.
  assert np.all(ran[early] >= 3)
  assert np.all(np.asarray(out.action_weights).max(-1)[early] >= settled_weight)
  if settled_weight < 1:
    np.testing.assert_array_equal(ran, np.minimum(allowance, 3))
  else:
    assert early.sum() <= 1  # a saturated softmax may hold exactly 1.0
  np.testing.assert_array_equal(out.tree.children_visits[:, 0].sum(-1), ran)
  # Billed: the simulations that expanded a node (one that reached a known terminal runs none).
  assert np.all((out.forward_tokens <= ran) & (out.forward_tokens >= np.minimum(ran, 3)))
