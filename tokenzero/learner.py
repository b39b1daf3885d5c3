"""Learner: distil the search policy and the returns into the network with optax.

loss = cross-entropy(search policy, network policy) + value_loss_weight * (value - target)^2
(the target: the return, or what `Trajectory.value_target` holds, tokenzero/targets.py),
both averaged over the steps where a decision was taken, + anchor_weight * the next-token loss
on a batch of demonstrations when an anchor batch is given (`demos.lm_loss`: fresh data that
keeps a model trained on its own outputs close to real text), + found_weight * the next-token
loss on the best answers the searches verified (`Trajectory.found`) that scored at least
`found_min_reward` (expert iteration beside AlphaZero's targets: a found answer is taught
whole, where the improved policy only tilts each step toward it). The optimizer is optax's AdamW
behind global-norm clipping, with warmup + cosine decay, wrapped in `optax.apply_if_finite` so
that a non-finite gradient skips the update (and is counted) instead of poisoning the params.

On a device mesh (`tokenzero.mesh`) the learner is data-parallel: the trajectories are split
over the data devices and the loss is a mean over the global batch, so jit all-reduces the
gradient; params and optimizer state keep the mesh's layout (replicated, or FSDP-split).

Dimension letters: B batch, T answer steps, K candidates, V vocab.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from tokenzero import mesh as mesh_lib
from tokenzero import model as model_lib
from tokenzero.config import ModelConfig, OptimConfig
from tokenzero.demos import DemoBatch, lm_loss
from tokenzero.selfplay import Trajectory


class LossInfo(NamedTuple):
  loss: jax.Array  # []
  loss_policy: jax.Array  # []
  loss_value: jax.Array  # []
  policy_entropy: jax.Array  # [] entropy of the network policy on the trained steps
  loss_anchor: jax.Array  # [] LM loss on the anchor demonstrations (0 without them)
  loss_kl: jax.Array  # [] KL(policy || reference) on the trained steps (0 without one)
  loss_found: jax.Array  # [] LM loss on the found answers (0 without them)


class TrainMetrics(NamedTuple):
  loss: jax.Array  # [steps]
  loss_policy: jax.Array  # [steps]
  loss_value: jax.Array  # [steps]
  policy_entropy: jax.Array  # [steps]
  grad_norm: jax.Array  # [steps]
  skipped: jax.Array  # [steps] bool: update skipped for a non-finite gradient
  loss_anchor: jax.Array  # [steps]
  loss_kl: jax.Array  # [steps]
  loss_found: jax.Array  # [steps]


@functools.lru_cache(maxsize=16)  # the same object for the same config: jit caches hit.
def make_optimizer(config: OptimConfig, total_steps: int) -> optax.GradientTransformation:
  total_steps = config.decay_steps or total_steps
  total_steps = max(total_steps, config.warmup_steps + 1)
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=config.warmup_steps,
      decay_steps=total_steps,
      end_value=config.learning_rate * config.final_learning_rate_fraction)
  inner = optax.chain(
      optax.clip_by_global_norm(config.grad_clip),
      optax.adamw(schedule, weight_decay=config.weight_decay))
  # The count of consecutive skips lives in the state; the loop stops a run that keeps failing.
  return optax.apply_if_finite(inner, max_consecutive_errors=1_000_000)


def step_outputs(params, config: ModelConfig, traj: Trajectory):
  """Network logits [B, T, V] and values [B, T] at every decision state of the trajectories."""
  out = model_lib.forward(params, config, traj.tokens)
  steps = jnp.arange(traj.policy_ids.shape[1])
  positions = traj.prompt_len[:, None] - 1 + steps[None, :]  # state before answer token t
  positions = jnp.minimum(positions, traj.tokens.shape[1] - 1)
  logits = jnp.take_along_axis(out.logits, positions[:, :, None], axis=1)
  value = jnp.take_along_axis(out.value, positions, axis=1)
  return logits, value


class LossWeights(NamedTuple):
  """How much each term counts beside the policy cross-entropy (weight 1). Traced: changing a
  weight never recompiles."""
  value: float | jax.Array  # []
  anchor: float | jax.Array = 0.0  # [] next-token loss on the anchor demonstrations
  kl: float | jax.Array = 0.0  # [] KL(policy || reference)
  found: float | jax.Array = 0.0  # [] next-token loss on the found answers
  found_min_reward: float | jax.Array = 1.0  # [] a found answer is taught from this reward

  @classmethod
  def from_config(cls, config: OptimConfig) -> LossWeights:
    return cls(value=config.value_loss_weight, anchor=config.anchor_weight,
               kl=config.kl_weight, found=config.found_weight,
               found_min_reward=config.found_min_reward)


def found_demos(traj: Trajectory, min_reward: float | jax.Array) -> DemoBatch:
  """The found answers as demonstrations [B, P + T]: each row's prompt, then its found answer;
  completion tokens are targets on rows whose found answer scored at least `min_reward`."""
  cols = jnp.arange(traj.tokens.shape[1])[None, :]
  start = traj.prompt_len[:, None]
  answer = jnp.take_along_axis(traj.found, jnp.clip(cols - start, 0, traj.found.shape[1] - 1),
                               axis=1)
  in_answer = (cols >= start) & (cols < start + traj.found_len[:, None])
  tokens = jnp.where(in_answer, answer, traj.tokens)  # the prompt before it stays as played
  taught = (traj.found_reward >= min_reward)[:, None]
  return DemoBatch(tokens=tokens.astype(traj.tokens.dtype), target_mask=in_answer & taught)


def loss_fn(params, traj: Trajectory, *, config: ModelConfig, weights: LossWeights,
            anchor: DemoBatch | None = None, reference=None) -> tuple[jax.Array, LossInfo]:
  """The learner's loss on a batch of trajectories -> (loss [], its terms)."""
  logits, value = step_outputs(params, config, traj)
  log_probs = jax.nn.log_softmax(logits, axis=-1)  # [B, T, V]
  target_log_probs = jnp.take_along_axis(log_probs, traj.policy_ids, axis=-1)  # [B, T, K]
  policy_ce = -jnp.sum(traj.policy_weights * target_log_probs, axis=-1)  # [B, T]
  mask = traj.step_mask.astype(jnp.float32)
  denom = jnp.maximum(mask.sum(), 1.0)
  loss_policy = jnp.sum(policy_ce * mask) / denom
  value_target = traj.reward[:, None] if traj.value_target is None else traj.value_target
  value_err = (value - jax.lax.stop_gradient(value_target)) ** 2
  loss_value = jnp.sum(value_err * mask) / denom
  entropy = -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)
  loss_anchor = lm_loss(params, config, anchor) if anchor is not None else jnp.zeros(())
  loss_kl = jnp.zeros(())
  if reference is not None:  # KL(policy || reference) on the same decision states.
    ref_logits, _ = step_outputs(jax.lax.stop_gradient(reference), config, traj)
    ref_log_probs = jax.nn.log_softmax(ref_logits, axis=-1)
    kl = jnp.sum(jnp.exp(log_probs) * (log_probs - ref_log_probs), axis=-1)  # [B, T]
    loss_kl = jnp.sum(kl * mask) / denom
  # A found answer's rows only (traj.found is None unless optim.found_weight > 0: the second
  # forward is not paid for nothing).
  loss_found = (lm_loss(params, config, found_demos(traj, weights.found_min_reward))
                if traj.found is not None else jnp.zeros(()))
  loss = (loss_policy + weights.value * loss_value + weights.anchor * loss_anchor
          + weights.kl * loss_kl + weights.found * loss_found)
  return loss, LossInfo(loss=loss, loss_policy=loss_policy, loss_value=loss_value,
                        policy_entropy=jnp.sum(entropy * mask) / denom, loss_anchor=loss_anchor,
                        loss_kl=loss_kl, loss_found=loss_found)


