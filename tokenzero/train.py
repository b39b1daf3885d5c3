"""The closed loop: self-play -> targets -> learner -> evaluation -> checkpoint, per iteration.

`train(config, out_dir)` is what the CLI calls and what tests call. A run directory holds
`config.json` (resolved), `metrics.jsonl` (one row per iteration; row 0 evaluates the initial
network), `checkpoints/<iteration>/` (orbax) and `learning_curve.png`.

Everything random derives from the seed and the iteration number (prompts from a numpy stream
keyed by (seed, iteration), JAX keys by `fold_in(seed key, iteration)`), so a resumed run
replays exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
import types
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from tokenzero import checkpoint as ckpt_lib
from tokenzero import config as config_lib
from tokenzero import evaluate, learner, plots, prompts, rewards, selfplay
from tokenzero import demos as demos_lib
from tokenzero import model as model_lib
from tokenzero.config import ConfigError, RunConfig
from tokenzero.progress import progress_bar
from tokenzero.tokenizer import answer_mask
from tokenzero.tasks import Task, make_task, task_token_reward

# Keys that may change when a run is resumed: they say how long to go on, not what to train.
RESUMABLE_KEYS = ("iterations", "minutes")


class TrainingError(RuntimeError):
  """The run cannot go on (non-finite updates, a failing reward...). Checkpoints are kept."""


class Interrupted(Exception):
  """SIGINT or SIGTERM stopped the run at an iteration boundary; the message says how to resume."""

  def __init__(self, message: str, *, signum: int):
    super().__init__(message)
    self.signum = signum


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything derived from a `RunConfig` before any compile."""
  config: RunConfig  # with model.vocab_size and model.context filled in
  task: Task
  max_new_tokens: int
  reward_fn: Callable
  allowed: Any  # [V] bool

  @property
  def tokenizer(self):
    return self.task.tokenizer


def build(config: RunConfig, task: Task | None = None) -> Setup:
  """Resolves derived values and checks the config against the task; raises ConfigError."""
  if config.init_from:
    config = _from_pretrained(config)
  task = task or make_task(config.task.name, config.task.params)
  tokenizer = task.tokenizer
  max_new_tokens = config.task.max_new_tokens or task.max_new_tokens
  model = config.model
  # A checkpoint's embedding may be padded past its tokenizer (Qwen2): the extra ids are banned.
  if model.vocab_size and model.vocab_size != tokenizer.vocab_size and not (
      config.init_from and model.vocab_size > tokenizer.vocab_size):
    raise ConfigError(f"model.vocab_size={model.vocab_size} but the task's tokenizer has "
                      f"{tokenizer.vocab_size} tokens; leave it 0 to take the tokenizer's")
  needed = task.prompt_len + max_new_tokens
  if model.context and model.context < needed:
    raise ConfigError(f"model.context={model.context} is shorter than prompt + answer "
                      f"({task.prompt_len} + {max_new_tokens} = {needed} tokens)")
  if config.search.top_k > tokenizer.vocab_size:
    raise ConfigError(f"search.top_k={config.search.top_k} is larger than the vocabulary "
                      f"({tokenizer.vocab_size} tokens): give at most {tokenizer.vocab_size}, "
                      "or 0 for 16 candidates (the whole vocabulary when smaller)")
  model = dataclasses.replace(model, vocab_size=model.vocab_size or tokenizer.vocab_size,
                              context=model.context or needed)
  config = dataclasses.replace(config, model=model)
  validate(config)
  allowed = jnp.asarray(answer_mask(tokenizer, model.vocab_size))
  return Setup(config, task, max_new_tokens, task_token_reward(task), allowed)


