"""Pictures of a run (`learning_curve`) and of a decoding sweep (`reward_vs_compute`).

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


# The learning-curve panels after rewards and losses: (title, [(metrics key, label)], y limits).
_DIAGNOSTIC_PANELS = [
    ("value (reward units)", [("value_error", "RMSE root value vs return"),
                              ("search_value_error", "RMSE search value vs return"),
                              ("return_std", "return spread (RMSE of a constant)"),
                              ("reward_gap", "self-play - greedy reward")], None),
    ("policy entropy at the root (nats)", [("target_entropy", "search policy (the target)"),
                                           ("prior_entropy", "network prior (top-K)")], None),
    ("search policy vs network prior (nats)", [("root_kl", "KL(search || prior)")], None),
    ("fraction of self-play steps", [("terminal_reached", "tree held a complete answer"),
                                     ("terminal_on_pick", "... under the search's pick"),
                                     ("greedy_agreement", "prior's top = search's top"),
                                     ("explore_fraction", "uniform exploration"),
                                     ("offpolicy_fraction", "not the search's pick")],
     (-0.02, 1.02)),
]


def _plot_keys(ax, rows, keys) -> None:
  for key, label in keys:
    points = [(r["iteration"], r[key]) for r in rows if r.get(key) is not None]
    if points:
      ax.plot(*zip(*points), label=label)


def learning_curve(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Figure:
  """Rewards and losses (top), the learning diagnostics (`tokenzero.diagnostics`, bottom)
  against iteration. Returns the figure, already written to `path`."""
  fig = Figure(figsize=(15, 8))
  (ax_reward, ax_loss, ax_value), (ax_entropy, ax_kl, ax_fraction) = fig.subplots(2, 3)
  _plot_keys(ax_reward, rows, [("eval_greedy_success", "greedy success (held-out)"),
                               ("eval_greedy_reward", "greedy reward (held-out)"),
                               ("selfplay_reward", "self-play reward"),
                               ("curriculum_success", "greedy success (curriculum size)")])
  ax_reward.set_ylim(-0.02, 1.02)
  ax_reward.legend(loc="lower right")
  _plot_keys(ax_loss, rows, [("loss_policy", "loss_policy"), ("loss_value", "loss_value")])
  if ax_loss.lines:  # a run of 0 iterations has no losses yet.
    ax_loss.set_yscale("log")
    ax_loss.legend()
  diagnostic_axes = (ax_value, ax_entropy, ax_kl, ax_fraction)
  for ax, (panel, keys, ylim) in zip(diagnostic_axes, _DIAGNOSTIC_PANELS):
    _plot_keys(ax, rows, keys)
    ax.set_title(panel, fontsize="medium")
    if ylim:
      ax.set_ylim(*ylim)
    if ax.lines:
      ax.legend(fontsize="small")
  ax_value.axhline(0.0, color="gray", linewidth=0.8)
  for ax in fig.axes:
    ax.set_xlabel("iteration")
    ax.grid(alpha=0.3)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return fig


def _color(method: str):
  """A method keeps its colour across plots: the reader compares pictures side by side."""
  if method not in METHODS:
    return None
  palette = matplotlib.colormaps["tab20"].colors
  index = 2 * METHODS.index(method)
  return palette[index % 20 + index // 20]


def reward_vs_compute(rows: Sequence[Row], path: str | Path, *, title: str = "",
                      metric: str = "mean_reward") -> Figure:
  """Reward (or `metric`) against what each answer cost, measured: forward tokens per answer
  (left) and wall-clock seconds per answer (right), log x, standard-error bars. One line per
  method through its budgets; methods that call the reward (a verifier) are dashed with square
  markers, the others solid with circles; fixed-cost methods are one point and a dotted level.
  Returns the figure, already written to `path`."""
  error = {"mean_reward": "stderr", "success_rate": "success_stderr"}.get(metric)
  fig = Figure(figsize=(12.4, 4.6))
  axes = fig.subplots(1, 2, sharey=True)
  costs = [("forward_tokens_per_answer", "forward tokens per answer (measured)"),
           ("wall_s_per_answer", "wall-clock seconds per answer")]
  for ax, (cost, label) in zip(axes, costs):
    for method in dict.fromkeys(row.method for row in rows):
      mine = sorted((r for r in rows if r.method == method), key=lambda r: r.budget)
      color = _color(method)
      y = [getattr(r, metric) for r in mine]
      style = dict(linestyle="--", marker="s") if mine[0].uses_verifier else dict(marker="o")
      suffix = " (verifier)" if mine[0].uses_verifier else ""
      ax.errorbar([getattr(r, cost) for r in mine], y,
                  yerr=[getattr(r, error) for r in mine] if error else None, capsize=3,
                  color=color, label=method + suffix, **style)
      if method in FIXED_COST_METHODS:
        ax.axhline(y[0], linestyle=":", linewidth=1, color=color, alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel(metric.replace("_", " "))
  axes[1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  return fig
