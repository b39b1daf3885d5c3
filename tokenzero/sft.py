"""Supervised warm start: fit a policy to `{prompt, completion}` demonstrations by next-token
cross-entropy on the completion tokens (prompt tokens masked), with optax.

`fit` is the library function, params in and params out. `sft` is what `tokenzero sft` runs:
it loads an HF model directory or a training run directory, fits, and saves what the rest of
tokenzero reads back:

- from an HF model: an HF model directory (`hf.export`, tokenizer files copied), which
  `tokenzero decode` and `tokenzero train --init-from` load;
- from a run: a run directory with the source run's config and the fitted params as its
  iteration-0 checkpoint, which `tokenzero decode` loads and `tokenzero train --out DIR
  --resume` trains on from there.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tokenzero import checkpoint as ckpt_lib
from tokenzero import config as config_lib
from tokenzero import demos as demos_lib
from tokenzero import hf, learner, rundir
from tokenzero import replay as replay_lib
from tokenzero import run as run_lib
from tokenzero.config import ConfigError, ModelConfig, OptimConfig
from tokenzero.progress import progress_bar


@dataclasses.dataclass(frozen=True)
class SFTResult:
  out_dir: Path
  source: str  # "hf" or "run": what was loaded, and so what was written
  num_demos: int
  steps: int
  nll_before: float  # mean NLL per completion token over every demo, before fitting
  nll_after: float  # ... and after


@functools.partial(jax.jit, static_argnames=("config", "optimizer"), donate_argnums=(0, 1))
def sft_step(params, opt_state, batch: demos_lib.DemoBatch, *, config: ModelConfig,
             optimizer: optax.GradientTransformation):
  """One optimizer step on a `[B, L]` batch -> (params, opt_state, loss before the step)."""
  loss, grads = jax.value_and_grad(demos_lib.lm_loss)(params, config, batch)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def make_optimizer(*, steps: int, learning_rate: float) -> optax.GradientTransformation:
  """The learner's AdamW (clipping, warmup + cosine, non-finite updates skipped), no decay of
  the weights toward 0: fitting a pretrained model should not shrink it."""
  config = OptimConfig(learning_rate=learning_rate, warmup_steps=max(1, steps // 10),
                       weight_decay=0.0, final_learning_rate_fraction=0.1)
  return learner.make_optimizer(config, steps)


def fit(params, config: ModelConfig, demos: demos_lib.DemoBatch, *, steps: int,
        learning_rate: float, batch_size: int, seed: int = 0,
        on_step: Callable[[int, float], None] | None = None):
  """`steps` optimizer steps on minibatches of `demos` (a numpy `DemoBatch`), drawn as shuffled
  epochs; a batch size above the number of demos takes them all. Returns (params, [steps]
  losses)."""
  if steps < 1 or batch_size < 1 or learning_rate <= 0:
    raise ValueError("sft needs steps >= 1, batch size >= 1 and a learning rate > 0")
  optimizer = make_optimizer(steps=steps, learning_rate=learning_rate)
  # Donated below: copied, so that the caller's params stay usable; and committed to one device
  # with the optimizer state, since jit compiles again when an argument goes from uncommitted
  # (fresh from numpy) to committed (a checkpoint's, or a step's output).
  device = jax.devices()[0]
  params = jax.device_put(jax.tree.map(jnp.array, params), device)
  opt_state = jax.device_put(optimizer.init(params), device)
  num_demos = demos.tokens.shape[0]
  batch_size = min(batch_size, num_demos)
  rng = np.random.default_rng(seed)
  order, cursor, losses = rng.permutation(num_demos), 0, []
  for step in range(steps):
    if cursor + batch_size > num_demos:
      order, cursor = rng.permutation(num_demos), 0
    rows = order[cursor:cursor + batch_size]
    cursor += batch_size
    params, opt_state, loss = sft_step(params, opt_state, demos_lib.take(demos, rows),
                                       config=config, optimizer=optimizer)
    losses.append(float(loss))
    if on_step is not None:
      on_step(step, losses[-1])
  return params, np.asarray(losses)


def sft(source, data, *, out, steps: int = 200, learning_rate: float = 1e-4,
        batch_size: int = 16, seed: int = 0, progress: bool = True) -> SFTResult:
  """Loads `source` (HF model directory or run directory), fits it on the demos of `data`
  (JSONL) and saves the result into `out` (see the module docstring)."""
  source, out = Path(source), Path(out)
  if out.resolve() == source.resolve():
    raise ConfigError("--out must not be the model being fitted")
  if (out / rundir.CONFIG_FILE).exists():
    raise ConfigError(f"{out} already holds a model or run; choose another --out")
  demos = demos_lib.read_demos(data)  # a bad file fails before any model loads.
  model = run_lib.load_model(source)
  config, params = model.config, model.params
  demos = demos_lib.encode_demos(model.tokenizer, demos, context=config.context)
  nll_before = demos_lib.mean_nll(params, config, demos)
  with progress_bar("sft", enabled=progress) as bar:
    task = bar.add_task("", total=steps, status="")
    params, _ = fit(params, config, demos, steps=steps, learning_rate=learning_rate,
                    batch_size=batch_size, seed=seed,
                    on_step=lambda step, loss: bar.update(task, completed=step + 1,
                                                          status=f"loss {loss:.4f}"))
  nll_after = demos_lib.mean_nll(params, config, demos)
  if model.source == "hf":
    hf.export(params, config, out, tokenizer_dir=source)
  else:
    save_run(out, rundir.read_config(source), params)
  return SFTResult(out, model.source, int(demos.tokens.shape[0]), steps, nll_before, nll_after)


def save_run(out_dir, config_dict: dict, params) -> Path:
  """A run directory whose iteration-0 checkpoint holds `params` (fresh optimizer state): what
  `run.load_run` reads and `train.train(..., resume=True)` continues."""
  out_dir = Path(out_dir)
  config = config_lib.from_dict(config_lib.RunConfig, config_dict)
  rundir.write_config(out_dir, config_dict)
  # With the run's (empty) replay buffer, so that the checkpoint has the layout its config
  # gives every reader.
  state = ckpt_lib.TrainState.create(params, learner.make_optimizer(config.optim, 1),
                                     jax.random.key(config.seed),
                                     replay=replay_lib.for_run(run_lib.build(config), params))
  checkpointer = ckpt_lib.Checkpointer(out_dir / "checkpoints", keep=config.keep_checkpoints,
                                       writer=True)
  try:
    checkpointer.save(state, config_dict)
  finally:
    checkpointer.close()
  return out_dir
