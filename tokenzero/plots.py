"""Learning-curve plot of a run's metrics (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def learning_curve(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax_reward, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
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
  plt.close(fig)
