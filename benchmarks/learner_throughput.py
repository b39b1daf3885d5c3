"""Optimizer steps per second of tokenzero's learner against a plain optax loop on the same
model, batch and loss: the floor the learner must not fall below (issue 13: >= 0.9x).

- `tokenzero`: `learner.train_steps` as `loop.run_iteration` calls it: `steps_per_iteration`
  steps in one jitted `lax.scan` with params and optimizer state donated, the optimizer from
  `learner.make_optimizer` (global-norm clipping + AdamW with warmup-cosine, behind
  `optax.apply_if_finite`), `LossWeights.from_config`, and the per-step `TrainMetrics` fetched
  to the host after each call (the loop does too).
- `plain_scan`: the same steps written the plain way: the Flax model's `apply`, policy
  cross-entropy to the search policy's (id, weight) pairs + value MSE over the decision steps,
  `optax.chain(clip_by_global_norm, adamw)` with the same schedule, no non-finite guard, no
  metrics, the same `steps_per_iteration` steps in one jitted `lax.scan` (donated) that returns
  the last loss.
- `plain_step`: the textbook loop: a jitted (donated) step called from Python once per step.

The floor is the faster of the two plain loops; `ratio` = tokenzero / floor. The three start
from the same params and see the same batch, so after the first (warm-up) call their params
must agree (`max_abs_param_diff`: the loops compute the same updates). Then `--repeats` calls
of each, interleaved (same machine load), each timed to `block_until_ready`; the median call
gives steps/s = steps_per_iteration / seconds. FLOPs per step are XLA's cost analysis of one
compiled step of each (tokenzero: `num_steps=1`).

The batch is a synthetic `Trajectory` of the run's shapes: B = selfplay.batch_size prompts of
the task's P tokens (all full length), a T-token answer, K = the search's candidates, random
distinct candidate ids with softmax weights, answers of random length (`step_mask`), rewards
in [0, 1]. Cases: the default run's model and batch (experiments/sort.toml: sort 5 digits,
2 layers, d=64, B = 256) and, unless `--no-big`, the same task with a 6-layer d=384 model at
B = `--big-batch` (32: at 256 one step takes ~8 s on the 2-core machine).

Each call is timed on the wall clock (steps/s, `ratio`) and on this process's CPU clock, all
threads (`ratio_cpu` = floor's CPU seconds per step / tokenzero's): on a machine shared with
other jobs the CPU clock is the steadier of the two. The load average before and after is saved.

  python benchmarks/learner_throughput.py [--json benchmarks/learner_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from tokenzero import learner, run
from tokenzero import config as config_lib
from tokenzero import model as model_lib
from tokenzero import search as search_lib
from tokenzero.selfplay import Trajectory

DEFAULT_RUN = Path(__file__).resolve().parent.parent / "experiments" / "sort.toml"
BIG = ("model.num_layers=6", "model.d_model=384", "model.num_heads=6")
VARIANTS = ("tokenzero", "plain_scan", "plain_step")


def synthetic_trajectory(*, batch: int, prompt_len: int, answer_len: int, vocab: int,
                         candidates: int, key: jax.Array) -> Trajectory:
  """A batch of the shapes self-play returns, random contents (the loss does not care)."""
  token_key, id_key, weight_key, length_key, reward_key = jax.random.split(key, 5)
  tokens = jax.random.randint(token_key, (batch, prompt_len + answer_len), 3, vocab)
  # K distinct ids per step, as the search's top-K candidates are.
  order = jnp.argsort(jax.random.uniform(id_key, (batch, answer_len, vocab)), axis=-1)
  policy_ids = order[..., :candidates].astype(jnp.int32)  # [B, T, K]
  policy_weights = jax.nn.softmax(
      2.0 * jax.random.normal(weight_key, (batch, answer_len, candidates)), axis=-1)
  completion_len = jax.random.randint(length_key, (batch,), 1, answer_len + 1)
  step_mask = jnp.arange(answer_len)[None, :] < completion_len[:, None]  # [B, T]
  zeros = jnp.zeros((batch, answer_len), jnp.float32)
  return Trajectory(
      prompt=tokens[:, :prompt_len], prompt_len=jnp.full((batch,), prompt_len, jnp.int32),
      tokens=tokens, completion=tokens[:, prompt_len:], completion_len=completion_len,
      policy_ids=policy_ids, policy_weights=policy_weights, step_mask=step_mask,
      reward=jax.random.uniform(reward_key, (batch,)), search_value=zeros, root_value=zeros,
      tree_kept=zeros)


def plain_loss(params, traj: Trajectory, config) -> jax.Array:
  """Policy cross-entropy + value MSE at the decision states, written out without the
  learner's helpers: the loss any AlphaZero learner computes."""
  batch, length = traj.tokens.shape
  positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
  out, _ = model_lib.Transformer(config).apply({"params": params}, traj.tokens, positions)
  answer_len = traj.policy_ids.shape[1]
  state = traj.prompt_len[:, None] - 1 + jnp.arange(answer_len)[None, :]  # [B, T]
  logits = jnp.take_along_axis(out.logits, state[:, :, None], axis=1)  # [B, T, V]
  value = jnp.take_along_axis(out.value, state, axis=1)  # [B, T]
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  policy_ce = -jnp.sum(traj.policy_weights
                       * jnp.take_along_axis(log_probs, traj.policy_ids, axis=-1), axis=-1)
  mask = traj.step_mask.astype(jnp.float32)
  count = jnp.maximum(mask.sum(), 1.0)
  value_err = (value - traj.reward[:, None]) ** 2
  return jnp.sum(policy_ce * mask) / count + jnp.sum(value_err * mask) / count


