"""Config files and overrides: TOML, dotted `KEY=VALUE` strings, typed values, strict keys.

Unknown keys are errors that suggest the nearest known key, so a typo never silently falls back
to a default. `resolve` turns a config file plus overrides into one `RunConfig`; `to_dict` is
what gets saved beside every run.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence

try:
  import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI.
  import tomli as tomllib

from tokenzero.config.schema import RunConfig
from tokenzero.errors import ConfigError


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


def _set(data: dict[str, Any], key: str, value: Any, known: Sequence[str]) -> bool:
  """data[a][b][c] = value for the dotted `key`; True when it reaches into `task.params`."""
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
  node[parts[-1]] = value
  return is_task_param


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str] = (),
                    values: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Sets dotted keys on a copy of a nested dict: first `values` (typed, from the command line's
  own flags), then `a.b.c=value` strings (typed later; a `task.params` value is read as JSON when
  it parses, else kept as a bare string)."""
  data = json.loads(json.dumps(data))  # deep copy; never mutate the caller's config.
  known = all_keys()
  for key, value in (values or {}).items():
    _set(data, key, value, known)
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"override '{item}' is not KEY=VALUE")
    key, value = item.split("=", 1)
    if _set(data, key.strip(), value, known):
      try:
        _set(data, key.strip(), json.loads(value), known)
      except json.JSONDecodeError:
        pass  # a bare string.
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
            base: Mapping[str, Any] | None = None,
            values: Mapping[str, Any] | None = None) -> RunConfig:
  """`base` (a saved run's config), then a config file, then typed dotted `values`, then
  `KEY=VALUE` strings, each over the one before -> a typed `RunConfig` (unknown keys refused)."""
  data = dict(base or {})
  if path is not None:
    data = deep_merge(data, load_toml(path))
  data = apply_overrides(data, overrides, values)
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