def _from_pretrained(config: RunConfig) -> RunConfig:
  """`init_from`: the model section comes from the checkpoint's config.json (only model.dtype
  stays the user's), and the prompts task's tokenizer is the checkpoint's."""
  from tokenzero import hf  # pylint: disable=import-outside-toplevel
  path = config.init_from
  if not hf.is_hf_dir(path):
    raise ConfigError(f"init_from={path!r} is not an HF model directory (config.json of a "
                      f"{', '.join(hf.ARCHITECTURES)}, safetensors weights, tokenizer.json)")
  try:
    loaded = hf.config_from_hf(hf.read_json(Path(path) / "config.json"),
                               dtype=config.model.dtype)
  except hf.HFError as err:
    raise ConfigError(f"init_from: {err}") from None
  default = config_lib.ModelConfig()
  clashes = [f"model.{f.name}={getattr(config.model, f.name)!r}"
             for f in dataclasses.fields(loaded) if f.name != "dtype"
             and getattr(config.model, f.name) not in (getattr(default, f.name),
                                                       getattr(loaded, f.name))]
  if clashes:
    raise ConfigError(f"init_from takes the model's shape from {path}: leave "
                      f"{', '.join(clashes)} unset (only model.dtype may be set)")
  if config.task.name != "prompts":
    raise ConfigError(f"init_from needs the prompts task, whose prompts the checkpoint's "
                      f"tokenizer encodes (task {config.task.name!r} has a tokenizer of its "
                      f"own): tokenzero train --init-from {path} --prompts FILE --reward "
                      "FILE.py:FUNCTION")
  spec = f"hf:{path}"
  given = config.task.params.get("tokenizer_spec", "")
  if given not in ("", spec):
    raise ConfigError(f"task.params.tokenizer_spec={given!r}: with init_from the tokenizer is "
                      f"the checkpoint's ({spec!r}); leave it unset")
  task = dataclasses.replace(config.task, params=types.MappingProxyType(
      {**config.task.params, "tokenizer_spec": spec}))
  return dataclasses.replace(config, model=loaded, task=task)


