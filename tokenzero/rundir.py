"""A run directory on disk: its name, its lock, its saved config and its metrics file.

A run directory holds `config.json` (the resolved config), `metrics.jsonl` (one row per
iteration; row 0 evaluates the initial network; the keys are `loop.run_iteration`'s, the
learning diagnostics among them (`tokenzero.diagnostics`), the evaluation's, `reward_gap` and
`compiles`, see `loop._loop`), `checkpoints/<iteration>/`, the learning-curve
plot and `.lock`, which one writing process holds for as long as it runs.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import math
import os
from pathlib import Path
from typing import Any

from tokenzero import config as config_lib
from tokenzero.config import ConfigError, RunConfig

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"
# Keys that may change when a run is resumed: they say how long to go on, or how to split the
# devices (a checkpoint restores onto any mesh), not what to train. The devices themselves (how
# many, on how many processes) are the checkpoint's topology, checked apart on resume
# (`distributed.check_topology`): a different split of the same devices is a resume.
RESUMABLE_KEYS = ("iterations", "minutes", "mesh")


def new_run_dir(name: str, root: str | Path = "runs") -> Path:
  """Creates and returns `root/<name>-<date>-<time>`, with `-2`, `-3`... when that exists already
  (two runs started in the same second never share a directory: the mkdir is the claim)."""
  stem = f"{name}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
  Path(root).mkdir(parents=True, exist_ok=True)
  for number in range(1, 1000):
    path = Path(root) / (stem if number == 1 else f"{stem}-{number}")
    try:
      path.mkdir()
      return path
    except FileExistsError:
      continue
  raise ConfigError(f"could not create a new run directory named {stem}* in {root}")


class RunLock:
  """An exclusive lock on a run directory for one writing process (a context manager).

  A second `tokenzero train` on the same directory gets a `ConfigError` at once instead of two
  processes interleaving checkpoints and metrics. The lock is the kernel's (`flock`), so a
  process killed even with `kill -9` releases it.
  """

  def __init__(self, run_dir: str | Path):
    self.path = Path(run_dir) / LOCK_FILE
    self._fd: int | None = None

  def __enter__(self) -> RunLock:
    self.path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
      os.close(fd)
      raise ConfigError(f"{self.path.parent} is in use by another tokenzero process (pid "
                        f"{holder}); wait for it to end, or choose another --out") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


def read_config(run_dir: str | Path) -> dict[str, Any]:
  """The saved `config.json` of a run directory, as a dict."""
  path = Path(run_dir) / CONFIG_FILE
  if not path.exists():
    raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
  try:
    saved = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as err:
    raise ConfigError(f"{path} is not valid JSON: {err}") from None
  return as_saved(saved) if isinstance(saved, dict) else saved


def as_saved(saved: dict[str, Any]) -> dict[str, Any]:
  """A saved config with the keys it predates set to what it meant then, not to today's
  defaults (an old run keeps the evaluation set it was made with)."""
  # A run made before `eval.split` existed evaluated on the legacy split; one made before found
  # answers and replay were on by default had neither (its checkpoints hold no buffer).
  before_the_keys = {"eval": {"split": "legacy"}, "optim": {"found_weight": 0.0},
                     "replay": {"capacity": 0}}
  return config_lib.deep_merge(before_the_keys, saved)


def write_config(run_dir: str | Path, config_dict: dict[str, Any]) -> None:
  path = Path(run_dir) / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(config_dict, indent=2) + "\n")
  tmp.replace(path)


def check_resume(saved: dict[str, Any], config: RunConfig, *, allow_change: bool) -> None:
  """Refuses to resume a run with a config that differs from its saved one, naming the keys."""
  # A run saved before a key existed has that key at what it meant then (`as_saved`), else at
  # its default: fill those in first.
  defaults = config_lib.to_dict(RunConfig())
  defaults["model"].update(vocab_size=config.model.vocab_size, context=config.model.context)
  saved = config_lib.deep_merge(defaults, as_saved(saved))
  diff = _diff_keys(saved, config_lib.to_dict(config), ignore=RESUMABLE_KEYS)
  if diff and not allow_change:
    raise ConfigError("cannot resume with a different config; differing keys: "
                      + ", ".join(diff) + " (pass --allow-config-change to override)")


def check_fresh(run_dir: str | Path) -> None:
  """Refuses to start a new run over one that has checkpoints."""
  run_dir = Path(run_dir)
  if (run_dir / CONFIG_FILE).exists() and any((run_dir / "checkpoints").glob("*")):
    raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose "
                      "another --out")


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


def read_metrics(path: str | Path, upto: int) -> list[dict[str, Any]]:
  """Rows of a metrics file up to iteration `upto`; a line cut by a crash ends the reading."""
  path = Path(path)
  if not path.exists():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      break  # everything after a cut line is redone anyway.
    if row.get("iteration", math.inf) <= upto:
      rows.append(row)
  return rows


def write_metrics(path: str | Path, rows: list[dict[str, Any]]) -> None:
  """Replaces the metrics file with `rows`, atomically."""
  path = Path(path)
  tmp = path.with_suffix(".tmp")
  tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
  tmp.replace(path)


def append_metrics(path: str | Path, row: dict[str, Any]) -> None:
  with Path(path).open("a") as f:
    f.write(json.dumps(row) + "\n")
