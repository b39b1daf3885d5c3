"""The plots render to PNG files without pyplot."""

import pytest

from tokenzero import plots, report


def _row(method, budget, reward, uses_verifier=False):
  return report.Row(method=method, budget=budget, mean_reward=reward, stderr=0.01,
                    success_rate=reward, success_stderr=0.02, forward_tokens_per_token=budget,
                    forward_tokens_per_answer=3.0 * budget,
                    reward_calls_per_answer=float(budget) if uses_verifier else 0.0,
                    uses_verifier=uses_verifier, wall_s=0.1 * budget,
                    wall_s_per_answer=0.01 * budget, compile_s=1.0, num_prompts=8, decoder="")


@pytest.mark.parametrize("metric", ["mean_reward", "success_rate"])
def test_reward_vs_compute_draws_two_panels(tmp_path, metric):
  rows = [_row("greedy", 1, 0.2), _row("beam", 2, 0.4), _row("beam", 4, 0.6),
          _row("best_of_n", 2, 0.5, True), _row("best_of_n", 4, 0.7, True),
          _row("unlisted", 4, 0.1)]
  path = tmp_path / "sub" / "eval.png"
  figure = plots.reward_vs_compute(rows, path, title="sort", metric=metric)
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
  cost, wall = figure.axes
  for ax, per_answer in [(cost, 3.0), (wall, 0.01)]:
    assert ax.get_xscale() == "log"
    lines = {bars.get_label(): bars.lines[0] for bars in ax.containers}  # errorbar's data lines
    # x is the measured cost per answer, not the budget; a verifier-using method is dashed.
    assert list(lines["beam"].get_xdata()) == pytest.approx([2 * per_answer, 4 * per_answer])
    assert lines["beam"].get_linestyle() == "-"
    assert lines["best_of_n (verifier)"].get_linestyle() == "--"
    assert lines["beam"].get_color() != lines["best_of_n (verifier)"].get_color()


DIAGNOSTICS = {"value_error": 0.4, "search_value_error": 0.3, "return_std": 0.45,
               "target_entropy": 0.5, "prior_entropy": 1.5, "root_kl": 0.8,
               "greedy_agreement": 0.7, "terminal_reached": 0.9, "terminal_on_pick": 0.6,
               "explore_fraction": 0.1, "offpolicy_fraction": 0.5}


@pytest.mark.parametrize("rows", [
    [{"iteration": 0, "eval_greedy_reward": 0.1, "eval_greedy_success": 0.0}],
    [{"iteration": i, "eval_greedy_reward": 0.1 * i, "selfplay_reward": 0.2,
      "loss_policy": 1.0 / (i + 1), "loss_value": 0.5, **DIAGNOSTICS,
      **({"reward_gap": 0.2 - 0.1 * i} if i % 2 else {})} for i in range(4)],
], ids=["no_losses", "four_iterations"])
def test_learning_curve_writes_a_png(tmp_path, rows):
  path = tmp_path / "curve.png"
  figure = plots.learning_curve(rows, path, title="run")
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
  plotted = {line.get_label(): list(line.get_xdata()) for ax in figure.axes for line in ax.lines
             if not line.get_label().startswith("_")}
  if len(rows) == 1:
    assert set(plotted) == {"greedy success (held-out)", "greedy reward (held-out)"}
    return
  # Every diagnostic has its line; the reward gap only at the iterations that evaluated it.
  labels = {label for _, keys, _ in plots._DIAGNOSTIC_PANELS for _, label in keys}
  assert labels <= set(plotted) and len(figure.axes) == 6
  assert plotted["self-play - greedy reward"] == [1, 3]
  assert plotted["KL(search || prior)"] == [0, 1, 2, 3]
