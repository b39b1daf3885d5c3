"""Self-play: search at every decoding step, act, and record search-improved targets.

One jitted `lax.scan` over the answer budget. At each step the search runs from every row's
current end, an action is picked (sampled from the search policy with a temperature, or the
search's own choice, or, with probability `random_action_prob`, a uniform random candidate),
and the token is appended. Policy targets are mctx's `action_weights` (or the root's visit
counts, `selfplay.policy_target`) kept as (token id, weight) pairs over the K candidates, so no
target is sized by the vocabulary; value targets are the return or its TD(lambda) mix with the
search's values (`selfplay.value_target`, tokenzero/targets.py).

Beside the targets, each step records what the learning diagnostics need
(`tokenzero.diagnostics`): the network's prior over the same K candidates, whether the tree held
a complete answer, and where the played token came from. All of it is the search's output or the
action's coin flips: no extra forward.

On a device mesh (`tokenzero.mesh`) the rows are split over its data devices. Each row's tree is
its own, so the results do not depend on the split; XLA still moves the row-indexed reads and
writes of the tree (`x[rows, i]`) across devices (benchmarks/mesh_throughput.json lists them).

Dimension letters: B batch, P prompt slots, T answer budget, K candidates.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from tokenzero import episode as episode_lib
from tokenzero import mesh as mesh_lib
from tokenzero import search as search_lib
from tokenzero import targets
from tokenzero import tree_reuse
from tokenzero.config import ModelConfig, SearchConfig, SelfPlayConfig
from tokenzero.rewards import TokenReward


class Trajectory(NamedTuple):
  prompt: jax.Array  # [B, P]
  prompt_len: jax.Array  # [B]
  tokens: jax.Array  # [B, P + T] prompt then completion
  completion: jax.Array  # [B, T]
  completion_len: jax.Array  # [B]
  policy_ids: jax.Array  # [B, T, K] candidate token ids at each step
  policy_weights: jax.Array  # [B, T, K] search policy over them (sums to 1 on live steps)
  step_mask: jax.Array  # [B, T] bool: a decision was taken at this step
  reward: jax.Array  # [B] episode return
  search_value: jax.Array  # [B, T] root value backed up by the search
  root_value: jax.Array  # [B, T] network value at the root
  tree_kept: jax.Array  # [B, T] fraction of the step's tree kept for the next (reuse_tree)
  root_prior: jax.Array  # [B, T, K] network policy over the candidates (renormalized over K)
  terminal_reached: jax.Array  # [B, T] bool: the step's tree held a complete answer
  terminal_on_pick: jax.Array  # [B, T] bool: ... one starting with the search's pick
  explored: jax.Array  # [B, T] bool: the played slot was the uniform random candidate
  off_policy: jax.Array  # [B, T] bool: the played slot is not the search's own pick
  # [B, T] the learner's value target (`selfplay.value_target`, tokenzero/targets.py); None:
  # the return, `reward`, at every step.
  value_target: jax.Array | None = None
  # [B] int32 forward token-evaluations the row's answer cost: the search's expansions plus the
  # played tokens' own forwards (the prompt's prefill not counted, as the decoders count). A
  # count for the metrics: `for_learner` drops it before the replay buffer and the learner.
  forward_tokens: jax.Array | None = None
  # The best complete answer the row's searches verified, or the played one when it scored as
  # well (`optim.found_weight` imitates it): its tokens [B, T], length [B] (EOS included) and
  # reward [B].
  found: jax.Array | None = None
  found_len: jax.Array | None = None
  found_reward: jax.Array | None = None


def for_learner(traj: Trajectory, *, found: bool) -> Trajectory:
  """The rows the learner and the replay buffer take: without the compute count, and without
  the found answers unless the learner imitates them (`found`: optim.found_weight > 0)."""
  traj = traj._replace(forward_tokens=None)
  return traj if found else traj._replace(found=None, found_len=None, found_reward=None)


class Choice(NamedTuple):
  """The slot to play and where it came from."""
  slot: jax.Array  # [B] int32
  explored: jax.Array  # [B] bool: a uniform random candidate (random_action_prob's coin)


class _Decision(NamedTuple):
  """What the scan records at one answer step, for every row."""
  policy_ids: jax.Array  # [B, K] candidate token ids
  policy_weights: jax.Array  # [B, K] the search policy over them
  live: jax.Array  # [B] bool: the row took a decision at this step
  search_value: jax.Array  # [B] root value backed up by the search
  root_value: jax.Array  # [B] network value at the root
  tree_kept: jax.Array  # [B] fraction of the tree kept for the next step (0 without reuse)
  root_prior: jax.Array  # [B, K] network policy over the candidates
  terminal_reached: jax.Array  # [B] bool
  terminal_on_pick: jax.Array  # [B] bool
  explored: jax.Array  # [B] bool
  off_policy: jax.Array  # [B] bool
  forward_tokens: jax.Array  # [B] int32 the search's expansions + the played token's forward


def choose_slot(search_out: search_lib.SearchOutput, rng: jax.Array, temperature: jax.Array,
                config: SelfPlayConfig) -> Choice:
  """Slot to play [B]: the search's pick or a tempered sample, plus uniform exploration."""
  sample_key, explore_key, coin_key = jax.random.split(rng, 3)
  if config.action_selection == "search":
    slot = search_out.action
  elif config.action_selection == "sample":
    logits = jnp.log(search_out.action_weights + 1e-20) / jnp.maximum(temperature, 1e-3)
    logits = jnp.where(search_out.valid, logits, -jnp.inf)
    slot = jax.random.categorical(sample_key, logits, axis=-1)
  else:
    raise ValueError(f"selfplay.action_selection must be 'sample' or 'search', got "
                     f"{config.action_selection!r}")
  uniform = jnp.where(search_out.valid, 0.0, -jnp.inf)
  random_slot = jax.random.categorical(explore_key, uniform, axis=-1)
  explore = jax.random.uniform(coin_key, slot.shape) < config.random_action_prob
  return Choice(slot=jnp.where(explore, random_slot, slot).astype(jnp.int32), explored=explore)


