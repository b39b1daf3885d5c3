"""Replay: a fixed-size buffer of self-play trajectories on the device, and reanalyze.

Without it every self-play answer trains the learner for one iteration and is dropped
(`steps_per_iteration` steps on fresh data). With `replay.capacity > 0` each iteration's
trajectories are also written into a ring buffer, and the learner's batch is the fresh rows plus
`replay.sample_old` rows drawn uniformly from what the buffer holds. Old rows' targets were made
by an older network; `replay.reanalyze=true` re-runs the search with the current network at every
step of the stored answers (the same tokens, forced) and replaces their policy and value targets
with the new search's, as MuZero's Reanalyse does. The buffer is a pytree (`Buffer`) that the
checkpoint saves, so a resumed run continues with the same old data.

Dimension letters: B batch, C capacity (rows), P prompt slots, T answer budget, K candidates.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tokenzero import episode as episode_lib
from tokenzero import rewards
from tokenzero import selfplay
from tokenzero import search as search_lib
from tokenzero import targets
from tokenzero.config import ModelConfig, SearchConfig, SelfPlayConfig
from tokenzero.rewards import TokenReward
from tokenzero.selfplay import Trajectory


class Buffer(NamedTuple):
  rows: Trajectory  # every leaf [C, ...]: the stored trajectories
  written: jax.Array  # [] int32 rows ever written (the next row goes to written % C)
  iteration: jax.Array  # [C] int32 the iteration that played each row (-1: empty)

  @property
  def capacity(self) -> int:
    return self.iteration.shape[0]


def _fill_value_target(traj: Trajectory) -> Trajectory:
  """The same pytree structure whatever the value target: the return when none is recorded."""
  if traj.value_target is not None:
    return traj
  return traj._replace(value_target=jnp.broadcast_to(traj.reward[:, None],
                                                     traj.step_mask.shape).astype(jnp.float32))


def init(example: Trajectory, capacity: int) -> Buffer:
  """An empty buffer of `capacity` rows shaped like `example`'s rows [B, ...] (arrays or
  `jax.ShapeDtypeStruct`s)."""
  rows = jax.tree.map(lambda x: jnp.zeros((capacity,) + tuple(x.shape[1:]), x.dtype), example)
  if rows.value_target is None:
    rows = rows._replace(value_target=jnp.zeros((capacity,) + example.step_mask.shape[1:],
                                                jnp.float32))
  return Buffer(rows=rows, written=jnp.zeros((), jnp.int32),
                iteration=jnp.full((capacity,), -1, jnp.int32))


def for_run(setup, params) -> Buffer | None:
  """The empty buffer of a run (`setup`: its `run.Setup`), shaped like its self-play's output
  (traced, not compiled); None when `replay.capacity` is 0."""
  config = setup.config
  if config.replay.capacity == 0:
    return None
  rows, slots = config.selfplay.batch_size, setup.task.prompt_len
  shapes = jax.eval_shape(
      lambda p, tokens, lengths: selfplay.self_play(
          p, tokens, lengths, jax.random.key(0), jnp.float32(1.0), setup.allowed,
          config=config.model, search_config=config.search, selfplay_config=config.selfplay,
          reward_fn=setup.reward_fn, max_new_tokens=setup.max_new_tokens,
          eos_id=setup.tokenizer.eos_id),
      params, jax.ShapeDtypeStruct((rows, slots), jnp.int32),
      jax.ShapeDtypeStruct((rows,), jnp.int32))
  return init(selfplay.for_learner(shapes, found=config.optim.found_weight > 0),
              config.replay.capacity)


@jax.jit
def add(buffer: Buffer, traj: Trajectory, iteration: jax.Array) -> Buffer:
  """`traj`'s B rows written over the oldest ones (a ring); B <= C."""
  traj = _fill_value_target(traj)
  batch = traj.reward.shape[0]
  slots = (buffer.written + jnp.arange(batch)) % buffer.capacity
  rows = jax.tree.map(lambda store, new: store.at[slots].set(new.astype(store.dtype)),
                      buffer.rows, traj)
  return Buffer(rows=rows, written=buffer.written + batch,
                iteration=buffer.iteration.at[slots].set(iteration))


@functools.partial(jax.jit, static_argnames="num")
def sample(buffer: Buffer, key: jax.Array, *, num: int) -> tuple[Trajectory, jax.Array]:
  """`num` rows drawn uniformly (with replacement) from the filled ones -> (rows, their
  iterations [num]). Call only on a buffer that holds a row."""
  filled = jnp.minimum(buffer.written, buffer.capacity)
  picks = jax.random.randint(key, (num,), 0, jnp.maximum(filled, 1))
  return jax.tree.map(lambda x: x[picks], buffer.rows), buffer.iteration[picks]