def validate(config: RunConfig) -> None:
  """Impossible values, caught before anything compiles."""
  checks = [
      (config.iterations >= 0, "iterations must be >= 0"),
      (config.minutes >= 0, "minutes must be >= 0"),
      (config.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
      (config.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
      (config.model.num_layers >= 1, "model.num_layers must be >= 1"),
      (config.model.d_model % config.model.num_heads == 0 or config.model.head_dim > 0,
       "model.d_model must be divisible by model.num_heads"),
      (config.model.num_heads % config.model.kv_heads == 0,
       "model.num_heads must be a multiple of model.num_kv_heads"),
      (config.search.num_simulations >= 1, "search.num_simulations must be >= 1"),
      (config.search.top_k >= 0, "search.top_k must be >= 0 (0: 16, or the vocabulary when "
       "smaller)"),
      (config.search.max_depth >= 0, "search.max_depth must be >= 0"),
      (config.search.algorithm in ("gumbel", "puct"),
       f"search.algorithm must be 'gumbel' or 'puct', got {config.search.algorithm!r}"),
      (config.selfplay.batch_size >= 1, "selfplay.batch_size must be >= 1"),
      (config.selfplay.temperature >= 0,
       f"selfplay.temperature must be >= 0, got {config.selfplay.temperature}"),
      (config.selfplay.final_temperature >= 0,
       f"selfplay.final_temperature must be >= 0, got {config.selfplay.final_temperature}"),
      (0.0 <= config.selfplay.random_action_prob <= 1.0,
       "selfplay.random_action_prob must be in [0, 1]"),
      (config.selfplay.action_selection in ("sample", "search"),
       "selfplay.action_selection must be 'sample' or 'search'"),
      (config.optim.learning_rate > 0, "optim.learning_rate must be > 0"),
      (config.optim.steps_per_iteration >= 1, "optim.steps_per_iteration must be >= 1"),
      (config.optim.max_nonfinite_updates >= 1, "optim.max_nonfinite_updates must be >= 1"),
      (config.optim.anchor_weight >= 0, "optim.anchor_weight must be >= 0"),
      (config.optim.anchor_weight == 0 or bool(config.optim.anchor_data),
       "optim.anchor_weight > 0 needs optim.anchor_data (a JSONL file of "
       "{\"prompt\", \"completion\"} demonstrations)"),
      (config.optim.anchor_batch_size >= 0, "optim.anchor_batch_size must be >= 0"),
      (config.optim.kl_weight >= 0, "optim.kl_weight must be >= 0"),
      (config.eval.num_prompts >= 1, "eval.num_prompts must be >= 1"),
      (config.eval.every >= 1, "eval.every must be >= 1"),
      (config.model.dtype in ("float32", "bfloat16"), "model.dtype must be float32 or bfloat16"),
  ]
  for ok, message in checks:
    if not ok:
      raise ConfigError(message)


def temperature_at(config: RunConfig, iteration: int) -> float:
  frac = min(1.0, iteration / max(config.iterations, 1))
  sp = config.selfplay
  return sp.temperature + (sp.final_temperature - sp.temperature) * frac


def _read_metrics(path: Path, upto: int) -> list[dict[str, Any]]:
  if not path.exists():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      break  # a line cut by a crash: everything after it is redone anyway.
    if row.get("iteration", math.inf) <= upto:
      rows.append(row)
  return rows


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
  tmp = path.with_suffix(".tmp")
  tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
  tmp.replace(path)


class _StopFlag:
  """SIGINT/SIGTERM ask the loop to stop at the next iteration boundary."""

  def __init__(self):
    self.signal_name: str | None = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: signals stay as they are.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signal_name is not None:  # a second Ctrl-C: stop now.
      raise KeyboardInterrupt
    self.signal_name = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def train(config: RunConfig, out_dir: str | Path, *, resume: bool = False,
          allow_config_change: bool = False, progress: bool = True,
          task: Task | None = None, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
  """Runs (or resumes) a training run into `out_dir`; returns the metrics rows."""
  out_dir = Path(out_dir)
  setup = build(config, task)
  config = setup.config
  config_dict = config_lib.to_dict(config)
  config_path = out_dir / "config.json"
  if resume:
    if not config_path.exists():
      raise ConfigError(f"cannot resume: {config_path} does not exist")
    saved = json.loads(config_path.read_text())
    # A run saved before a key existed has that key at its default: fill those in first.
    saved = config_lib.deep_merge(_defaults_like(config), saved)
    diff = _diff_keys(saved, config_dict, ignore=RESUMABLE_KEYS)
    if diff and not allow_config_change:
      raise ConfigError("cannot resume with a different config; differing keys: "
                        + ", ".join(diff) + " (pass --allow-config-change to override)")
  elif config_path.exists() and any((out_dir / "checkpoints").glob("*")):
    raise ConfigError(f"{out_dir} already holds a run; pass --resume to continue it or choose "
                      "another --out")
  out_dir.mkdir(parents=True, exist_ok=True)
  config_path.write_text(json.dumps(config_dict, indent=2) + "\n")

  model_cfg, task = config.model, setup.task
  tokenizer = setup.tokenizer
  base_key = jax.random.key(config.seed)
  total_steps = config.iterations * config.optim.steps_per_iteration
  optimizer = learner.make_optimizer(config.optim, total_steps)
  anchor_demos = _anchor_demos(config, tokenizer)
  anchor_batch_size = config.optim.anchor_batch_size or config.selfplay.batch_size
  if config.init_from:
    from tokenzero import hf  # pylint: disable=import-outside-toplevel
    try:
      params = hf.load(config.init_from, dtype=model_cfg.dtype)[1]
    except hf.HFError as err:
      raise ConfigError(f"init_from: {err}") from None
  else:
    params = model_lib.init_params(model_cfg, jax.random.fold_in(base_key, 10**6))
  state = ckpt_lib.TrainState(params, optimizer.init(params), jnp.int32(0), jnp.int32(0),
                              jax.random.key_data(base_key))
  # The KL reference is the initial network, rebuilt from the seed (or init_from) on resume.
  # A copy: the first iteration donates `params` to the optimizer step.
  reference = jax.tree.map(jnp.copy, params) if config.optim.kl_weight > 0 else None
  checkpointer = ckpt_lib.Checkpointer(out_dir / "checkpoints", keep=config.keep_checkpoints,
                                       writer=True)
  metrics_path = out_dir / "metrics.jsonl"
  rows: list[dict[str, Any]] = []
  if resume:
    restored = checkpointer.restore_latest(state)
    if restored is None and (steps := checkpointer.steps()):
      checkpointer.close()
      raise TrainingError(
          f"none of the checkpoints {steps} in {checkpointer.directory} loads (see the "
          "warnings above); move them away to start the run over")
    if restored is None:
      log(f"no checkpoint in {checkpointer.directory} yet: starting from iteration 0")
    else:
      state, _ = restored
      rows = _read_metrics(metrics_path, int(state.iteration))
      log(f"resumed from iteration {int(state.iteration)} in {out_dir}")
      if not rows:
        log(f"{metrics_path} has no rows up to iteration {int(state.iteration)}; the "
            "checkpoint is good, so the run goes on without them")

  eval_texts = prompts.eval_texts(task, config.seed, config.eval.num_prompts)
  eval_batch = prompts.encode_batch(tokenizer, eval_texts, task.prompt_len)
  stream = prompts.PromptStream(task.sample, config.seed, exclude=eval_texts)
  common = dict(config=model_cfg, reward_fn=setup.reward_fn, max_new_tokens=setup.max_new_tokens,
                eos_id=tokenizer.eos_id)

  def run_eval(params) -> dict[str, float]:
    result = evaluate.evaluate_greedy(params, eval_batch.tokens, eval_batch.lengths,
                                      setup.allowed, success_threshold=config.task.success_threshold,
                                      **common)
    rewards.raise_pending()
    return {"eval_greedy_reward": float(result.reward.mean()),
            "eval_greedy_success": float(result.success.mean())}

  elapsed_before = rows[-1]["elapsed_s"] if rows else 0.0
  started = time.monotonic()
  elapsed = lambda: round(elapsed_before + time.monotonic() - started, 3)

  def append(row):
    rows.append(row)
    with metrics_path.open("a") as f:
      f.write(json.dumps(row) + "\n")

  _write_metrics(metrics_path, rows)  # drop rows past the checkpoint we resumed from.
  if int(state.iteration) == 0 and not rows:
    append({"iteration": 0, "elapsed_s": elapsed(), "selfplay_reward": None,
            "loss_policy": None, "loss_value": None, **run_eval(state.params)})
    checkpointer.save(state, config_dict)

  start_iteration = int(state.iteration)
  deadline = time.monotonic() + config.minutes * 60 if config.minutes > 0 else math.inf
  stop_reason = None
  saved_iteration = start_iteration
  nonfinite_streak = 0  # consecutive skipped optimizer updates, across iterations.
  streak_start = ""  # where the current streak began: its step and non-finite metrics.
  with _StopFlag() as stop, progress_bar("iteration", enabled=progress) as bar:
    bar_task = bar.add_task("", total=config.iterations, completed=start_iteration,
                            status="")
    for iteration in range(start_iteration + 1, config.iterations + 1):
      key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), iteration)
      texts = stream.draw(iteration, config.selfplay.batch_size)
      batch = prompts.encode_batch(tokenizer, texts, task.prompt_len)
      t0 = time.monotonic()
      traj = selfplay.self_play(
          state.params, batch.tokens, batch.lengths, key,
          jnp.float32(temperature_at(config, iteration)), setup.allowed,
          search_config=config.search, selfplay_config=config.selfplay, **common)
      traj = jax.block_until_ready(traj)
      rewards.raise_pending()
      t1 = time.monotonic()
      anchor = None
      if anchor_demos is not None:  # its own stream, keyed like the prompts: resumable.
        picks = np.random.default_rng([config.seed, 3, iteration]).integers(
            0, anchor_demos.tokens.shape[0], anchor_batch_size)
        anchor = demos_lib.take(anchor_demos, picks)
      params, opt_state, metrics = learner.train_steps(
          state.params, state.opt_state, traj, config=model_cfg, optimizer=optimizer,
          num_steps=config.optim.steps_per_iteration,
          value_loss_weight=config.optim.value_loss_weight, anchor=anchor,
          anchor_weight=config.optim.anchor_weight, reference=reference,
          kl_weight=config.optim.kl_weight)
      metrics = jax.device_get(metrics)
      t2 = time.monotonic()
      skipped = np.asarray(metrics.skipped)
      for index, was_skipped in enumerate(skipped):
        if not was_skipped:
          nonfinite_streak, streak_start = 0, ""
          continue
        if not nonfinite_streak:
          streak_start = _describe_nonfinite(metrics, index, int(state.step) + index + 1)
        nonfinite_streak += 1
      state = ckpt_lib.TrainState(params, opt_state,
                                  state.step + config.optim.steps_per_iteration,
                                  jnp.int32(iteration), state.rng)
      finite = ~skipped
      mean = lambda x: float(np.mean(np.asarray(x)[finite])) if finite.any() else None
      row = {
          "iteration": iteration,
          "elapsed_s": None,
          "selfplay_reward": float(traj.reward.mean()),
          "selfplay_success": float((traj.reward >= config.task.success_threshold).mean()),
          "loss_policy": mean(metrics.loss_policy),
          "loss_value": mean(metrics.loss_value),
          "policy_entropy": mean(metrics.policy_entropy),
          "grad_norm": mean(metrics.grad_norm),
          "nonfinite_updates": int(skipped.sum()),
          "search_value": float(traj.search_value[:, 0].mean()),
          "temperature": temperature_at(config, iteration),
          "selfplay_s": round(t1 - t0, 3),
          "train_s": round(t2 - t1, 3),
      }
      if anchor is not None:
        row["loss_anchor"] = mean(metrics.loss_anchor)
      if reference is not None:
        row["loss_kl"] = mean(metrics.loss_kl)
      if iteration % config.eval.every == 0 or iteration == config.iterations:
        row.update(run_eval(state.params))
      row["elapsed_s"] = elapsed()
      append(row)
      bar.update(bar_task, completed=iteration, status=(
          f"selfplay {row['selfplay_reward']:.3f} greedy success "
          f"{row.get('eval_greedy_success', float('nan')):.3f}"))
      if nonfinite_streak >= config.optim.max_nonfinite_updates:
        checkpointer.close()
        raise TrainingError(
            f"stopping at iteration {iteration}: {nonfinite_streak} consecutive optimizer "
            f"updates were skipped (optim.max_nonfinite_updates="
            f"{config.optim.max_nonfinite_updates}), the first at {streak_start}; the last good "
            f"checkpoint, iteration {saved_iteration}, is in {checkpointer.directory}")
      last = iteration == config.iterations
      if stop.signal_name:
        stop_reason = f"received {stop.signal_name}"
      elif time.monotonic() >= deadline:
        stop_reason = f"reached the {config.minutes:g}-minute budget"
      # Never checkpoint params from a streak of skipped updates: they may be what fails.
      if not nonfinite_streak and (last or stop_reason
                                   or iteration % config.checkpoint_every == 0):
        checkpointer.save(state, config_dict)
        saved_iteration = iteration
      if stop_reason:
        break
  checkpointer.close()
  plots.learning_curve(rows, out_dir / "learning_curve.png", title=f"{task.name}")
  if stop_reason:
    message = (f"stopped after iteration {int(state.iteration)} ({stop_reason}); the newest "
               f"checkpoint is iteration {saved_iteration}. Resume with: tokenzero train "
               f"--out {out_dir} --resume")
    if stop.signal_name:
      raise Interrupted(message, signum=signal.Signals[stop.signal_name].value)
    log(message)
  elif saved_iteration != int(state.iteration):
    log(f"the last updates were skipped as non-finite: the newest checkpoint is iteration "
        f"{saved_iteration}, not {int(state.iteration)}")
  return rows


def _describe_nonfinite(metrics: learner.TrainMetrics, index: int, step: int) -> str:
  """'optimizer step 7 (non-finite loss_value=nan, grad_norm=nan)' for a skipped update."""
  values = {name: float(np.asarray(getattr(metrics, name))[index])
            for name in ("loss_policy", "loss_value", "loss_anchor", "grad_norm")}
  bad = [f"{name}={value}" for name, value in values.items() if not math.isfinite(value)]
  return f"optimizer step {step} (non-finite {', '.join(bad) or 'update'})"


def _defaults_like(config: RunConfig) -> dict:
  """Default config (with this run's derived model sizes, which a saved config always has)."""
  defaults = config_lib.to_dict(RunConfig())
  defaults["model"].update(vocab_size=config.model.vocab_size, context=config.model.context)
  return defaults


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


def _diff_keys(a: dict, b: dict, ignore=(), prefix="") -> list[str]:
  keys = []
  for key in sorted(set(a) | set(b)):
    full = f"{prefix}{key}"
    if full in ignore:
      continue
    va, vb = a.get(key), b.get(key)
    if isinstance(va, dict) and isinstance(vb, dict) and not full.endswith("params"):
      keys.extend(_diff_keys(va, vb, ignore, f"{full}."))
    elif va != vb:
      keys.append(full)
  return keys


def load_run(run_dir: str | Path, iteration: int | None = None):
  """(Setup, params) of a run directory's newest (or given) checkpoint, for eval and decode."""
  run_dir = Path(run_dir)
  config_path = run_dir / "config.json"
  if not config_path.exists():
    raise ConfigError(f"{run_dir} is not a run directory (no config.json)")
  config = config_lib.from_dict(RunConfig, json.loads(config_path.read_text()))
  setup = build(config)
  params = model_lib.init_params(setup.config.model, jax.random.key(0))
  optimizer = learner.make_optimizer(setup.config.optim, 1)
  template = ckpt_lib.TrainState(params, optimizer.init(params), jnp.int32(0), jnp.int32(0),
                                 jax.random.key_data(jax.random.key(0)))
  checkpointer = ckpt_lib.Checkpointer(run_dir / "checkpoints", keep=config.keep_checkpoints)
  try:
    if iteration is None:
      restored = checkpointer.restore_latest(template)
      if restored is None:
        raise ConfigError(f"{run_dir} has no loadable checkpoint")
      state = restored[0]
    else:
      state = checkpointer.restore(iteration, template)[0]
  finally:
    checkpointer.close()
  return setup, state.params
