"""The closed loop: self-play -> targets -> learner -> evaluation -> checkpoint, per iteration.

`train(config_or_setup, out_dir)` is what the CLI calls and what tests call; `run_iteration` is
one turn of the loop. The run directory's files are `tokenzero.rundir`'s.

Everything random derives from the seed and the iteration number (prompts from a numpy stream
keyed by (seed, iteration), JAX keys by `fold_in(seed key, iteration)`), so a resumed run
replays exactly what an uninterrupted one would have done.

Batches are global and split over the run's device mesh (`tokenzero.mesh`, `setup.mesh`): the
prompts and trajectories by rows, the train state in the mesh's parameter layout; the metrics
are computed from the whole batch, gathered. On several processes (`tokenzero.distributed`) the
mesh spans them all: each process draws and encodes only its own rows of the prompts, which
become one global batch, and the learner's mean over it reduces across the processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tokenzero import checkpoint as ckpt_lib
from tokenzero import compiles as compiles_lib
from tokenzero import config as config_lib
from tokenzero import curriculum as curriculum_lib
from tokenzero import demos as demos_lib
from tokenzero import diagnostics, distributed, evaluate, learner, plots, prompts, rewards, rundir
from tokenzero import mesh as mesh_lib
from tokenzero import replay as replay_lib
from tokenzero import selfplay
from tokenzero.config import ConfigError, RunConfig
from tokenzero.progress import progress_bar
from tokenzero.run import Setup, build, initial_params
from tokenzero.stopping import Interrupted, NonfiniteStreak, StopFlag, TrainingError
from tokenzero.stopping import agree_at_boundary


def temperature_at(config: RunConfig, iteration: int) -> float:
  frac = min(1.0, iteration / max(config.iterations, 1))
  sp = config.selfplay
  return sp.temperature + (sp.final_temperature - sp.temperature) * frac


@dataclasses.dataclass(frozen=True)
class Loop:
  """What stays fixed across the iterations of a run."""
  setup: Setup
  optimizer: optax.GradientTransformation
  eval_batch: prompts.PromptBatch  # the held-out prompts
  stream: prompts.PromptStream  # training prompts, disjoint from the held-out ones
  anchor_demos: demos_lib.DemoBatch | None  # optim.anchor_data, encoded
  reference: optax.Params | None  # the initial network, for the KL penalty
  curriculum: curriculum_lib.Curriculum | None = None  # task.curriculum's levels

  @property
  def config(self) -> RunConfig:
    return self.setup.config


def evaluate_now(loop: Loop, params) -> dict[str, float]:
  """Greedy (no search) reward and success on the held-out prompts."""
  setup = loop.setup
  result = evaluate.evaluate_greedy(
      params, loop.eval_batch.tokens, loop.eval_batch.lengths, setup.allowed,
      config=setup.config.model, reward_fn=setup.reward_fn, max_new_tokens=setup.max_new_tokens,
      eos_id=setup.tokenizer.eos_id, success_threshold=setup.config.task.success_threshold,
      mesh=setup.mesh)
  rewards.raise_pending()
  return {"eval_greedy_reward": float(result.reward.mean()),
          "eval_greedy_success": float(result.success.mean())}


def run_iteration(loop: Loop, state: ckpt_lib.TrainState, iteration: int, *,
                  size: int | None = None
                  ) -> tuple[ckpt_lib.TrainState, learner.TrainMetrics, dict[str, Any]]:
  """Self-play on fresh prompts, then the learner's steps on its targets -> (new state, the
  learner's per-step metrics, the iteration's metrics row without evaluation, elapsed_s and
  compiles). `size`: the curriculum level whose prompts it plays (None: the task's own)."""
  setup, config = loop.setup, loop.config
  key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), iteration)
  stream = loop.stream if size is None else loop.curriculum.levels[size].stream
  process = (distributed.process_index(), distributed.process_count())
  texts = stream.draw(iteration, config.selfplay.batch_size, process=process)
  batch = prompts.encode_batch(setup.tokenizer, texts, setup.task.prompt_len)
  mesh = setup.mesh
  t0 = time.monotonic()
  traj = selfplay.self_play(
      state.params, *mesh.place_process_rows((batch.tokens, batch.lengths)), key,
      jnp.float32(temperature_at(config, iteration)), setup.allowed, config=config.model,
      search_config=config.search, selfplay_config=config.selfplay, reward_fn=setup.reward_fn,
      max_new_tokens=setup.max_new_tokens, eos_id=setup.tokenizer.eos_id, mesh=mesh)
  traj = jax.block_until_ready(traj)
  with distributed.fail_together("with a reward error"):  # before the next collective
    rewards.raise_pending()
  t1 = time.monotonic()
  # Counted, not computed from the budget: rows end early, kept trees save expansions.
  forward_tokens = int(mesh_lib.to_host(traj.forward_tokens).sum())
  # What the searches found, beside what greedy decoding and self-play's sampling got.
  found_success = float(np.mean(mesh_lib.to_host(traj.found_reward)
                                >= config.task.success_threshold))
  traj = selfplay.for_learner(traj, found=config.optim.found_weight > 0)
  anchor = None
  if loop.anchor_demos is not None:  # its own stream, keyed like the prompts: resumable.
    picks = np.random.default_rng([config.seed, 3, iteration]).integers(
        0, loop.anchor_demos.tokens.shape[0],
        config.optim.anchor_batch_size or config.selfplay.batch_size)
    anchor = mesh.place_batch(demos_lib.take(loop.anchor_demos, picks))
  learn_on, buffer, replay_row = traj, state.replay, {}
  if buffer is not None:
    learn_on, buffer, replay_row = replay_lib.learner_batch(setup, state.params, buffer, traj,
                                                            key, iteration)
  t_learn = time.monotonic()
  params, opt_state, metrics = learner.train_steps(
      state.params, state.opt_state, learn_on, config=config.model, optimizer=loop.optimizer,
      num_steps=config.optim.steps_per_iteration,
      weights=learner.LossWeights.from_config(config.optim), anchor=anchor,
      reference=loop.reference, mesh=mesh)
  metrics = mesh_lib.to_host(metrics)
  t2 = time.monotonic()
  played = mesh_lib.to_host(traj)  # the global batch (every process's rows), for the metrics
  state = ckpt_lib.TrainState(params=params, opt_state=opt_state,
                              step=state.step + config.optim.steps_per_iteration,
                              iteration=jnp.int32(iteration), rng=state.rng, replay=buffer)
  finite = ~np.asarray(metrics.skipped)
  mean = lambda x: float(np.mean(np.asarray(x)[finite])) if finite.any() else None
  row = {
      "iteration": iteration,
      "elapsed_s": None,
      "selfplay_reward": float(played.reward.mean()),
      "selfplay_success": float((played.reward >= config.task.success_threshold).mean()),
      "loss_policy": mean(metrics.loss_policy),
      "loss_value": mean(metrics.loss_value),
      "policy_entropy": mean(metrics.policy_entropy),
      "grad_norm": mean(metrics.grad_norm),
      "nonfinite_updates": int((~finite).sum()),
      "search_value": float(played.search_value[:, 0].mean()),
      # Mean over the decisions that handed a tree on (not the last of an answer).
      "tree_kept_fraction": diagnostics.kept_fraction(played),
      **diagnostics.selfplay_diagnostics(played),
      "temperature": temperature_at(config, iteration),
      "selfplay_s": round(t1 - t0, 3),
      "selfplay_forward_tokens": forward_tokens,
      "found_success": found_success,
      "train_s": round(t2 - t_learn, 3),
      **replay_row,
  }
  if size is not None:
    row["curriculum_level"] = size
  if anchor is not None:
    row["loss_anchor"] = mean(metrics.loss_anchor)
  if loop.reference is not None:
    row["loss_kl"] = mean(metrics.loss_kl)
  if config.optim.found_weight > 0:
    row["loss_found"] = mean(metrics.loss_found)
  return state, metrics, row