def concat(fresh: Trajectory, old: Trajectory) -> Trajectory:
  """The learner's batch: the fresh rows, then the old ones."""
  return jax.tree.map(lambda a, b: jnp.concatenate([a, b.astype(a.dtype)]),
                      _fill_value_target(fresh), old)


@functools.partial(jax.jit, static_argnames=(
    "config", "search_config", "selfplay_config", "reward_fn", "eos_id"))
def reanalyze(params, rows: Trajectory, rng: jax.Array, allowed: jax.Array, *,
              config: ModelConfig, search_config: SearchConfig,
              selfplay_config: SelfPlayConfig, reward_fn: TokenReward,
              eos_id: int) -> Trajectory:
  """Fresh targets for stored answers: the current network's search at every step of each
  row's answer, the stored token played after it (whatever the search would choose), so the
  states are the stored ones. Policy targets, search and network values, priors and terminal
  flags are the new search's; tokens, reward, step mask and exploration flags are kept; the value
  target is recomputed from the new search values (`selfplay.value_target`). A fresh tree at
  every step: a forced token need not be a candidate of the new network, so there is no
  committed child to keep."""
  search_config = dataclasses.replace(search_config, reuse_tree=False)
  max_new_tokens = rows.completion.shape[1]
  state = episode_lib.start(params, config, rows.prompt, rows.prompt_len, max_new_tokens)

  def body(state, xs):
    step_key, token = xs
    key, _ = jax.random.split(step_key)  # as self-play splits it: the same rng, the same search
    out = search_lib.run_search(params, config, search_config, state, key,
                                reward_fn=reward_fn, allowed=allowed, eos_id=eos_id)
    weights = (out.visit_probs if selfplay_config.policy_target == "visits"
               else out.action_weights)
    spent = out.forward_tokens + (~state.done).astype(jnp.int32)  # the stored token's forward
    state = episode_lib.step(params, config, state, token, eos_id)
    return state, (out.candidates, weights, out.search_value, out.root_value, out.root_prior,
                   out.terminal_reached, out.terminal_on_pick, spent)

  keys = jax.random.split(rng, max_new_tokens)
  _, steps = jax.lax.scan(body, state, (keys, rows.completion.T))
  ids, weights, search_value, root_value, prior, reached, on_pick, spent = (
      jnp.swapaxes(x, 0, 1) for x in steps)
  td_lambda = selfplay_config.td_lambda if selfplay_config.value_target == "lambda" else 1.0
  value_target = targets.lambda_returns(rows.reward, search_value, rows.step_mask,
                                        rows.explored, td_lambda=td_lambda,
                                        cut_explored=selfplay_config.cut_explored)
  return rows._replace(policy_ids=ids, policy_weights=weights, search_value=search_value,
                       root_value=root_value, root_prior=prior, terminal_reached=reached,
                       terminal_on_pick=on_pick, value_target=value_target,
                       forward_tokens=spent.sum(1))


def learner_batch(setup, params, buffer: Buffer, traj: Trajectory, key: jax.Array,
                  iteration: int) -> tuple[Trajectory, Buffer, dict[str, Any]]:
  """One iteration's learner batch with replay (`setup`: the run's `run.Setup`): the fresh rows,
  then `replay.sample_old` rows drawn from the buffer (reanalyzed with the current network when
  `replay.reanalyze`) -> (batch, the buffer with the fresh rows written, the metrics row's replay
  keys). The first iteration draws from its own rows, so the batch has one shape from the start
  (nothing recompiles at the second)."""
  config = setup.config
  t0 = time.monotonic()
  first = int(buffer.written) == 0
  if first:
    buffer = add(buffer, traj, jnp.int32(iteration))
  row = {}
  old, played_at = sample(buffer, jax.random.fold_in(key, 1),
                          num=config.replay.sample_old or config.selfplay.batch_size)
  if config.replay.reanalyze:
    old = reanalyze(params, old, jax.random.fold_in(key, 2), setup.allowed, config=config.model,
                    search_config=config.search, selfplay_config=config.selfplay,
                    reward_fn=setup.reward_fn, eos_id=setup.tokenizer.eos_id)
    rewards.raise_pending()
    row["reanalyze_forward_tokens"] = int(old.forward_tokens.sum())
    old = selfplay.for_learner(old, found=config.optim.found_weight > 0)
  if not first:
    buffer = add(buffer, traj, jnp.int32(iteration))
  row.update(replay_rows=min(int(buffer.written), buffer.capacity),
             # How many iterations old the drawn rows are, on average.
             replay_age=float(iteration - np.mean(np.asarray(played_at))),
             replay_s=round(time.monotonic() - t0, 3))
  return concat(traj, old), buffer, row