def plain_optimizer(optim, total_steps: int) -> optax.GradientTransformation:
  """`make_optimizer`'s chain and schedule, without the non-finite guard."""
  total_steps = max(optim.decay_steps or total_steps, optim.warmup_steps + 1)
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim.learning_rate, warmup_steps=optim.warmup_steps,
      decay_steps=total_steps, end_value=optim.learning_rate * optim.final_learning_rate_fraction)
  return optax.chain(optax.clip_by_global_norm(optim.grad_clip),
                     optax.adamw(schedule, weight_decay=optim.weight_decay))


def make_plain(config, optimizer, num_steps: int):
  """(one jitted step, a jitted scan of `num_steps` steps), both donating params and state."""
  def step(params, opt_state, traj):
    loss, grads = jax.value_and_grad(plain_loss)(params, traj, config)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def steps(params, opt_state, traj):
    def body(carry, _):
      params, opt_state, _ = carry
      return step(params, opt_state, traj), None
    carry, _ = jax.lax.scan(body, (params, opt_state, jnp.zeros(())), None, length=num_steps)
    return carry

  return (jax.jit(step, donate_argnums=(0, 1)), jax.jit(steps, donate_argnums=(0, 1)))


def _copy(tree):
  return jax.tree.map(jnp.copy, tree)


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


