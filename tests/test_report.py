"""Sweep results: the JSON round-trips, a foreign file is refused, the table has one line per
method."""

import json

import pytest

from tokenzero import report


def make_rows():
  """Two fixed-cost rows and a budgeted method at two budgets."""
  base = dict(stderr=0.01, success_rate=0.5, success_stderr=0.1, forward_tokens_per_token=1.0,
              forward_tokens_per_sequence=3.0, wall_s=0.1, compile_s=1.0, num_prompts=8,
              decoder="Greedy()")
  return [report.Row(method="greedy", budget=1, mean_reward=0.25, **base),
          report.Row(method="beam", budget=2, mean_reward=0.5, **base),
          report.Row(method="beam", budget=4, mean_reward=0.75, **base)]


def test_json_round_trip(tmp_path):
  rows = make_rows()
  path = tmp_path / "out" / "eval.json"
  report.save_json(path, rows, {"task": "sort"})
  data = json.loads(path.read_text())
  assert data["schema"] == report.SCHEMA
  assert all(set(row) == set(report.ROW_FIELDS) for row in data["rows"])
  loaded, meta = report.load_json(path)
  assert loaded == rows and meta == {"task": "sort"}
  path.write_text(json.dumps({"schema": "other/1", "rows": []}))
  with pytest.raises(ValueError, match="not a tokenzero eval file"):
    report.load_json(path)


def test_markdown_table_puts_methods_down_and_budgets_across():
  table = report.markdown_table(make_rows())
  lines = table.splitlines()
  assert lines[0] == "| method | b=1 | b=2 | b=4 |"
  assert lines[2] == "| greedy | 0.250 ± 0.010 |  |  |"
  assert lines[3] == "| beam |  | 0.500 ± 0.010 | 0.750 ± 0.010 |"
