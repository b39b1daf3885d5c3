"""`tokenzero` command line: a thin layer over library functions.

Each subcommand is an `add_<name>` function that registers its parser and handler in
`SUBCOMMANDS`. User mistakes (bad keys, values, files) are one line on stderr and exit code 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from tokenzero.config import ConfigError
from tokenzero.tasks import TaskError
from tokenzero.tokenizer import TokenizerError


class UsageError(ValueError):
  """A bad command line."""


# Errors that are the user's input, not a bug: printed as one line, exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, TaskError, TokenizerError, UsageError)


def _split_train_extras(extras: list[str]) -> tuple[str | None, list[str]]:
  """Positional extras of `train`: at most one CONFIG.toml, then KEY=VALUE overrides."""
  config_path, overrides = None, []
  for item in extras:
    if "=" in item and not item.startswith("-"):
      overrides.append(item)
    elif item.endswith(".toml") and config_path is None:
      config_path = item
    else:
      raise UsageError(f"unexpected argument {item!r}: give a CONFIG.toml, KEY=VALUE "
                       "overrides and the options of 'tokenzero train --help'")
  return config_path, overrides


def _train_config(args, overrides: list[str], config_path: str | None):
  from tokenzero import config as config_lib
  base = None
  if args.resume:
    if args.out is None:
      raise UsageError("--resume needs --out RUN_DIR (the run to continue)")
    saved = Path(args.out) / "config.json"
    if not saved.exists():
      raise ConfigError(f"cannot resume: {saved} does not exist")
    base = json.loads(saved.read_text())
  flags = []
  if args.task is not None:
    flags.append(f"task.name={args.task}")
  if args.iterations is not None:
    flags.append(f"iterations={args.iterations}")
  if args.minutes is not None:
    flags.append(f"minutes={args.minutes}")
  if args.seed is not None:
    flags.append(f"seed={args.seed}")
  return config_lib.resolve(config_path, flags + overrides, base=base)


def cmd_train(args) -> int:
  from tokenzero import train as train_lib
  config_path, overrides = _split_train_extras(args.extras)
  config = _train_config(args, overrides, config_path)
  out = args.out
  if out is None:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / f"{config.task.name}-{stamp}"
  train_lib.build(config)  # every config check before anything compiles.
  print(f"run directory: {out}", flush=True)
  try:
    rows = train_lib.train(config, out, resume=args.resume,
                           allow_config_change=args.allow_config_change,
                           progress=not args.no_progress)
  except train_lib.TrainingError as err:
    print(f"tokenzero: training stopped: {err}", file=sys.stderr)
    return 1
  last = rows[-1] if rows else {}
  summary = {k: last.get(k) for k in ("iteration", "elapsed_s", "eval_greedy_reward",
                                      "eval_greedy_success")}
  print(f"done: {json.dumps(summary)}")
  print(f"run directory: {out} (metrics.jsonl, learning_curve.png, checkpoints/)")
  return 0


def add_train(sub) -> None:
  p = sub.add_parser("train", help="run the closed loop (self-play, learner, evaluation)",
                     description="tokenzero train [CONFIG.toml] [options] [KEY=VALUE ...]; "
                     "KEY is a dotted config key such as search.num_simulations")
  p.add_argument("--task", help="built-in task name (default: sort)")
  p.add_argument("--out", help="run directory (default: runs/<task>-<time>)")
  p.add_argument("--iterations", type=int, help="total iterations of the run")
  p.add_argument("--minutes", type=float, help="wall-clock budget; stops cleanly")
  p.add_argument("--seed", type=int)
  p.add_argument("--resume", action="store_true", help="continue the run in --out")
  p.add_argument("--allow-config-change", action="store_true",
                 help="with --resume: accept config keys that differ from the saved run")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=cmd_train, accepts_extras=True)


SUBCOMMANDS = [add_train]


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="tokenzero", description=__doc__.splitlines()[0])
  parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
  sub = parser.add_subparsers(dest="command", required=True)
  for add in SUBCOMMANDS:
    add(sub)
  for p in sub.choices.values():
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks of errors")
  return parser


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args, extras = parser.parse_known_args(argv)
  if extras and not getattr(args, "accepts_extras", False):
    parser.error(f"unrecognized arguments: {' '.join(extras)}")
  args.extras = extras
  debug = getattr(args, "debug", False)
  try:
    return int(args.func(args) or 0)
  except USER_ERRORS as err:
    if debug:
      raise
    print(f"tokenzero: error: {err}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