def train(run: RunConfig | Setup, out_dir: str | Path, *, resume: bool = False,
          allow_config_change: bool = False, progress: bool = True,
          log: Callable[[str], None] = print,
          saved_config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
  """Runs (or resumes) a training run into `out_dir`; returns the metrics rows.

  `run` is a config, or the `Setup` already built from one (the CLI builds it first to check
  the user's reward, and the reward file is executed once per run). `saved_config`: the run's
  `config.json` when the caller has read it already (resuming).
  """
  setup = run if isinstance(run, Setup) else build(run)
  out_dir = Path(out_dir)
  with contextlib.ExitStack() as lock:
    with distributed.fail_together(f"to start the run in {out_dir}"):
      if distributed.is_writer():  # the run's one writer holds the lock; several processes
        lock.enter_context(rundir.RunLock(out_dir))  # are still one run.
    return _train_locked(setup, out_dir, resume=resume, allow_config_change=allow_config_change,
                         progress=progress, log=log, saved_config=saved_config)


def _start(setup: Setup, out_dir: Path, params: optax.Params, *, resume: bool,
           log: Callable[[str], None], checkpointer: ckpt_lib.Checkpointer,
           optimizer: optax.GradientTransformation, allow_config_change: bool = False):
  """The state to go on from (a fresh one from `params`, or the newest checkpoint's) and the
  metrics rows before it (a resumed run's)."""
  state = ckpt_lib.place(
      ckpt_lib.TrainState.create(params, optimizer, jax.random.key(setup.config.seed),
                                 replay=replay_lib.for_run(setup, params)),
      setup.mesh)
  if not resume:
    return state, []
  restored = checkpointer.restore_latest(state)
  if restored is None and (steps := checkpointer.steps()):
    raise TrainingError(
        f"none of the checkpoints {steps} in {checkpointer.directory} loads (see the "
        "warnings above); move them away to start the run over")
  if restored is None:
    log(f"no checkpoint in {checkpointer.directory} yet: starting from iteration 0")
    return state, []
  state, _ = restored
  iteration = int(state.iteration)
  distributed.check_topology(checkpointer.topology(iteration), distributed.Topology.current(),
                             allow_change=allow_config_change,
                             where=f"checkpoint {checkpointer.directory / str(iteration)}")
  rows = rundir.read_metrics(out_dir / rundir.METRICS_FILE, int(state.iteration))
  log(f"resumed from iteration {int(state.iteration)} in {out_dir}")
  if not rows:
    log(f"{out_dir / rundir.METRICS_FILE} has no rows up to iteration "
        f"{int(state.iteration)}; the checkpoint is good, so the run goes on without them")
  return state, rows


def _train_locked(setup: Setup, out_dir: Path, *, resume, allow_config_change, progress, log,
                  saved_config) -> list[dict[str, Any]]:
  config = setup.config
  config_dict = config_lib.to_dict(config)
  with distributed.fail_together(f"to start the run in {out_dir}"):
    distributed.local_share(config.selfplay.batch_size, "selfplay.batch_size")
    if distributed.is_writer():  # process 0 checks and writes the run's files.
      if resume:
        saved = saved_config if saved_config is not None else rundir.read_config(out_dir)
        rundir.check_resume(saved, config, allow_change=allow_config_change)
      else:
        rundir.check_fresh(out_dir)
      rundir.write_config(out_dir, config_dict)
  counter = compiles_lib.Counter()  # the first row written counts the set-up's compilations.

  optimizer = learner.make_optimizer(config.optim,
                                     config.iterations * config.optim.steps_per_iteration)
  anchor_demos = _anchor_demos(config, setup.tokenizer)
  checkpointer = ckpt_lib.Checkpointer(out_dir / "checkpoints", keep=config.keep_checkpoints,
                                       writer=True)
  try:
    params = initial_params(config)
    # The KL reference is the initial network, rebuilt from the seed (or init_from) on resume.
    # A copy: the first iteration donates `params` to the optimizer step.
    reference = (setup.mesh.place_params(jax.tree.map(jnp.copy, params))
                 if config.optim.kl_weight > 0 else None)
    state, rows = _start(setup, out_dir, params, resume=resume, log=log,
                         checkpointer=checkpointer, optimizer=optimizer,
                         allow_config_change=allow_config_change)
    eval_texts = prompts.eval_texts(setup.task, config.seed, config.eval.num_prompts,
                                    split=config.eval.split)
    curriculum = curriculum_lib.make(setup, eval_texts) if config.task.curriculum else None
    loop = Loop(setup=setup, optimizer=optimizer,
                eval_batch=prompts.encode_batch(setup.tokenizer, eval_texts,
                                                setup.task.prompt_len),
                stream=prompts.training_stream(setup.task, config.seed, split=config.eval.split,
                                               eval_texts=eval_texts),
                anchor_demos=anchor_demos, reference=reference, curriculum=curriculum)
    return _loop(loop, state, rows, out_dir, checkpointer, config_dict, counter,
                 progress=progress and distributed.is_writer(), log=log)
  finally:
    checkpointer.close()


def _loop(loop: Loop, state: ckpt_lib.TrainState, rows: list[dict[str, Any]], out_dir: Path,
          checkpointer: ckpt_lib.Checkpointer, config_dict: dict[str, Any],
          counter: compiles_lib.Counter, *, progress: bool,
          log: Callable[[str], None]) -> list[dict[str, Any]]:
  """Iterations up to `config.iterations`, one metrics row each.

  A row's `compiles` counts the XLA compilations (persistent-cache loads included) since the
  previous row was written: the iteration's self-play, learner and evaluation, and the previous
  iteration's checkpoint (saved after its row); the first row a process writes also counts the
  set-up. Past the first iteration it is 0, unless some input changed shape or type.
  """
  config = loop.config
  metrics_path = out_dir / rundir.METRICS_FILE
  elapsed_before = rows[-1]["elapsed_s"] if rows else 0.0
  started = time.monotonic()
  elapsed = lambda: round(elapsed_before + time.monotonic() - started, 3)

  writer = distributed.is_writer()  # process 0 writes the files; every process keeps the rows.

  def append(row):
    row["compiles"] = counter.lap()
    rows.append(row)
    if writer:
      rundir.append_metrics(metrics_path, row)

  curriculum = loop.curriculum
  if writer:
    rundir.write_metrics(metrics_path, rows)  # drop rows past the checkpoint we resumed from.
  if int(state.iteration) == 0 and not rows:
    with distributed.fail_together("with a reward error"):
      row = {"iteration": 0, "elapsed_s": elapsed(), "selfplay_reward": None,
             "loss_policy": None, "loss_value": None, **evaluate_now(loop, state.params)}
      if curriculum is not None:
        row.update(curriculum_lib.row(loop.setup, state.params, curriculum, curriculum.start))
    append(row)
    checkpointer.save(state, config_dict)
  elif curriculum is not None and not rows:
    log(f"the curriculum's level is not in the metrics rows: it starts again at size "
        f"{curriculum.start}")

  start_iteration = int(state.iteration)
  deadline = time.monotonic() + config.minutes * 60 if config.minutes > 0 else math.inf
  stop_reason = None
  saved_iteration = start_iteration
  streak = NonfiniteStreak()
  with StopFlag() as stop, progress_bar("iteration", enabled=progress) as bar:
    bar_task = bar.add_task("", total=config.iterations, completed=start_iteration, status="")
    for iteration in range(start_iteration + 1, config.iterations + 1):
      first_step = int(state.step) + 1
      size = curriculum.size_after(rows) if curriculum is not None else None
      state, metrics, row = run_iteration(loop, state, iteration, size=size)
      streak.update(metrics, first_step)
      if iteration % config.eval.every == 0 or iteration == config.iterations:
        with distributed.fail_together("with a reward error"):
          row.update(evaluate_now(loop, state.params))
          row["reward_gap"] = diagnostics.reward_gap(row)
          if size is not None:
            row.update(curriculum_lib.row(loop.setup, state.params, curriculum, size))
      row["elapsed_s"] = elapsed()
      append(row)
      bar.update(bar_task, completed=iteration, status=(
          f"selfplay {row['selfplay_reward']:.3f} greedy success "
          f"{row.get('eval_greedy_success', float('nan')):.3f}"))
      # Every process decides the same (one all-gather): no process waits for another below.
      boundary = agree_at_boundary(stop, streak, out_of_time=time.monotonic() >= deadline,
                                   max_nonfinite=config.optim.max_nonfinite_updates,
                                   minutes=config.minutes)
      if boundary.failure:
        raise TrainingError(
            f"stopping at iteration {iteration}: {boundary.failure}; the last good "
            f"checkpoint, iteration {saved_iteration}, is in {checkpointer.directory}")
      last = iteration == config.iterations
      stop_reason = boundary.stop_reason
      # Never checkpoint params from a streak of skipped updates: they may be what fails.
      if not boundary.skipping and (last or stop_reason
                                    or iteration % config.checkpoint_every == 0):
        checkpointer.save(state, config_dict)
        saved_iteration = iteration
      if stop_reason:
        break
  if writer:
    plots.learning_curve(rows, out_dir / "learning_curve.png", title=f"{loop.setup.task.name}")
  if stop_reason:
    message = (f"stopped after iteration {int(state.iteration)} ({stop_reason}); the newest "
               f"checkpoint is iteration {saved_iteration}. Resume with: tokenzero train "
               f"--out {out_dir} --resume")
    if boundary.signum:
      raise Interrupted(message, signum=boundary.signum)
    log(message)
  elif saved_iteration != int(state.iteration):
    log(f"the last updates were skipped as non-finite: the newest checkpoint is iteration "
        f"{saved_iteration}, not {int(state.iteration)}")
  return rows


def _anchor_demos(config: RunConfig, tokenizer) -> demos_lib.DemoBatch | None:
  """The encoded `optim.anchor_data` demos (None without an anchor), checked before any
  compile."""
  if config.optim.anchor_weight == 0:
    return None
  try:
    return demos_lib.encode_demos(tokenizer, demos_lib.read_demos(config.optim.anchor_data),
                                  context=config.model.context)
  except demos_lib.DemoError as err:
    raise ConfigError(f"optim.anchor_data: {err}") from None
