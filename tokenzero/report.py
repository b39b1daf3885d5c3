"""A sweep's results: one `Row` per (method, budget), saved as JSON and shown as a table.

`save_json` / `load_json` write and read `{"schema", "meta", "rows"}` (`tokenzero.eval/2`; files
in `/1` still load, see `load_json`); `markdown_table` puts methods down, verifier-free ones
first, and budgets across; `markdown_costs` is one line per row with every measured cost. The pictures are `plots.reward_vs_compute`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from tokenzero.methods import VERIFIER_METHODS

SCHEMA = "tokenzero.eval/2"
SCHEMA_V1 = "tokenzero.eval/1"


@dataclasses.dataclass(frozen=True)
class Row:
  """One (method, budget) of a sweep, over all its prompts. Costs are measured: what the decoder
  ran (`decoders.Decoded`), not what its budget says."""
  method: str
  budget: int  # nominal forward tokens per generated token
  mean_reward: float
  stderr: float  # standard error of mean_reward over prompts
  success_rate: float  # fraction of prompts with reward >= the success threshold
  success_stderr: float
  forward_tokens_per_token: float  # forward tokens run / answer tokens returned
  forward_tokens_per_answer: float  # forward tokens run per prompt
  # Completions handed to the reward per prompt while decoding (NaN: not counted, a /1 file).
  reward_calls_per_answer: float
  uses_verifier: bool  # the method calls the reward to decide (best-of-n by reward, search)
  wall_s: float  # decoding all prompts, compilation excluded
  wall_s_per_answer: float  # wall_s / num_prompts
  compile_s: float
  num_prompts: int
  decoder: str  # the decoder and its settings
  # Prompts that differ among the num_prompts (a small space's draws repeat); the standard
  # errors are clustered by prompt. 0: not counted (a file from before the field).
  distinct_prompts: int = 0
  # XLA compilations while sweeping this row (its decoder's, and on the first row the reward's
  # and the key derivation's; persistent-cache loads included), and how many of them came after
  # its first batch: 0, since every batch has the first one's shapes. -1: not counted (a file
  # from before the fields).
  compiles: int = -1
  recompiles: int = -1


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
  """Reads what `save_json` wrote -> (rows, meta); a wrong schema is an error.

  A `/1` file's rows are upgraded: `forward_tokens_per_answer` is its
  `forward_tokens_per_sequence` (as /1 measured it: tree search's was its nominal S+1 per
  token, not a count), `wall_s_per_answer` is `wall_s / num_prompts`, `uses_verifier` follows
  the method's name (`methods.VERIFIER_METHODS`), and `reward_calls_per_answer`, never counted
  in /1, is 0 for the methods that never call the reward and NaN for those that do.
  """
  data = json.loads(Path(path).read_text())
  schema = data.get("schema")
  if schema not in (SCHEMA, SCHEMA_V1):
    raise ValueError(f"{path}: not a tokenzero eval file (schema {schema!r})")
  rows = [_from_v1(row) if schema == SCHEMA_V1 else row for row in data["rows"]]
  return [Row(**{k: row[k] for k in ROW_FIELDS if k in row}) for row in rows], data.get("meta", {})


def _from_v1(row: Mapping[str, Any]) -> dict[str, Any]:
  uses_verifier = row["method"] in VERIFIER_METHODS
  return dict(row, forward_tokens_per_answer=row["forward_tokens_per_sequence"],
              reward_calls_per_answer=math.nan if uses_verifier else 0.0,
              uses_verifier=uses_verifier,
              wall_s_per_answer=row["wall_s"] / max(row["num_prompts"], 1))


def markdown_table(rows: Sequence[Row]) -> str:
  """Methods down (those that use no verifier first, then those that call the reward), budgets
  across: `mean reward ± stderr` and the measured forward tokens per answer in each cell."""
  budgets = sorted({row.budget for row in rows})
  lines = ["| method | verifier | " + " | ".join(f"b={b}" for b in budgets) + " |",
           "|---|---|" + "---|" * len(budgets)]
  methods = dict.fromkeys(row.method for row in rows)
  uses_verifier = {row.method: row.uses_verifier for row in rows}
  for method in sorted(methods, key=lambda m: uses_verifier[m]):  # stable: sweep order kept
    cells = {r.budget: f"{r.mean_reward:.3f} ± {r.stderr:.3f} ({r.forward_tokens_per_answer:.0f} "
                       f"fwd)" for r in rows if r.method == method}
    lines.append(f"| {method} | {'yes' if uses_verifier[method] else 'no'} | "
                 + " | ".join(cells.get(b, "") for b in budgets) + " |")
  return "\n".join(lines) + "\n"


def markdown_costs(rows: Sequence[Row]) -> str:
  """One line per (method, budget), verifier-free methods first: reward and success with their
  standard errors, and every measured cost per answer (forward tokens, reward calls, wall-clock)."""
  lines = ["| method | verifier | b | reward | success | fwd tokens / answer | reward calls / answer "
           "| ms / answer | prompts (distinct) |", "|---|---|---|---|---|---|---|---|---|"]
  for r in sorted(rows, key=lambda r: r.uses_verifier):  # stable: sweep order kept
    lines.append(
        f"| {r.method} | {'yes' if r.uses_verifier else 'no'} | {r.budget} | "
        f"{r.mean_reward:.3f} ± {r.stderr:.3f} | {r.success_rate:.3f} ± {r.success_stderr:.3f} | "
        f"{r.forward_tokens_per_answer:.1f} | {r.reward_calls_per_answer:.1f} | "
        f"{1000 * r.wall_s_per_answer:.2f} | {r.num_prompts} ({r.distinct_prompts}) |")
  return "\n".join(lines) + "\n"
