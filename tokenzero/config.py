"""Typed, frozen run configuration: TOML files, dotted `KEY=VALUE` overrides, strict keys.

Every section is a frozen dataclass. Unknown keys are errors that suggest the nearest known
key, so a typo never silently falls back to a default. `resolve` turns a config file plus
overrides into one `RunConfig`; `to_dict` is what gets saved beside every run.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence


class ConfigError(ValueError):
  """A bad key or value in a config file or a command-line override."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Decoder-only transformer with a policy head (logits) and a value head.

  `arch="gpt2"`: pre-LN LayerNorm, learned positions, GELU MLP, tied embeddings.
  `arch="llama"`: RMSNorm, RoPE, SwiGLU, grouped-query attention (Qwen2 adds q/k/v biases).
  """
  arch: str = "gpt2"
  vocab_size: int = 0  # 0: taken from the tokenizer.
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 0  # 0: same as num_heads (no grouping).
  head_dim: int = 0  # 0: d_model // num_heads.
  d_model: int = 64
  d_ff: int = 0  # 0: 4 * d_model.
  context: int = 0  # 0: prompt length + answer length of the task.
  norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  tie_embeddings: bool = True
  attn_bias: bool = True  # biases on q/k/v projections (GPT-2, Qwen2).
  proj_bias: bool = True  # biases on the attention output and MLP (GPT-2 only).
  dtype: str = "float32"  # compute dtype: float32 or bfloat16; params stay float32.

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def dim_per_head(self) -> int:
    return self.head_dim or self.d_model // self.num_heads

  @property
  def ff_dim(self) -> int:
    return self.d_ff or 4 * self.d_model


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  name: str = "sort"
  params: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # task-specific knobs.
  max_new_tokens: int = 0  # 0: the task's own answer length.
  success_threshold: float = 1.0  # a completion with reward >= this counts as a success.


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  algorithm: str = "gumbel"  # "gumbel" (mctx.gumbel_muzero_policy) or "puct" (muzero_policy).
  num_simulations: int = 32
  # Actions of a node = its top-K candidate tokens. 0: 16, or the whole vocabulary when
  # smaller; a K larger than the vocabulary is an error.
  top_k: int = 0
  max_depth: int = 0  # 0: the task's answer length.
  incremental: bool = True  # False: full-recompute reference (slow, for tests and benchmarks).
  max_num_considered_actions: int = 16
  gumbel_scale: float = 1.0
  # Gumbel's completed-Q transform: sigma(q) = (maxvisit_init + max visits) * value_scale * q.
  # Rewards here already live in [0, 1], so per-node min-max rescaling is off by default: it
  # blows noise between nearly equal children up to the full [0, 1] range. On sort-5 this
  # setting (with 8 optimizer steps per iteration) learned far faster than mctx's defaults;
  # the runs are in experiments/README.md.
  value_scale: float = 1.0
  maxvisit_init: float = 50.0
  rescale_values: bool = False
  pb_c_init: float = 1.25
  pb_c_base: float = 19652.0
  dirichlet_alpha: float = 0.3
  dirichlet_fraction: float = 0.25


@dataclasses.dataclass(frozen=True)
class SelfPlayConfig:
  batch_size: int = 256
  action_selection: str = "sample"  # "sample" from action_weights, or "search" (its chosen action).
  temperature: float = 1.0  # sampling temperature at iteration 0 ...
  final_temperature: float = 0.25  # ... decayed linearly to this at the last iteration.
  random_action_prob: float = 0.1  # exploration: a uniform random candidate instead.


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  learning_rate: float = 3e-3
  final_learning_rate_fraction: float = 0.1
  warmup_steps: int = 20
  decay_steps: int = 0  # cosine horizon in optimizer steps; 0: the whole run.
  weight_decay: float = 1e-4
  grad_clip: float = 1.0
  steps_per_iteration: int = 8
  value_loss_weight: float = 1.0
  max_nonfinite_updates: int = 10  # consecutive skipped (NaN/inf) updates before the run stops.
  # Fresh-data anchor: + anchor_weight * next-token loss on {prompt, completion} JSONL demos
  # (`anchor_data`), `anchor_batch_size` of them per iteration (0: selfplay.batch_size).
  anchor_weight: float = 0.0
  # + kl_weight * KL(policy || initial network) per decision step: keeps the policy near its
  # starting point (the random init, or the `init_from` checkpoint).
  kl_weight: float = 0.0
  anchor_data: str = ""
  anchor_batch_size: int = 0


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  num_prompts: int = 512
  every: int = 1


@dataclasses.dataclass(frozen=True)
class RunConfig:
  seed: int = 0
  iterations: int = 300
  minutes: float = 0.0  # wall-clock budget; 0 means none.
  checkpoint_every: int = 10
  keep_checkpoints: int = 3
  # An HF model directory to start from: its weights, shape (the model section) and tokenizer
  # (the prompts task's). Model keys other than model.dtype must then be left unset.
  init_from: str = ""
  task: TaskConfig = TaskConfig()
  model: ModelConfig = ModelConfig()
  search: SearchConfig = SearchConfig()
  selfplay: SelfPlayConfig = SelfPlayConfig()
  optim: OptimConfig = OptimConfig()
  eval: EvalConfig = EvalConfig()


def to_dict(config: Any) -> dict[str, Any]:
  """Plain JSON-able dict of a (nested) config dataclass."""
  out = {}
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if dataclasses.is_dataclass(value):
      value = to_dict(value)
    elif isinstance(value, Mapping):
      value = dict(value)
    out[field.name] = value
  return out


def _field_types(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _suggest(name: str, known: Sequence[str]) -> str:
  close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
  return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(value: Any, kind: Any, key: str) -> Any:
  """Checks or converts `value` to the field type `kind`; strings come from the command line."""
  origin = typing.get_origin(kind)
  if kind is bool:
    if isinstance(value, bool):
      return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
      return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"config key '{key}' wants true or false, got {value!r}")
  if kind in (int, float):
    if isinstance(value, bool):
      raise ConfigError(f"config key '{key}' wants a number, got {value!r}")
    if isinstance(value, (int, float)) and (kind is float or float(value).is_integer()):
      return kind(value)
    if isinstance(value, str):
      try:
        return kind(value)
      except ValueError:
        pass
    raise ConfigError(f"config key '{key}' wants {kind.__name__}, got {value!r}")
  if kind is str:
    if isinstance(value, str):
      return value
    raise ConfigError(f"config key '{key}' wants a string, got {value!r}")
  if origin in (collections.abc.Mapping, dict) or kind is Mapping:
    if isinstance(value, str):
      try:
        value = json.loads(value)
      except json.JSONDecodeError as err:
        raise ConfigError(f"config key '{key}' wants a JSON object, got {value!r}") from err
    if not isinstance(value, Mapping):
      raise ConfigError(f"config key '{key}' wants a table/object, got {value!r}")
    return types.MappingProxyType(dict(value))
  raise ConfigError(f"config key '{key}' has an unsupported type {kind}")


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
  """Builds dataclass `cls` from a nested mapping, rejecting unknown keys."""
  hints = _field_types(cls)
  names = [f.name for f in dataclasses.fields(cls)]
  kwargs = {}
  for key, value in data.items():
    full = f"{prefix}{key}"
    if key not in hints:
      known = [f"{prefix}{n}" for n in names]
      raise ConfigError(f"unknown config key '{full}'{_suggest(full, known)}")
    kind = hints[key]
    if dataclasses.is_dataclass(kind):
      if not isinstance(value, Mapping):
        raise ConfigError(f"config key '{full}' is a section; give it as a table")
      kwargs[key] = from_dict(kind, value, prefix=f"{full}.")
    else:
      kwargs[key] = _coerce(value, kind, full)
  return cls(**kwargs)


def all_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
  """Every dotted key a `RunConfig` accepts (used for suggestions)."""
  keys = []
  for name, kind in _field_types(cls).items():
    if dataclasses.is_dataclass(kind):
      keys.extend(all_keys(kind, f"{prefix}{name}."))
    else:
      keys.append(f"{prefix}{name}")
  return keys


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
  """Applies `a.b.c=value` strings onto a nested dict (values stay strings; typed later)."""
  data = json.loads(json.dumps(data))  # deep copy; never mutate the caller's config.
  known = all_keys()
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"override '{item}' is not KEY=VALUE")
    key, value = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    # `task.params.x=...` reaches into a free-form mapping; anything else must be a known key.
    is_task_param = len(parts) >= 3 and parts[0] == "task" and parts[1] == "params"
    if not is_task_param and key not in known:
      raise ConfigError(f"unknown config key '{key}'{_suggest(key, known)}")
    node = data
    for part in parts[:-1]:
      node = node.setdefault(part, {})
      if not isinstance(node, dict):
        raise ConfigError(f"config key '{key}': '{part}' is not a section")
    if is_task_param:
      try:
        value = json.loads(value)
      except json.JSONDecodeError:
        pass  # a bare string.
    node[parts[-1]] = value
  return data


def load_toml(path: str | Path) -> dict[str, Any]:
  path = Path(path)
  if not path.exists():
    raise ConfigError(f"config file '{path}' does not exist")
  try:
    with path.open("rb") as f:
      return tomllib.load(f)
  except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
    raise ConfigError(f"config file '{path}' is not valid TOML: {err}") from err


def resolve(path: str | Path | None = None, overrides: Sequence[str] = (),
            base: Mapping[str, Any] | None = None) -> RunConfig:
  """Config file (optional) + dotted overrides -> a validated `RunConfig`."""
  data = dict(base or {})
  if path is not None:
    data = deep_merge(data, load_toml(path))
  data = apply_overrides(data, overrides)
  return from_dict(RunConfig, data)


def deep_merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
  out = dict(a)
  for key, value in b.items():
    if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
      out[key] = deep_merge(out[key], value)
    else:
      out[key] = value
  return out


def replace(config: Any, **changes: Any) -> Any:
  """`dataclasses.replace` that accepts dotted keys: `replace(cfg, **{"search.top_k": 4})`."""
  nested: dict[str, dict[str, Any]] = {}
  flat = {}
  for key, value in changes.items():
    head, _, rest = key.partition(".")
    if rest:
      nested.setdefault(head, {})[rest] = value
    else:
      flat[key] = value
  for head, sub in nested.items():
    flat[head] = replace(getattr(config, head), **sub)
  return dataclasses.replace(config, **flat)
