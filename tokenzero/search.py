"""Batched tree search over the token tree: our own jitted loop on mctx's public pieces. The
only module that touches mctx.

An action appends a token. The actions of a node are slots over its top-K candidate tokens, so
no array of the tree is sized by the vocabulary. The tree is an `mctx.Tree` (batch first,
`[B, N, ...]`) in an arena of `search.max_nodes` nodes, allocated in order; its embeddings are
`tree_nodes.Nodes`, one token of KV per node. Actions are chosen by mctx's public selection
functions and Q transforms; the loop (select, expand, back up: `tree_walk`) and the node
allocator are ours, because mctx's are private and tie a node's index to the simulation's number.

One simulation selects from the root until it reaches an action no one has taken (a new node:
one forward for the row), a terminal node or a node at the depth limit. The last two are known:
their value is backed up without a network call (mctx would run the network there and throw the
result away, or re-run a node it already has). With `search.terminal_reselect` = R > 0 the row
then selects again, up to R times, so that a batched forward expands a new node in as many rows
as possible; `num_simulations` counts forwards. With R = 0 the root's statistics equal
`mctx.gumbel_muzero_policy`'s and `mctx.muzero_policy`'s (tests/test_search_engine.py).

The search counts what it runs, per row (`SearchOutput.forward_tokens`, `reward_calls`): a live
row is billed one forward token for each node it expanded; a completion handed to the reward
(a new node that ends the answer) is one reward call. When no row of the batch has a node to
expand, the forward is not run at all.

A full arena ends a row's search: later simulations of that row do nothing.

With `search.reuse_tree` the caller passes the last step's tree re-rooted at the committed child
(`tree_reuse.reroot`, a `KeptTree`): its statistics stay, and the step adds S simulations to
them. Sequential halving at the root runs on the visits made since this step began (mctx's table
is indexed by the root's visits, and a reused root would run off it); Q comes from the full
statistics. The completed-Q scale sigma grows with the root children's largest visit count, so a
reused root's improved policy (`action_weights`, the self-play target) is sharper than a fresh
one's for the same simulations (with maxvisit_init 50 and S <= 64, by at most ~2x).

Each step also records the best complete answer its expansions verified (`best_reward`,
`best_answer`): `search.select=best_terminal` returns it, as best-of-n returns its best sample.

Dimension letters: B batch, N tree nodes, K candidates (actions), D max depth, T answer budget.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import mctx

from tokenzero import tree_nodes, tree_walk
from tokenzero.config import ModelConfig, SearchConfig
from tokenzero.episode import Episode
from tokenzero.rewards import TokenReward

ROOT = mctx.Tree.ROOT_INDEX
UNVISITED = mctx.Tree.UNVISITED


class SearchOutput(NamedTuple):
  action: jax.Array  # [B] slot chosen by the search
  token: jax.Array  # [B] token id of that slot
  action_weights: jax.Array  # [B, K] search policy over the slots
  visit_probs: jax.Array  # [B, K] the root's visit counts, normalised (= PUCT's action_weights)
  candidates: jax.Array  # [B, K] token ids of the slots
  valid: jax.Array  # [B, K] bool: slot holds an allowed token
  root_prior: jax.Array  # [B, K] the network's policy over the slots (renormalized, no noise)
  root_value: jax.Array  # [B] network value at the root
  search_value: jax.Array  # [B] value the search backed up to the root
  terminal_reached: jax.Array  # [B] bool: the tree holds a complete answer below the root
  terminal_on_pick: jax.Array  # [B] bool: ... one that starts with the search's pick (`action`)
  forward_tokens: jax.Array  # [B] int32 nodes the row expanded (0: root was done)
  reward_calls: jax.Array  # [B] int32 completions of the row handed to the reward
  num_nodes: jax.Array  # [B] int32 nodes of the arena in use
  best_reward: jax.Array  # [B] best reward of an answer this step's expansions verified (-inf)
  best_answer: jax.Array  # [B, T] that answer (the root's completion plus its path)
  best_answer_len: jax.Array  # [B] int32 its length
  simulations: jax.Array  # [B] int32 simulations the row ran this step
  tree: mctx.Tree  # the search tree [B, N, ...], for inspection (dropped under jit if unused)


class KeptTree(NamedTuple):
  """The tree a decoding step hands to the next (`search.reuse_tree`)."""
  tree: mctx.Tree  # [B, N, ...] re-rooted at the committed child: root at 0
  num_nodes: jax.Array  # [B] int32 nodes in use
  reused: jax.Array  # [B] bool: the row has a kept root (else the step starts a fresh tree)


class _RootData(NamedTuple):
  """The tree's `extra_data`: what the root selection needs besides the tree."""
  root_gumbel: jax.Array  # [B, K] (read by mctx's Gumbel root selection)
  visits_before: jax.Array  # [B, K] int32 root child visits when this step began