def bench_case(label: str, setup: run.Setup, *, batch: int, repeats: int, flops: bool) -> dict:
  config = setup.config
  model_config, optim = config.model, config.optim
  num_steps = optim.steps_per_iteration
  total_steps = config.iterations * num_steps  # what loop.train gives make_optimizer
  candidates = search_lib.num_candidates(config.search, model_config.vocab_size)
  traj = synthetic_trajectory(batch=batch or config.selfplay.batch_size,
                              prompt_len=setup.task.prompt_len, answer_len=setup.max_new_tokens,
                              vocab=model_config.vocab_size, candidates=candidates,
                              key=jax.random.key(1))
  params = model_lib.init_params(model_config, jax.random.key(0))
  tz_optimizer = learner.make_optimizer(optim, total_steps)
  weights = learner.LossWeights.from_config(optim)
  optimizer = plain_optimizer(optim, total_steps)
  plain_step, plain_scan = make_plain(model_config, optimizer, num_steps)

  def tokenzero_call(state):
    params, opt_state, metrics = learner.train_steps(
        *state, traj, config=model_config, optimizer=tz_optimizer, num_steps=num_steps,
        weights=weights)
    jax.device_get(metrics)
    return jax.block_until_ready((params, opt_state))

  def plain_scan_call(state):
    params, opt_state, _ = jax.block_until_ready(plain_scan(*state, traj))
    return params, opt_state

  def plain_step_call(state):
    for _ in range(num_steps):
      params, opt_state, _ = plain_step(*state, traj)
      state = (params, opt_state)
    return jax.block_until_ready(state)

  calls = {"tokenzero": tokenzero_call, "plain_scan": plain_scan_call,
           "plain_step": plain_step_call}
  states = {"tokenzero": (_copy(params), tz_optimizer.init(params))}
  for name in ("plain_scan", "plain_step"):
    states[name] = (_copy(params), optimizer.init(params))
  row = {"case": label, "num_layers": model_config.num_layers, "d_model": model_config.d_model,
         "num_heads": model_config.num_heads, "vocab_size": model_config.vocab_size,
         "batch": traj.tokens.shape[0], "sequence": traj.tokens.shape[1],
         "answer_len": traj.policy_ids.shape[1], "candidates": candidates,
         "steps_per_call": num_steps, "num_params": model_lib.num_params(params)}
  for name in VARIANTS:  # the first call compiles: timed apart, not counted.
    t0 = time.perf_counter()
    states[name] = calls[name](states[name])
    row[name] = {"first_call_s": round(time.perf_counter() - t0, 2), "seconds": [],
                 "cpu_seconds": []}
  ref = jax.tree.leaves(states["tokenzero"][0])
  row["max_abs_param_diff"] = {
      name: max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(ref, jax.tree.leaves(
          states[name][0]))) for name in ("plain_scan", "plain_step")}

  if flops:
    one = learner.train_steps.lower(
        params, tz_optimizer.init(params), traj, config=model_config, optimizer=tz_optimizer,
        num_steps=1, weights=weights).compile()
    row["tokenzero"]["flops_per_step"] = _flops(one)
    plain_flops = _flops(plain_step.lower(params, optimizer.init(params), traj).compile())
    row["plain_scan"]["flops_per_step"] = row["plain_step"]["flops_per_step"] = plain_flops

  for repeat in range(repeats):
    # Interleaved, and in a rotating order: no variant always follows the same one.
    for name in VARIANTS[repeat % 3:] + VARIANTS[:repeat % 3]:
      t0, cpu0 = time.perf_counter(), time.process_time()
      states[name] = calls[name](states[name])
      row[name]["seconds"].append(time.perf_counter() - t0)
      row[name]["cpu_seconds"].append(time.process_time() - cpu0)
  for name in VARIANTS:
    seconds = statistics.median(row[name]["seconds"])
    row[name]["steps_per_s"] = num_steps / seconds
    # CPU time of this process (all its threads): less swayed than wall time by other jobs.
    row[name]["cpu_s_per_step"] = statistics.median(row[name]["cpu_seconds"]) / num_steps
    if "flops_per_step" in row[name]:
      row[name]["gflops_per_s"] = row[name]["steps_per_s"] * row[name]["flops_per_step"] / 1e9
  floor = max(("plain_scan", "plain_step"), key=lambda n: row[n]["steps_per_s"])
  row["floor"] = floor
  row["ratio"] = row["tokenzero"]["steps_per_s"] / row[floor]["steps_per_s"]
  row["ratio_vs_plain_scan"] = row["tokenzero"]["steps_per_s"] / row["plain_scan"]["steps_per_s"]
  row["ratio_vs_plain_step"] = row["tokenzero"]["steps_per_s"] / row["plain_step"]["steps_per_s"]
  row["ratio_cpu"] = row[floor]["cpu_s_per_step"] / row["tokenzero"]["cpu_s_per_step"]
  row["check"] = "pass" if row["ratio"] >= 0.9 else "FAIL"
  flops = " ".join(f"{row[n].get('flops_per_step', float('nan')) / 1e9:>7.2f}"
                   for n in ("tokenzero", "plain_step"))
  print(f"{label:>8} {row['num_layers']:>2} {row['d_model']:>4} {row['batch']:>4} "
        + " ".join(f"{row[n]['steps_per_s']:>10.2f}" for n in VARIANTS)
        + f" {row['ratio']:>6.3f} {row['check']:>5} {row['ratio_cpu']:>6.3f} {flops} "
        + f"{max(row['max_abs_param_diff'].values()):>9.1e}", flush=True)
  return row


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", help="where to save the results")
  parser.add_argument("--config", default=str(DEFAULT_RUN), help="the run whose shapes to use")
  parser.add_argument("--batch", type=int, default=0, help="0: the run's selfplay.batch_size")
  parser.add_argument("--repeats", type=int, default=9)
  parser.add_argument("--big-repeats", type=int, default=5)
  parser.add_argument("--big-batch", type=int, default=32,
                      help="the big model's batch (0: the run's; 256 takes ~8 s a step here)")
  parser.add_argument("--no-big", action="store_true", help="skip the 6-layer d=384 model")
  parser.add_argument("--no-flops", action="store_true", help="skip XLA's FLOP counts")
  args = parser.parse_args(argv)

  load_before = os.getloadavg()
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs, "
        f"load average {load_before[0]:.2f}; run shapes from {args.config}")
  print(f"{'case':>8} {'Y':>2} {'M':>4} {'B':>4} {'steps/s:':>10} {'':>10} {'':>10} "
        f"{'ratio':>6} {'>=0.9':>5} {'ratio':>6} {'GFLOP/step':>15} {'param':>9}")
  print(f"{'':>8} {'':>2} {'':>4} {'':>4} " + " ".join(f"{n:>10}" for n in VARIANTS)
        + f" {'':>6} {'':>5} {'(cpu)':>6} {'tz':>7} {'plain':>7} {'diff':>9}", flush=True)
  cases = [("default", ())] + ([] if args.no_big else [("big", BIG)])
  rows = []
  for label, overrides in cases:
    setup = run.build(config_lib.resolve(args.config, overrides))
    big = label == "big"
    rows.append(bench_case(label, setup, batch=args.big_batch if big else args.batch,
                           repeats=args.big_repeats if big else args.repeats,
                           flops=not args.no_flops))
  result = {"benchmark": "learner_throughput", "config": Path(args.config).name,
            "jax": jax.__version__, "optax": optax.__version__,
            "device": jax.devices()[0].device_kind, "platform": platform.machine(),
            "cpu_count": os.cpu_count(), "load_average_before": load_before,
            "load_average_after": os.getloadavg(), "rows": rows}
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
    print(f"saved {args.json}")
  return result


if __name__ == "__main__":
  main()