@functools.partial(jax.jit, static_argnames=("config", "optimizer", "num_steps", "mesh"),
                   donate_argnums=(0, 1))
def train_steps(params, opt_state, traj: Trajectory, *, config: ModelConfig,
                optimizer: optax.GradientTransformation, num_steps: int, weights: LossWeights,
                anchor: DemoBatch | None = None, reference=None,
                mesh: mesh_lib.DeviceMesh | None = None):
  """`num_steps` optimizer steps on one batch of trajectories (pgx style: fresh data each
  iteration), and on one `anchor` batch of demonstrations when given. Returns new params,
  optimizer state and per-step `TrainMetrics`. `mesh`: params, gradients and optimizer state
  are held to its layout at every step (None: wherever jit puts them)."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  # Pinned, so that the donated buffers come back in the layout they went in (the next call
  # reuses this program), and under FSDP each device updates only its slice of every param.
  pin = (lambda tree: tree) if mesh is None else mesh.constrain_params

  def one_step(carry, _):
    params, opt_state = carry
    (_, info), grads = grad_fn(params, traj, config=config, weights=weights, anchor=anchor,
                               reference=reference)
    grads = pin(grads)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    params, new_opt_state = pin(optax.apply_updates(params, updates)), pin(new_opt_state)
    finite = new_opt_state.last_finite
    metrics = TrainMetrics(loss=info.loss, loss_policy=info.loss_policy,
                           loss_value=info.loss_value, policy_entropy=info.policy_entropy,
                           grad_norm=optax.tree.norm(grads), skipped=~finite,
                           loss_anchor=info.loss_anchor, loss_kl=info.loss_kl,
                           loss_found=info.loss_found)
    return (params, new_opt_state), metrics

  (params, opt_state), metrics = jax.lax.scan(one_step, (params, opt_state), None,
                                              length=num_steps)
  return params, opt_state, metrics