class _Loop(NamedTuple):
  key: jax.Array
  tree: mctx.Tree
  num_nodes: jax.Array  # [B] int32 nodes allocated
  forward_tokens: jax.Array  # [B] int32
  reward_calls: jax.Array  # [B] int32
  best_reward: jax.Array  # [B]
  best_answer: jax.Array  # [B, T]
  best_answer_len: jax.Array  # [B] int32
  simulations: jax.Array  # [B] int32 simulations the row ran (adaptive: until settled)
  running: jax.Array  # [B] bool: the row's search goes on


DEFAULT_TOP_K = 16  # candidates per node when `search.top_k` is 0.


def num_candidates(search_config: SearchConfig, vocab_size: int) -> int:
  return min(search_config.top_k or DEFAULT_TOP_K, vocab_size)


def search_depth(search_config: SearchConfig, max_new_tokens: int) -> int:
  return min(search_config.max_depth or max_new_tokens, max_new_tokens)


def step_simulations(search_config: SearchConfig) -> int:
  """The most simulations one step may run: 2 S with adaptive allocation (S plus the bank)."""
  return search_config.num_simulations * (2 if search_config.allocation == "adaptive" else 1)


def num_nodes(search_config: SearchConfig) -> int:
  if search_config.max_nodes:
    return search_config.max_nodes
  step = step_simulations(search_config)
  return step + (search_config.num_simulations if search_config.reuse_tree else 0) + 1


def _new_tree(root_prior, root_value, nodes: tree_nodes.Nodes, invalid, extra_data) -> mctx.Tree:
  """An arena of N nodes holding only the root, as mctx's `instantiate_tree_from_root`."""
  batch, size = nodes.depth.shape
  num_actions = root_prior.shape[1]
  node = lambda value, dtype: jnp.full((batch, size), value, dtype)
  edge = lambda value, dtype: jnp.full((batch, size, num_actions), value, dtype)
  return mctx.Tree(
      node_visits=node(0, jnp.int32).at[:, ROOT].set(1),
      raw_values=node(0, root_value.dtype).at[:, ROOT].set(root_value),
      node_values=node(0, root_value.dtype).at[:, ROOT].set(root_value),
      parents=node(mctx.Tree.NO_PARENT, jnp.int32),
      action_from_parent=node(mctx.Tree.NO_PARENT, jnp.int32),
      children_index=edge(UNVISITED, jnp.int32),
      children_prior_logits=edge(0, root_prior.dtype).at[:, ROOT].set(root_prior),
      children_values=edge(0, root_value.dtype),
      children_visits=edge(0, jnp.int32),
      children_rewards=edge(0, root_value.dtype),
      children_discounts=edge(0, root_value.dtype),
      embeddings=nodes,
      root_invalid_actions=invalid,
      extra_data=extra_data)


def no_kept_tree(config: ModelConfig, search_config: SearchConfig, episode: Episode) -> KeptTree:
  """A `KeptTree` with no row reused: what the first step of a reusing decoder carries in."""
  batch = episode.prompt.shape[0]
  num_actions = num_candidates(search_config, config.vocab_size)
  prior = jnp.zeros((batch, num_actions), episode.logits.dtype)
  nodes = tree_nodes.root_nodes(config, search_config, episode,
                                jnp.zeros((batch, num_actions), jnp.int32),
                                num_nodes(search_config),
                                search_depth(search_config, episode.max_new_tokens))
  tree = _new_tree(prior, jnp.zeros((batch,), jnp.float32), nodes, prior > 0,
                   _RootData(prior, jnp.zeros((batch, num_actions), jnp.int32)))
  return KeptTree(tree, jnp.ones((batch,), jnp.int32), jnp.zeros((batch,), bool))


