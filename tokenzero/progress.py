"""The one progress bar of tokenzero's long jobs (training, sweeps, fine-tuning), from rich."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


def progress_bar(label: str, *, enabled: bool = True, to_stderr: bool = False) -> Progress:
  """`label done/total [bar] status elapsed eta`; a task's `status` field fills the status column.

  Add tasks with `bar.add_task(description, total=..., status="")`. `to_stderr` keeps stdout for
  what a command prints as its result (tables, JSON).
  """
  console = Console(stderr=True) if to_stderr else None
  return Progress(TextColumn(label), TextColumn("{task.description}"), MofNCompleteColumn(),
                  BarColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=console,
                  disable=not enabled, transient=False)
