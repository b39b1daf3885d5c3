"""Pictures of a run (`learning_curve`) and of a decoding sweep (`reward_vs_budget`).

matplotlib's object-oriented API: a `Figure` renders to a file on its own, so no pyplot state
and no backend switch (headless machines just work).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib
from matplotlib.figure import Figure

from tokenzero.methods import FIXED_COST_METHODS, METHODS
from tokenzero.report import Row


def learning_curve(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> None:
  fig = Figure(figsize=(10, 4))
  ax_reward, ax_loss = fig.subplots(1, 2)
  for key, label in [("eval_greedy_success", "greedy success (held-out)"),
                     ("eval_greedy_reward", "greedy reward (held-out)"),
                     ("selfplay_reward", "self-play reward")]:
    points = [(r["iteration"], r[key]) for r in rows if r.get(key) is not None]
    if points:
      ax_reward.plot(*zip(*points), label=label)
  ax_reward.set_xlabel("iteration")
  ax_reward.set_ylim(-0.02, 1.02)
  ax_reward.legend(loc="lower right")
  ax_reward.grid(alpha=0.3)
  for key in ("loss_policy", "loss_value"):
    points = [(r["iteration"], r[key]) for r in rows if r.get(key) is not None]
    if points:
      ax_loss.plot(*zip(*points), label=key)
  ax_loss.set_xlabel("iteration")
  if ax_loss.lines:  # a run of 0 iterations has no losses yet.
    ax_loss.set_yscale("log")
    ax_loss.legend()
  ax_loss.grid(alpha=0.3)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def reward_vs_budget(rows: Sequence[Row], path: str | Path, *, title: str = "",
                     metric: str = "mean_reward") -> None:
  """Reward (or `metric`) vs budget, log x, one line per method with standard-error bars;
  fixed-cost methods are flat dashed lines across the budgets."""
  error = {"mean_reward": "stderr", "success_rate": "success_stderr"}.get(metric)
  budgets = sorted({row.budget for row in rows})
  span = [min(budgets), max(max(budgets), 2)]
  fig = Figure(figsize=(7.6, 4.4))
  ax = fig.subplots()
  palette = matplotlib.colormaps["tab20"].colors
  for method in dict.fromkeys(row.method for row in rows):
    # A method keeps its colour across plots: the reader compares pictures side by side.
    index = 2 * METHODS.index(method) if method in METHODS else None
    color = palette[index % 20 + index // 20] if index is not None else None
    mine = sorted((r for r in rows if r.method == method), key=lambda r: r.budget)
    y = [getattr(r, metric) for r in mine]
    err = [getattr(r, error) for r in mine] if error else None
    if method in FIXED_COST_METHODS:
      ax.plot(span, [y[0]] * 2, linestyle="--", color=color, label=method)
      ax.errorbar([mine[0].budget], y[:1], yerr=err[:1] if err else None, fmt="o",
                  color=color, capsize=3)
    else:
      ax.errorbar([r.budget for r in mine], y, yerr=err, marker="o", capsize=3, color=color,
                  label=method)
  ax.set_xscale("log", base=2)
  ax.set_xticks(budgets, [str(b) for b in budgets])
  ax.set_xlabel("budget (forward tokens per generated token)")
  ax.set_ylabel(metric.replace("_", " "))
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
  if title:
    ax.set_title(title)
  fig.tight_layout()
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
