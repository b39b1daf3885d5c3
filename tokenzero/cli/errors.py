"""From an error to what the user sees and the exit code, in one place.

User mistakes (bad keys, values, files: `tokenzero.errors.USER_ERRORS`) are one line on stderr
and exit code 2; `--debug` shows the traceback instead. A stopped run is exit 1, a signal
128 + its number, as a shell reports a process the signal killed.
"""

from __future__ import annotations

import argparse
import sys

from tokenzero.errors import USER_ERRORS, UsageError


def run_command(args: argparse.Namespace) -> int:
  """Runs `args.func(args)` and maps what it raises to a message and an exit code."""
  debug = getattr(args, "debug", False)
  # Imported here, not above: the compilation cache needs JAX, and `--help` must not.
  from tokenzero import compilation_cache
  compilation_cache.enable()  # every process compiles the same programs: load them from disk.
  try:
    return int(args.func(args) or 0)
  except USER_ERRORS as err:
    if debug:
      raise
    print(f"tokenzero: error: {err}", file=sys.stderr)
    return 2
  except ValueError as err:
    # Commands that take free-form input (a model directory, token ids, a budget) declare that
    # their ValueErrors are the user's; elsewhere a ValueError is a bug and keeps its traceback.
    if debug or not getattr(args, "value_errors_are_usage", False):
      raise
    print(f"tokenzero: error: {UsageError(str(err))}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:  # a second Ctrl-C, or one before training started.
    if debug:
      raise
    print("tokenzero: interrupted; a run keeps its newest checkpoint (resume it with "
          "tokenzero train --out RUN_DIR --resume)", file=sys.stderr)
    return 130