def _mask_invalid(logits, invalid):
  """mctx's policies' masking of the root's logits: max subtracted, invalid slots at the
  dtype's minimum."""
  logits = logits - jnp.max(logits, axis=-1, keepdims=True)
  return jnp.where(invalid, jnp.finfo(logits.dtype).min, logits)


def _score_considered(considered_visit, gumbel, logits, qvalues, visit_counts):
  """mctx's sequential-halving score (`seq_halving.score_considered`, private there)."""
  logits = logits - jnp.max(logits, keepdims=True, axis=-1)
  penalty = jnp.where(visit_counts == considered_visit, 0, -jnp.inf)
  return jnp.maximum(-1e9, gumbel + logits + qvalues) + penalty


def _masked_argmax(scores, invalid):
  return jnp.argmax(jnp.where(invalid, -jnp.inf, scores), axis=-1).astype(jnp.int32)


def _selection_fns(search_config: SearchConfig, num_selections: int):
  """(root, interior) selection functions and the qtransform, from mctx's public pieces."""
  if search_config.algorithm == "gumbel":
    qtransform = functools.partial(
        mctx.qtransform_completed_by_mix_value, value_scale=search_config.value_scale,
        maxvisit_init=search_config.maxvisit_init, rescale_values=search_config.rescale_values)
    def root_fn(key, tree, node, depth):
      # The halving table is indexed by the root's visits, which count every selection: it
      # sees this step's visits only, while Q comes from the full statistics.
      del depth
      visits = tree.children_visits.at[node].add(-tree.extra_data.visits_before)
      return mctx.gumbel_muzero_root_action_selection(
          key, tree.replace(children_visits=visits), node, num_simulations=num_selections,
          max_num_considered_actions=search_config.max_num_considered_actions,
          qtransform=lambda _, index: qtransform(tree, index))
    interior_fn = functools.partial(mctx.gumbel_muzero_interior_action_selection,
                                    qtransform=qtransform)
    return root_fn, interior_fn, qtransform
  if search_config.algorithm == "puct":
    interior_fn = functools.partial(
        mctx.muzero_action_selection, pb_c_init=search_config.pb_c_init,
        pb_c_base=search_config.pb_c_base, qtransform=mctx.qtransform_by_parent_and_siblings)
    return interior_fn, interior_fn, None
  raise ValueError(f"search.algorithm must be 'gumbel' or 'puct', got "
                   f"{search_config.algorithm!r}")


def _where_rows(pick, a, b):
  """Per row (leading axis): `a` where `pick` [B], else `b`, over two equal pytrees."""
  return jax.tree.map(lambda x, y: jnp.where(pick.reshape((-1,) + (1,) * (x.ndim - 1)), x, y),
                      a, b)


