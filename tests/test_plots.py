"""The plots render to PNG files without pyplot."""

import pytest

from tokenzero import plots, report


def _row(method, budget, reward):
  return report.Row(method=method, budget=budget, mean_reward=reward, stderr=0.01,
                    success_rate=reward, success_stderr=0.02, forward_tokens_per_token=budget,
                    forward_tokens_per_sequence=3.0 * budget, wall_s=0.1, compile_s=1.0,
                    num_prompts=8, decoder="")


@pytest.mark.parametrize("metric", ["mean_reward", "success_rate"])
def test_reward_vs_budget_writes_a_png(tmp_path, metric):
  rows = [_row("greedy", 1, 0.2), _row("beam", 2, 0.4), _row("beam", 4, 0.6),
          _row("unlisted", 4, 0.1)]
  path = tmp_path / "sub" / "eval.png"
  plots.reward_vs_budget(rows, path, title="sort", metric=metric)
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


@pytest.mark.parametrize("rows", [
    [{"iteration": 0, "eval_greedy_reward": 0.1, "eval_greedy_success": 0.0}],
    [{"iteration": i, "eval_greedy_reward": 0.1 * i, "selfplay_reward": 0.2,
      "loss_policy": 1.0 / (i + 1), "loss_value": 0.5} for i in range(4)],
], ids=["no_losses", "four_iterations"])
def test_learning_curve_writes_a_png(tmp_path, rows):
  path = tmp_path / "curve.png"
  plots.learning_curve(rows, path, title="run")
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
