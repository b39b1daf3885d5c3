"""The matched-compute sweep end to end: `tokenzero eval` on a fresh run writes the JSON, the
plot and the table."""

import json
import math

import numpy as np
import pytest

from tokenzero import cli, harness, prompts, report
from tokenzero import config as config_lib
from tokenzero import loop as train_lib


def test_eval_cli_writes_json_plot_and_table(tmp_path, capsys):
  run_dir = tmp_path / "run"
  config = config_lib.resolve(overrides=[
      "iterations=0", "task.params.length=2", "model.d_model=16", "model.num_heads=2",
      "model.num_layers=1", "eval.num_prompts=5"])
  train_lib.train(config, run_dir, progress=False, log=lambda s: None)  # the initial network
  argv = ["eval", str(run_dir), "--methods", "greedy,beam,best_of_n", "--budgets", "2",
          "--batch-size", "4", "--no-progress"]
  assert cli.main(argv) == 0
  stdout = capsys.readouterr().out
  assert "| beam |" in stdout and "eval.json" in stdout
  data = json.loads((run_dir / "eval.json").read_text())
  assert data["schema"] == report.SCHEMA and data["meta"]["task"] == "sort"
  assert [(r["method"], r["budget"]) for r in data["rows"]] == [("greedy", 1), ("beam", 2),
                                                                ("best_of_n", 2)]
  required = {"method": str, "budget": int, "mean_reward": float, "success_rate": float,
              "forward_tokens_per_token": float, "forward_tokens_per_answer": float,
              "reward_calls_per_answer": float, "uses_verifier": bool, "wall_s": float,
              "wall_s_per_answer": float, "stderr": float, "compiles": int, "recompiles": int}
  for row in data["rows"]:
    assert set(row) == set(report.ROW_FIELDS)
    for key, kind in required.items():
      assert isinstance(row[key], kind), key
    assert 0.0 <= row["mean_reward"] <= 1.0 and 0.0 <= row["success_rate"] <= 1.0
    assert row["num_prompts"] == 5 and row["wall_s"] >= 0 and math.isfinite(row["stderr"])
    assert 1 <= row["distinct_prompts"] <= 5
    # Two batches of 4, the second padded: one program serves both, nothing recompiles.
    assert row["compiles"] > 0 and row["recompiles"] == 0
    assert row["wall_s_per_answer"] == pytest.approx(row["wall_s"] / 5)
    # Both measured figures share the forwards: their ratio is the mean answer length.
    answer_tokens = row["forward_tokens_per_answer"] / row["forward_tokens_per_token"]
    assert 1 <= answer_tokens <= 3
  greedy, beam, best_of_n = data["rows"]
  assert greedy["forward_tokens_per_token"] == 1.0
  assert not greedy["uses_verifier"] and not beam["uses_verifier"] and best_of_n["uses_verifier"]
  assert greedy["reward_calls_per_answer"] == beam["reward_calls_per_answer"] == 0.0
  assert best_of_n["reward_calls_per_answer"] == 2.0  # its two samples, each scored once
  rows, meta = report.load_json(run_dir / "eval.json")
  assert [r.method for r in rows] == ["greedy", "beam", "best_of_n"]
  assert meta["num_prompts"] == 5
  assert (run_dir / "eval.png").stat().st_size > 1000
  assert report.markdown_table(rows).count("\n") == 5
  assert cli.main(["eval", str(run_dir), "--methods", "greedy,nosuch"]) == 2
  assert "unknown method" in capsys.readouterr().err


@pytest.mark.parametrize("values, clusters, expected", [
    # Two prompts drawn twice each: as sure as two independent draws (1 and 0), not four.
    ([1.0, 1.0, 0.0, 0.0], [0, 0, 1, 1], 0.5),
    # One draw per prompt: the usual std(ddof=1) / sqrt(n).
    ([1.0, 0.0, 0.0, 0.0], [0, 1, 2, 3], 0.25),
    # sums of deviations per cluster (-1/2, 1/2, 0): sqrt(3/2 * (1/4 + 1/4) / 4^2).
    ([0.0, 0.5, 1.0, 0.5], [0, 0, 1, 2], np.sqrt(3 / 2 * 0.5) / 4),
    ([1.0, 0.0, 1.0], [7, 7, 7], 0.0),  # one prompt: nothing to estimate from.
])
def test_standard_errors_are_clustered_by_prompt(values, clusters, expected):
  got = harness.clustered_stderr(np.asarray(values), np.asarray(clusters))
  assert got == pytest.approx(expected)


def test_prompt_ids_make_one_cluster_of_each_repeated_prompt(sort_task):
  batch = prompts.encode_batch(sort_task.tokenizer, ["123", "12", "123", "321", "12"],
                               sort_task.prompt_len)
  ids = harness.prompt_ids(batch)
  assert ids.shape == (5,) and len(set(ids.tolist())) == 3
  assert ids[0] == ids[2] and ids[1] == ids[4] and len({ids[0], ids[1], ids[3]}) == 3
