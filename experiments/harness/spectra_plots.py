"""The plot of `experiments.spectra`, redrawn from its spectra.json.

  python -m experiments.harness.spectra_plots --out experiments/results/spectra

One PNG: the orthogonalized fraction vs tau per model width for
tau_mode="spacing" and "relative", and a histogram of rho per width.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Sequence

import numpy as np

from experiments.harness import cli
from experiments.harness import plots
from experiments.harness.cli import field

STYLES = (dict(color="C0", ls="-", marker="o"),
          dict(color="C3", ls="--", marker="s"),
          dict(color="C2", ls=":", marker="^"),
          dict(color="C4", ls="-.", marker="D"))


@dataclasses.dataclass(frozen=True)
class PlotConfig:
  """Configuration of `spectra_plots` (every field is a `--flag`)."""

  out: str = field("runs/spectra", "folder with spectra.json; spectra.png is"
                   " written there")


def _label(rec: dict[str, Any]) -> str:
  return f"{rec['preset']} (hidden {rec['hidden_size']})"


def plot(result: dict[str, Any], path: str | pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  recs, models = result["records"], result["analysis"]["models"]
  cfg, grids = result["config"], result["tau_grids"]
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
  panels = (("spacing", "tau (spacing: rho = kappa sqrt(r) / median gap)",
             result["default_tau"]),
            ("relative", "tau (relative: kappa / s_max)", 1e-4))
  for ax, (mode, xlabel, mark) in zip(axes, panels):
    grid = np.asarray(grids[mode])
    for i, (preset, m) in enumerate(models.items()):
      ax.semilogx(grid, m["all"][f"orth_frac_{mode}"], label=_label(recs[preset]),
                  markevery=max(len(grid) // 12, 1), ms=5, lw=1.5,
                  **STYLES[i % len(STYLES)])
    ax.axvline(mark, color="k", ls=(0, (1, 3)), lw=1,
               label=f"tau = {mark:g}")
    if mode == "relative":  # gaps at or below it count as 0
      res = result["analysis"]["pooled"]["rel_resolution_quantiles"]["0.5"]
      ax.axvline(res, color="0.5", ls="-.", lw=1,
                 label=f"gate resolution / s_max (median) = {res:.1e}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction orthogonalized")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"tau_mode=\"{mode}\": fraction of (step, matrix) with"
                 f" stat >= tau", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
  ax = axes[2]
  all_rho = [np.asarray(r["stats"]["rho"], float).ravel() for r in recs.values()]
  pos = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in all_rho])
  bins = np.linspace(np.log10(pos.min()) - 0.1, np.log10(pos.max()) + 0.1, 41)
  for i, (preset, rho) in enumerate(zip(recs, all_rho)):
    v = rho[np.isfinite(rho) & (rho > 0)]
    style = STYLES[i % len(STYLES)]
    ax.hist(np.log10(v), bins=bins, histtype="step", density=True, lw=1.5,
            color=style["color"], ls=style["ls"],
            label=f"{_label(recs[preset])}: {v.size} of {rho.size}"
            f" (rho = 0 for {np.sum(rho == 0)}, not shown)")
  ax.axvline(np.log10(result["default_tau"]), color="k", ls=(0, (1, 3)), lw=1,
             label=f"default tau = {result['default_tau']:g}")
  ax.set_xlabel("log10 rho")
  ax.set_ylabel("density")
  ax.set_title("rho of the gate's input, per width (samples with rho > 0)",
               fontsize=9)
  ax.legend(fontsize=8)
  steps = next(iter(recs.values()))["steps"]
  fig.suptitle(
      f"Nesterov momenta of Muon (beta 0.95) training Qwen3 on Shakespeare"
      f" bytes: {', '.join(recs)}, {steps[-1]} steps, batch"
      f" {cfg['batch_size']}x{cfg['seq_len']}, measured at step 1 and every"
      f" {cfg['record_every']} (q/k/v/o/gate/up/down), 2-core CPU",
      fontsize=10)
  plots.save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> None:
  cfg = cli.parse_config(PlotConfig, __doc__.split("\n\n")[0], argv)
  out = pathlib.Path(cfg.out)
  plot(json.loads((out / "spectra.json").read_text()), out / "spectra.png")


if __name__ == "__main__":
  main()