# Nothing is donated: the tree and the KV cache are the scan's carry inside this program, and
# the params go on to the learner (which donates them).
@functools.partial(jax.jit, static_argnames=(
    "config", "search_config", "selfplay_config", "reward_fn", "max_new_tokens", "eos_id",
    "mesh"))
def self_play(params, prompt, prompt_len, rng, temperature, allowed, *, config: ModelConfig,
              search_config: SearchConfig, selfplay_config: SelfPlayConfig,
              reward_fn: TokenReward, max_new_tokens: int, eos_id: int,
              mesh: mesh_lib.DeviceMesh | None = None) -> Trajectory:
  """Plays one episode per prompt row [B, P]. `temperature` is traced: changing it never
  recompiles. `mesh`: the trajectories come back split over its data devices, as the prompts
  went in (None: wherever jit puts them)."""
  state = episode_lib.start(params, config, prompt, prompt_len, max_new_tokens)
  reuse = search_config.reuse_tree
  kept = search_lib.no_kept_tree(config, search_config, state) if reuse else None

  def body(carry, step_key):
    state, kept, best = carry
    search_key, act_key = jax.random.split(step_key)
    out = search_lib.run_search(params, config, search_config, state, search_key,
                                reward_fn=reward_fn, allowed=allowed, eos_id=eos_id, kept=kept)
    better = out.best_reward > best[0]
    best = (jnp.where(better, out.best_reward, best[0]),
            jnp.where(better[:, None], out.best_answer, best[1]),
            jnp.where(better, out.best_answer_len, best[2]))
    choice = choose_slot(out, act_key, temperature, selfplay_config)
    slot = choice.slot
    live = ~state.done
    if reuse:
      kept, kept_fraction = tree_reuse.reroot(search_config, out, slot)
      state, ran = tree_reuse.advance(params, config, search_config, state, out, slot, eos_id)
    else:
      token = jnp.take_along_axis(out.candidates, slot[:, None], axis=1)[:, 0]
      state = episode_lib.step(params, config, state, token, eos_id)
      kept_fraction = jnp.zeros(live.shape, jnp.float32)
      ran = live
    weights = (out.visit_probs if selfplay_config.policy_target == "visits"
               else out.action_weights)
    return (state, kept, best), _Decision(policy_ids=out.candidates, policy_weights=weights,
                                    live=live, search_value=out.search_value,
                                    root_value=out.root_value, tree_kept=kept_fraction,
                                    root_prior=out.root_prior,
                                    terminal_reached=out.terminal_reached,
                                    terminal_on_pick=out.terminal_on_pick,
                                    explored=choice.explored, off_policy=slot != out.action,
                                    forward_tokens=out.forward_tokens + ran.astype(jnp.int32))

  batch = prompt.shape[0]
  no_best = (jnp.full((batch,), -jnp.inf, jnp.float32), state.completion,
             jnp.zeros((batch,), jnp.int32))
  (state, _, best), steps = jax.lax.scan(body, (state, kept, no_best),
                                         jax.random.split(rng, max_new_tokens))
  reward = reward_fn(state.prompt, state.prompt_len, state.completion, state.num_generated)
  # The played answer wins ties: it is on the policy's own path.
  searched = best[0] > reward
  steps_first = lambda x: jnp.swapaxes(x, 0, 1)
  value_target = None
  if selfplay_config.value_target == "lambda":
    value_target = targets.lambda_returns(
        reward, steps_first(steps.search_value), steps_first(steps.live),
        steps_first(steps.explored), td_lambda=selfplay_config.td_lambda,
        cut_explored=selfplay_config.cut_explored)
  elif selfplay_config.cut_explored:  # the return, cut at random moves
    value_target = targets.lambda_returns(
        reward, steps_first(steps.search_value), steps_first(steps.live),
        steps_first(steps.explored), td_lambda=1.0, cut_explored=True)
  traj = Trajectory(
      prompt=prompt,
      prompt_len=prompt_len,
      tokens=state.tokens,
      completion=state.completion,
      completion_len=state.num_generated,
      policy_ids=steps_first(steps.policy_ids),
      policy_weights=steps_first(steps.policy_weights),
      step_mask=steps_first(steps.live),
      reward=reward.astype(jnp.float32),
      search_value=steps_first(steps.search_value),
      root_value=steps_first(steps.root_value),
      tree_kept=steps_first(steps.tree_kept),
      root_prior=steps_first(steps.root_prior),
      terminal_reached=steps_first(steps.terminal_reached),
      terminal_on_pick=steps_first(steps.terminal_on_pick),
      explored=steps_first(steps.explored),
      off_policy=steps_first(steps.off_policy),
      value_target=value_target,
      forward_tokens=steps.forward_tokens.sum(0),
      found=jnp.where(searched[:, None], best[1], state.completion),
      found_len=jnp.where(searched, best[2], state.num_generated),
      found_reward=jnp.where(searched, best[0], reward).astype(jnp.float32))
  return traj if mesh is None else mesh.constrain_batch(traj)