def run_search(params, config: ModelConfig, search_config: SearchConfig, episode: Episode,
               rng: jax.Array, *, reward_fn: TokenReward | None, allowed: jax.Array,
               eos_id: int, kept: KeptTree | None = None,
               allowance: jax.Array | None = None) -> SearchOutput:
  """Searches from each row's current end. Jit the caller; every argument but the configs,
  `reward_fn` and `eos_id` is an array. `reward_fn=None` is value-only search: the tree never
  calls a reward, and an answer is worth the value of the state its last token was chosen in.
  `kept`: the last step's tree re-rooted at the committed token (`tree_reuse.reroot`); rows
  without a kept root start a fresh tree. `allowance` [B] (`search.allocation=adaptive`): the
  simulations a row may run this step, at most `step_simulations`; it stops earlier once its
  choice is settled."""
  batch = episode.prompt.shape[0]
  num_actions = num_candidates(search_config, config.vocab_size)
  max_depth = search_depth(search_config, episode.max_new_tokens)
  size = num_nodes(search_config)
  reselect = search_config.terminal_reselect
  max_simulations = step_simulations(search_config)
  num_selections = max_simulations * (reselect + 1)
  prior, candidates, valid = tree_nodes.top_k(episode.logits, allowed, num_actions)
  if kept is not None:
    # A kept root's candidates and raw prior are the ones its expansion stored.
    kept_prior = kept.tree.children_prior_logits[:, ROOT]
    prior, candidates, valid = _where_rows(
        kept.reused, (kept_prior, kept.tree.embeddings.candidates[:, ROOT],
                      kept_prior > tree_nodes.INVALID_LOGIT / 2), (prior, candidates, valid))
  invalid = ~valid
  root_value = episode.value.astype(jnp.float32)
  root_fn, interior_fn, qtransform = _selection_fns(search_config, num_selections)
  # The keys split as in mctx's policies, so that with reselect 0 the search is theirs.
  if search_config.algorithm == "gumbel":
    rng, gumbel_key = jax.random.split(rng)
    gumbel = search_config.gumbel_scale * jax.random.gumbel(gumbel_key, prior.shape, prior.dtype)
    root_prior = _mask_invalid(prior, invalid)
  else:
    rng, noise_key, search_key = jax.random.split(rng, 3)
    noise = jax.random.dirichlet(
        noise_key, jnp.full((num_actions,), search_config.dirichlet_alpha), (batch,))
    fraction = search_config.dirichlet_fraction
    noisy = (1 - fraction) * jax.nn.softmax(prior) + fraction * noise
    root_prior = _mask_invalid(jnp.log(jnp.maximum(noisy, jnp.finfo(noisy.dtype).tiny)), invalid)
    gumbel = jnp.zeros_like(prior)
  no_visits = jnp.zeros((batch, num_actions), jnp.int32)
  nodes = tree_nodes.root_nodes(config, search_config, episode, candidates, size, max_depth)
  tree = _new_tree(root_prior, root_value, nodes, invalid, _RootData(gumbel, no_visits))
  used = jnp.ones((batch,), jnp.int32)
  if kept is not None:
    # The kept tree with this step's root prior (noise drawn afresh), mask and visit baseline.
    reused_tree = kept.tree.replace(
        children_prior_logits=kept.tree.children_prior_logits.at[:, ROOT].set(root_prior),
        root_invalid_actions=invalid,
        extra_data=_RootData(gumbel, kept.tree.children_visits[:, ROOT]))
    tree = _where_rows(kept.reused, reused_tree, tree)
    used = jnp.where(kept.reused, kept.num_nodes, used)

  def select_fn(key, tree, node, depth):
    return jax.lax.cond(depth == 0, lambda: root_fn(key, tree, node, depth),
                        lambda: interior_fn(key, tree, node, depth))

  select = jax.vmap(functools.partial(tree_walk.select_one, select_fn=select_fn, max_depth=max_depth))
  expand = functools.partial(tree_nodes.expand, params, config, search_config, episode, allowed,
                             reward_fn, eos_id)
  rows = jnp.arange(batch)

  def attempt(index, state):
    tree, found, parent, action, searching, simulate_key = state
    key = jax.lax.cond(index == 0, lambda: simulate_key,
                       lambda: jax.random.fold_in(simulate_key, index))
    new_parent, new_action, leaf = select(jax.random.split(key, batch), tree)
    new = searching & (leaf == UNVISITED)
    known = searching & (leaf != UNVISITED)
    tree = tree_walk.visit_known(tree, leaf, known)
    return (tree, found | new, jnp.where(new, new_parent, parent),
            jnp.where(new, new_action, action), known, simulate_key)

  def simulation(_, loop: _Loop) -> _Loop:
    key, simulate_key, _ = jax.random.split(loop.key, 3)  # mctx's split (its expand key unused)
    zero = jnp.zeros((batch,), jnp.int32)
    state = (loop.tree, jnp.zeros((batch,), bool), zero, zero,
             (loop.num_nodes < size) & loop.running, simulate_key)
    tree, found, parent, action, _, _ = jax.lax.fori_loop(0, reselect + 1, attempt, state)
    child = loop.num_nodes
    parent_value = tree.raw_values[rows, parent]
    # No row has a new node (all hit known leaves, or are done): the forward is not run.
    new = jax.lax.cond(
        jnp.any(found),
        lambda: expand(tree.embeddings, parent, action, parent_value, child),
        lambda: tree_nodes.skip_expand(tree.embeddings, parent, episode.completion))
    tree = tree_walk.add_child(tree, parent, action, child, new, found)
    tree = jax.vmap(tree_walk.backward_one)(tree, child, found)
    live = ~episode.done
    scored = found & new.newly_terminal & (reward_fn is not None)
    better = scored & live & (new.reward > loop.best_reward)
    simulations = loop.simulations + loop.running
    running = loop.running & (simulations < limit)
    if allowance is not None:  # adaptive: stop once every considered action was tried and one
      # holds settled_weight of the policy
      tried = jnp.sum(tree.children_visits[:, ROOT] > tree.extra_data.visits_before, axis=-1)
      settled = ((tried >= considered) &
                 (jnp.max(policy(tree), axis=-1) >= search_config.settled_weight))
      running = running & ~settled
    return _Loop(key, tree, loop.num_nodes + found,
                 loop.forward_tokens + (found & live), loop.reward_calls + scored,
                 jnp.where(better, new.reward, loop.best_reward),
                 jnp.where(better[:, None], new.answer, loop.best_answer),
                 jnp.where(better, new.answer_len, loop.best_answer_len), simulations, running)

  def policy(tree):
    """The search policy at the root [B, K]: Gumbel's improved policy, or PUCT's visits."""
    if search_config.algorithm == "gumbel":
      completed_q = jax.vmap(qtransform, in_axes=[0, None])(tree, ROOT)
      return jax.nn.softmax(_mask_invalid(root_prior + completed_q, invalid))
    return tree.summary().visit_probs

  considered = jnp.minimum(search_config.max_num_considered_actions, jnp.sum(valid, axis=-1))
  if allowance is None:
    limit = jnp.full((batch,), search_config.num_simulations, jnp.int32)
  else:
    limit = jnp.minimum(allowance, max_simulations).astype(jnp.int32)
  zero = jnp.zeros((batch,), jnp.int32)
  loop = jax.lax.fori_loop(
      0, search_config.num_simulations if allowance is None else max_simulations, simulation,
      _Loop(rng if search_config.algorithm == "gumbel" else search_key, tree, used, zero, zero,
            jnp.full((batch,), -jnp.inf, jnp.float32), episode.completion, zero, zero,
            limit > 0))
  tree = loop.tree
  summary = tree.summary()
  action_weights = policy(tree)
  if search_config.algorithm == "gumbel":
    step_visits = summary.visit_counts - tree.extra_data.visits_before
    considered_visit = jnp.max(step_visits, axis=-1, keepdims=True)
    completed_q = jax.vmap(qtransform, in_axes=[0, None])(tree, ROOT)
    action = _masked_argmax(_score_considered(considered_visit, gumbel, root_prior, completed_q,
                                              step_visits), invalid)
  else:
    logits = jnp.log(jnp.maximum(action_weights, jnp.finfo(action_weights.dtype).tiny))
    action = jax.random.categorical(rng, logits - jnp.max(logits, axis=-1, keepdims=True))
  token = jnp.take_along_axis(candidates, action[:, None], axis=1)[:, 0]
  # A node in use below the root that ends the answer: its return informed the root's Q (kept
  # from an earlier step or found by this one's simulations). An EOS child of the root is one,
  # so the tree nearly always holds some; under the pick, the pick's Q holds a real reward.
  node = jnp.arange(size)[None, :]
  in_use = (node > ROOT) & (node < loop.num_nodes[:, None])
  complete = tree.embeddings.terminal & in_use  # [B, N]
  pick_child = tree.children_index[jnp.arange(batch), ROOT, action]  # [B] (UNVISITED: none)
  # path[:, :, 0] is a node's ancestor at depth 1 (itself at depth 1).
  under_pick = tree.embeddings.path[:, :, 0] == pick_child[:, None]  # [B, N]
  return SearchOutput(
      action=action,
      token=token,
      action_weights=action_weights,
      visit_probs=summary.visit_probs,
      candidates=candidates,
      valid=valid,
      root_prior=jax.nn.softmax(_mask_invalid(prior.astype(jnp.float32), invalid), axis=-1),
      root_value=episode.value,
      search_value=tree.node_values[:, ROOT],
      terminal_reached=jnp.any(complete, axis=-1),
      terminal_on_pick=jnp.any(complete & under_pick, axis=-1),
      forward_tokens=loop.forward_tokens,
      reward_calls=loop.reward_calls,
      num_nodes=loop.num_nodes,
      best_reward=loop.best_reward,
      best_answer=loop.best_answer,
      best_answer_len=loop.best_answer_len,
      simulations=loop.simulations,
      tree=tree)
