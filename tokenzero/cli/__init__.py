"""`tokenzero` command line: argument parsing (`parser`), thin handlers (`commands`) and the
mapping from errors to exit codes (`errors`), in that order of who calls whom.

Nothing here imports JAX at import time: `tokenzero --help` answers at once, and each handler
imports the library it drives when it runs.
"""

from tokenzero.cli.errors import run_command
from tokenzero.cli.parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args, extras = parser.parse_known_args(argv)
  if extras and not getattr(args, "accepts_extras", False):
    parser.error(f"unrecognized arguments: {' '.join(extras)}")
  args.extras = extras
  return run_command(args)
