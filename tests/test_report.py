"""Sweep results: the JSON round-trips, /1 files still load, a foreign file is refused, and the
table keeps verifier-using methods apart."""

import json
import math

import pytest

from tokenzero import report


def make_rows():
  """Two fixed-cost rows and a budgeted method at two budgets."""
  base = dict(stderr=0.01, success_rate=0.5, success_stderr=0.1, forward_tokens_per_token=1.0,
              reward_calls_per_answer=0.0, uses_verifier=False, wall_s=0.1,
              wall_s_per_answer=0.0125, compile_s=1.0, num_prompts=8, decoder="Greedy()")
  return [report.Row(method="greedy", budget=1, mean_reward=0.25, forward_tokens_per_answer=3.0,
                     **base),
          report.Row(method="beam", budget=2, mean_reward=0.5, forward_tokens_per_answer=6.0,
                     **base),
          report.Row(method="beam", budget=4, mean_reward=0.75, forward_tokens_per_answer=10.0,
                     **base)]


def test_json_round_trip(tmp_path):
  rows = make_rows()
  path = tmp_path / "out" / "eval.json"
  report.save_json(path, rows, {"task": "sort"})
  data = json.loads(path.read_text())
  assert data["schema"] == report.SCHEMA == "tokenzero.eval/2"
  assert all(set(row) == set(report.ROW_FIELDS) for row in data["rows"])
  loaded, meta = report.load_json(path)
  assert loaded == rows and meta == {"task": "sort"}
  path.write_text(json.dumps({"schema": "other/1", "rows": []}))
  with pytest.raises(ValueError, match="not a tokenzero eval file"):
    report.load_json(path)


def test_a_schema_1_file_loads_with_the_new_fields_filled(tmp_path):
  """A row as `tokenzero.eval/1` wrote it: per-sequence forwards, no verifier fields."""
  old = dict(budget=4, mean_reward=0.5, stderr=0.01, success_rate=0.5, success_stderr=0.1,
             forward_tokens_per_token=4.0, forward_tokens_per_sequence=12.0, wall_s=2.0,
             compile_s=1.0, num_prompts=8, decoder="")
  path = tmp_path / "eval.json"
  path.write_text(json.dumps({"schema": "tokenzero.eval/1", "meta": {"task": "sort"},
                              "rows": [dict(old, method="beam"), dict(old, method="mcts")]}))
  (beam, mcts), meta = report.load_json(path)
  assert meta == {"task": "sort"}
  assert beam.forward_tokens_per_answer == 12.0 and beam.wall_s_per_answer == 0.25
  assert not beam.uses_verifier and beam.reward_calls_per_answer == 0.0
  assert mcts.uses_verifier and math.isnan(mcts.reward_calls_per_answer)
  assert beam.distinct_prompts == 0  # not counted then


def test_markdown_table_groups_verifier_methods_and_shows_forward_tokens():
  rows = make_rows()
  verifier = report.Row(**dict(vars(rows[2]), method="best_of_n", uses_verifier=True,
                               reward_calls_per_answer=4.0))
  table = report.markdown_table([verifier] + rows)
  lines = table.splitlines()
  assert lines[0] == "| method | verifier | b=1 | b=2 | b=4 |"
  assert lines[2] == "| greedy | no | 0.250 ± 0.010 (3 fwd) |  |  |"
  assert lines[3] == "| beam | no |  | 0.500 ± 0.010 (6 fwd) | 0.750 ± 0.010 (10 fwd) |"
  assert lines[4] == "| best_of_n | yes |  |  | 0.750 ± 0.010 (10 fwd) |"


def test_markdown_costs_has_a_line_per_row_with_every_measured_cost():
  rows = make_rows()
  verifier = report.Row(**dict(vars(rows[2]), method="best_of_n", uses_verifier=True,
                               reward_calls_per_answer=4.0))
  lines = report.markdown_costs([verifier] + rows).splitlines()
  assert len(lines) == 2 + len(rows) + 1
  assert lines[-1].startswith("| best_of_n | yes | 4 | 0.750 ± 0.010 |")
  assert "| 4.0 |" in lines[-1]  # its reward calls
  greedy = rows[0]
  assert lines[2] == (f"| greedy | no | 1 | 0.250 ± 0.010 | {greedy.success_rate:.3f} ± "
                      f"{greedy.success_stderr:.3f} | 3.0 | {greedy.reward_calls_per_answer:.1f} | "
                      f"{1000 * greedy.wall_s_per_answer:.2f} | {greedy.num_prompts} "
                      f"({greedy.distinct_prompts}) |")
