"""Plot styles and loss curves shared by the experiments (matplotlib, Agg)."""

from __future__ import annotations

import os
from typing import Any


def curve_style(i: int) -> tuple[str, str, str]:
  """(colour, line style, marker) of the i-th curve of a plot."""
  return f"C{i}", ("-", "--", ":", "-.")[i % 4], "os^Dv"[i % 5]


def plot_loss_curves(runs: dict[str, list[dict]], path: str | os.PathLike,
                     title: str = "", extra_key: str | None = None) -> None:
  """Train (thin) and eval (thick, markers) loss vs step; every run has its
  own colour, line style and marker, so overlapping curves stay
  distinguishable; with `extra_key` (e.g. "test_acc") a second panel."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels = 2 if extra_key else 1
  fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
  ax = axes[0, 0]
  for i, (label, records) in enumerate(runs.items()):
    color, ls, marker = curve_style(i)
    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    evals = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if train:
      ax.plot(*zip(*train), color=color, ls=ls, alpha=0.45, lw=1,
              label=f"{label} train")
    if evals:
      ax.plot(*zip(*evals), color=color, ls=ls, lw=2, marker=marker, ms=5,
              mfc="none" if i % 2 else color, label=f"{label} held-out")
  ax.set_xlabel("step")
  ax.set_ylabel("loss")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  if extra_key:
    ax = axes[0, 1]
    for i, (label, records) in enumerate(runs.items()):
      pts = [(r["step"], r[extra_key]) for r in records if extra_key in r]
      color, ls, marker = curve_style(i)
      if pts:
        ax.plot(*zip(*pts), color=color, ls=ls, marker=marker, ms=5,
                mfc="none" if i % 2 else color, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(extra_key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def save_figure(fig: Any, path: str | os.PathLike) -> None:
  """Lays out, writes (110 dpi) and closes a matplotlib figure."""
  import matplotlib.pyplot as plt
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
