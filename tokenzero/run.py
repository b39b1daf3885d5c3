"""What a run is made of, built once: `Setup` from a `RunConfig`, and loading a finished run.

`build(config)` makes the task (which loads the user's reward file: once per run), fits the
model's vocabulary and context to it, settles the reward and the tokens an answer may use, and
lays out the device mesh; every check happens there, before anything compiles. `load_run`
reads a run directory's config and newest (or given) checkpoint; `load_model` reads either an
HF model directory or a run directory, for the commands that take both (`decode`, `sft`).

Dimension letters: V vocab.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Literal, Sequence

import jax
import jax.numpy as jnp
import optax

from tokenzero import checkpoint as ckpt_lib
from tokenzero import config as config_lib
from tokenzero import curriculum, hf, learner, rundir
from tokenzero import mesh as mesh_lib
from tokenzero import model as model_lib
from tokenzero import replay as replay_lib
from tokenzero.config import ConfigError, MeshConfig, ModelConfig, RunConfig
from tokenzero.rewards import TokenReward
from tokenzero.tasks import Task, make_task, task_token_reward
from tokenzero.tokenizer import Tokenizer, answer_mask


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything derived from a `RunConfig` before any compile."""
  config: RunConfig  # with model.vocab_size and model.context filled in
  task: Task
  max_new_tokens: int  # answer budget T, EOS included
  reward_fn: TokenReward  # the task's reward on tokens
  allowed: jax.Array  # [V] bool: tokens an answer may use
  mesh: mesh_lib.DeviceMesh  # the devices it computes on (config.mesh)

  @property
  def tokenizer(self) -> Tokenizer:
    return self.task.tokenizer


def build(config: RunConfig, task: Task | None = None, *,
          devices: Sequence[jax.Device] | None = None) -> Setup:
  """Resolves derived values and checks the config against the task; raises ConfigError.
  `devices`: what the mesh is laid over (default every process's, see `mesh.make`)."""
  if config.init_from:
    config = _from_pretrained(config)
  task = task or make_task(config.task.name, config.task.params)
  curriculum.check_config(config.task, task)
  max_new_tokens = config.task.max_new_tokens or task.max_new_tokens
  config = config_lib.fit_model_to_task(
      config, vocab_size=task.tokenizer.vocab_size, prompt_len=task.prompt_len,
      max_new_tokens=max_new_tokens, longest_prompt=task.longest_prompt(),
      padded_vocab_ok=bool(config.init_from))
  allowed = jnp.asarray(answer_mask(task.tokenizer, config.model.vocab_size))
  return Setup(config, task, max_new_tokens, task_token_reward(task), allowed,
               mesh_lib.make(config, devices))


def _from_pretrained(config: RunConfig) -> RunConfig:
  """`init_from`: the model section comes from the checkpoint's config.json (only model.dtype
  stays the user's), and the prompts task's tokenizer is the checkpoint's."""
  path = config.init_from
  if not hf.is_model(path):
    raise ConfigError(f"init_from={path!r} is not an HF model directory (config.json of a "
                      f"{', '.join(hf.ARCHITECTURES)}, safetensors weights, tokenizer.json) "
                      "or a Llama GGUF file")
  try:
    loaded = hf.config_from_hf(hf.read_config(path), dtype=config.model.dtype)
  except hf.HFError as err:
    raise ConfigError(f"init_from: {err}") from None
  default = ModelConfig()
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


def initial_params(config: RunConfig) -> optax.Params:
  """The network a run starts from: `init_from`'s weights, or a random init from the seed."""
  if config.init_from:
    try:
      return hf.load(config.init_from, dtype=config.model.dtype)[1]
    except hf.HFError as err:
      raise ConfigError(f"init_from: {err}") from None
  return model_lib.init_params(config.model, jax.random.fold_in(jax.random.key(config.seed),
                                                                10**6))


def load_run(run_dir: str | Path, iteration: int | None = None) -> tuple[Setup, optax.Params]:
  """(Setup, params) of a run directory's newest (or given) checkpoint, for eval and decode."""
  run_dir = Path(run_dir)
  config = config_lib.from_dict(RunConfig, rundir.read_config(run_dir))
  # Reading a finished run (eval, decode) computes on one device, whatever mesh trained it: a
  # checkpoint restores onto any mesh, and its training batch need not divide over this one.
  # On several processes each reads it on its own first device (process 0 writes the results).
  setup = build(dataclasses.replace(config, mesh=MeshConfig(data=1)),
                devices=jax.local_devices())
  params = model_lib.init_params(setup.config.model, jax.random.key(0))
  template = ckpt_lib.TrainState.create(params, learner.make_optimizer(setup.config.optim, 1),
                                        jax.random.key(0),
                                        replay=replay_lib.for_run(setup, params))
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


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A network from an HF model directory or a run directory, with its tokenizer."""
  source: Literal["hf", "run"]
  config: ModelConfig
  params: optax.Params
  tokenizer: Tokenizer
  setup: Setup | None  # the run's, for a run directory


def load_model(path: str | Path, *, dtype: str | None = None) -> LoadedModel:
  """An HF model directory, a GGUF file or a training run directory (its newest checkpoint) ->
  the model.

  `dtype` changes the compute dtype (None: the directory's own; float32 for an HF model).
  """
  path = Path(path)
  if hf.is_model(path):
    config, params = hf.load(path, dtype=dtype or "float32")
    return LoadedModel("hf", config, params, hf.load_tokenizer(path), None)
  if (path / "checkpoints").is_dir():
    setup, params = load_run(path)
    config = setup.config.model
    if dtype is not None and dtype != config.dtype:
      config = dataclasses.replace(config, dtype=dtype)
    return LoadedModel("run", config, params, setup.tokenizer, setup)
  raise ConfigError(f"{path} is neither an HF model directory (config.json of a supported "
                    "architecture), a GGUF file, nor a training run directory (checkpoints/)")
