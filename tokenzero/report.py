"""A sweep's results: one `Row` per (method, budget), saved as JSON and shown as a table.

`save_json` / `load_json` write and read `{"schema", "meta", "rows"}`; `markdown_table` puts
methods down and budgets across. The reward-vs-budget picture is `plots.reward_vs_budget`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

SCHEMA = "tokenzero.eval/1"


@dataclasses.dataclass(frozen=True)
class Row:
  """One (method, budget) of a sweep, over all its prompts."""
  method: str
  budget: int  # nominal forward tokens per generated token
  mean_reward: float
  stderr: float  # standard error of mean_reward over prompts
  success_rate: float  # fraction of prompts with reward >= the success threshold
  success_stderr: float
  forward_tokens_per_token: float  # measured: forward tokens spent / answer tokens returned
  forward_tokens_per_sequence: float  # measured: forward tokens spent per prompt
  wall_s: float  # decoding all prompts, compilation excluded
  compile_s: float
  num_prompts: int
  decoder: str  # the decoder and its settings
  # Prompts that differ among the num_prompts (a small space's draws repeat); the standard
  # errors are clustered by prompt. 0: not counted (a file from before the field).
  distinct_prompts: int = 0


ROW_FIELDS = tuple(f.name for f in dataclasses.fields(Row))


def to_json(rows: Sequence[Row], meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
  return {"schema": SCHEMA, "meta": dict(meta or {}),
          "rows": [dataclasses.asdict(row) for row in rows]}


def save_json(path: str | Path, rows: Sequence[Row],
              meta: Mapping[str, Any] | None = None) -> None:
  """Writes `{"schema", "meta", "rows": [Row fields...]}`, atomically."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(to_json(rows, meta), indent=2, default=str) + "\n")
  tmp.replace(path)


def load_json(path: str | Path) -> tuple[list[Row], dict[str, Any]]:
  """Reads what `save_json` wrote -> (rows, meta); a wrong schema is an error."""
  data = json.loads(Path(path).read_text())
  if data.get("schema") != SCHEMA:
    raise ValueError(f"{path}: not a tokenzero eval file (schema {data.get('schema')!r})")
  return ([Row(**{k: row[k] for k in ROW_FIELDS if k in row}) for row in data["rows"]],
          data.get("meta", {}))


def markdown_table(rows: Sequence[Row]) -> str:
  """Methods down, budgets across: `mean reward ± stderr` in each cell."""
  budgets = sorted({row.budget for row in rows})
  lines = ["| method | " + " | ".join(f"b={b}" for b in budgets) + " |",
           "|---|" + "---|" * len(budgets)]
  for method in dict.fromkeys(row.method for row in rows):
    cells = {r.budget: f"{r.mean_reward:.3f} ± {r.stderr:.3f}" for r in rows if r.method == method}
    lines.append(f"| {method} | " + " | ".join(cells.get(b, "") for b in budgets) + " |")
  return "\n".join(lines) + "\n"
