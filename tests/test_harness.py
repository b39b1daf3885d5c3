"""The matched-compute sweep end to end: `tokenzero eval` on a fresh run writes the JSON, the
plot and the table."""

import json
import math

from tokenzero import cli, report
from tokenzero import config as config_lib
from tokenzero import loop as train_lib


def test_eval_cli_writes_json_plot_and_table(tmp_path, capsys):
  run_dir = tmp_path / "run"
  config = config_lib.resolve(overrides=[
      "iterations=0", "task.params.length=2", "model.d_model=16", "model.num_heads=2",
      "model.num_layers=1", "eval.num_prompts=5"])
  train_lib.train(config, run_dir, progress=False, log=lambda s: None)  # the initial network
  argv = ["eval", str(run_dir), "--methods", "greedy,beam", "--budgets", "2", "--batch-size",
          "4", "--no-progress"]
  assert cli.main(argv) == 0
  stdout = capsys.readouterr().out
  assert "| beam |" in stdout and "eval.json" in stdout
  data = json.loads((run_dir / "eval.json").read_text())
  assert data["schema"] == report.SCHEMA and data["meta"]["task"] == "sort"
  assert [(r["method"], r["budget"]) for r in data["rows"]] == [("greedy", 1), ("beam", 2)]
  required = {"method": str, "budget": int, "mean_reward": float, "success_rate": float,
              "forward_tokens_per_token": float, "wall_s": float, "stderr": float}
  for row in data["rows"]:
    assert set(row) == set(report.ROW_FIELDS)
    for key, kind in required.items():
      assert isinstance(row[key], kind), key
    assert 0.0 <= row["mean_reward"] <= 1.0 and 0.0 <= row["success_rate"] <= 1.0
    assert row["num_prompts"] == 5 and row["wall_s"] >= 0 and math.isfinite(row["stderr"])
  assert data["rows"][0]["forward_tokens_per_token"] == 1.0
  rows, meta = report.load_json(run_dir / "eval.json")
  assert [r.method for r in rows] == ["greedy", "beam"] and meta["num_prompts"] == 5
  assert (run_dir / "eval.png").stat().st_size > 1000
  assert report.markdown_table(rows).count("\n") == 4
  assert cli.main(["eval", str(run_dir), "--methods", "greedy,nosuch"]) == 2
  assert "unknown method" in capsys.readouterr().err
