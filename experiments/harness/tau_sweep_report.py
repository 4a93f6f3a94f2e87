"""The tables, plots and files of a `experiments.tau_sweep` run.

It reads results only: `cfg` is any config with `task` and `seeds`, an arm
any object with `name`, `optimizer`, `tau` and `sgd_scale`.

  rows = summarize(cfg, arms, runs, chosen)   # per arm: mean, std, vs Muon
  write_outputs(cfg, out, report, command)    # runs.json, results.*, PNGs

Writes runs.json (every run), results.csv and results.md (per arm),
tau_sweep.png (test loss and gap vs orthogonalized fraction, seed bars),
curves.png (validation loss vs step per arm, seed band) and COMMAND.md.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
from typing import Any, Sequence

import numpy as np

from experiments.harness import plots
from experiments.harness import reporting

METRICS = ("train_loss", "val_loss", "test_loss", "gap", "test_acc",
           "orth_frac", "val_change_last20")
# A run has converged when its validation loss changed by less than this
# (relative) over the last LAST_FRACTION of its steps (issue 25).
CONVERGED_CHANGE = 0.01
LAST_FRACTION = 0.2


def last_change(run: dict, fraction: float = LAST_FRACTION) -> float | None:
  """Relative change of validation loss over the last `fraction` of steps.

  (val at the end - val at the last evaluation at or before (1 - fraction)
  * steps) / the latter; None when the curve has no such earlier point.
  """
  curve = run["curve"]
  start = [c for c in curve if c["step"] <= (1 - fraction) * run["steps"]]
  if not start or start[-1]["step"] == curve[-1]["step"]:
    return None
  before, end = start[-1]["val_loss"], curve[-1]["val_loss"]
  return (end - before) / before


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  a = np.asarray(values, float)
  return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarize(cfg: Any, arms: Sequence[Any], runs: list[dict],
              chosen: dict[str, float]) -> list[dict]:
  """Per arm: mean and std over seeds at the chosen lr, and the paired
  test-loss / gap difference to Muon."""
  finals = {a.name: sorted((r for r in runs if r["arm"] == a.name and
                            r["role"] != "sweep"), key=lambda r: r["seed"])
            for a in arms}
  for r in runs:
    change = last_change(r)
    if change is not None:
      r["val_change_last20"] = change
  rows = []
  for arm in arms:
    group = finals[arm.name]
    row = {"arm": arm.name, "optimizer": arm.optimizer, "tau": arm.tau,
           "sgd_scale": arm.sgd_scale if arm.optimizer == "mimuon" else "",
           "lr": chosen[arm.name], "seeds": len(group),
           "wall_s_per_run": float(np.mean([r["wall_s"] for r in group]))}
    if all("val_change_last20" in r for r in group):
      row["converged"] = sum(abs(r["val_change_last20"]) < CONVERGED_CHANGE
                             for r in group)
    for m in METRICS:
      if all(m in r for r in group):
        row[f"{m}_mean"], row[f"{m}_std"] = mean_std([r[m] for r in group])
    if "muon" in finals and arm.name != "muon":
      for m in ("test_loss", "gap"):
        base = {r["seed"]: r[m] for r in finals["muon"]}
        diffs = [r[m] - base[r["seed"]] for r in group if r["seed"] in base]
        if len(diffs) >= 2:
          mean, std = mean_std(diffs)
          row[f"d_{m}_vs_muon_mean"], row[f"d_{m}_vs_muon_std"] = mean, std
          row[f"d_{m}_vs_muon_significant"] = bool(
              abs(mean) > 2 * std / math.sqrt(len(diffs)))
    rows.append(row)
  return rows


def _pm(row, m, digits=4):
  if f"{m}_mean" not in row:
    return ""
  return f"{row[f'{m}_mean']:.{digits}f} ± {row[f'{m}_std']:.{digits}f}"


def write_outputs(cfg: Any, out: pathlib.Path, report: dict,
                  command: str) -> None:
  runs_json = [{k: v for k, v in r.items() if k != "rho"}
               for r in report["runs"]]
  reporting.write_json(out / "runs.json", {**report, "runs": runs_json})
  rows = report["rows"]
  keys = sorted({k for r in rows for k in r}, key=lambda k: (
      0 if k in ("arm", "optimizer", "tau", "sgd_scale", "lr", "seeds") else 1,
      k))
  with open(out / "results.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
  vision = cfg.task == "vision"
  headers = ["arm", "lr", "orth. fraction", "train loss", "test loss",
             "test - train"] + (["test acc"] if vision else []) + [
                 "Δ test loss vs Muon (paired)", "Δ gap vs Muon (paired)"]
  table_rows = []
  for r in rows:
    diff = []
    for m in ("test_loss", "gap"):
      if f"d_{m}_vs_muon_mean" in r:
        mark = " *" if r[f"d_{m}_vs_muon_significant"] else ""
        diff.append(f"{r[f'd_{m}_vs_muon_mean']:+.4f} ± "
                    f"{r[f'd_{m}_vs_muon_std']:.4f}{mark}")
      else:
        diff.append("")
    table_rows.append([r["arm"], f"{r['lr']:g}", _pm(r, "orth_frac", 2),
                       _pm(r, "train_loss"), _pm(r, "test_loss"), _pm(r, "gap")]
                      + ([_pm(r, "test_acc")] if vision else []) + diff)
  sweep_rows = [[r["arm"], f"{r['lr']:g}", r["val_loss"], r["test_loss"],
                 r.get("orth_frac", ""), "yes" if r["role"] != "sweep" else ""]
                for r in report["runs"] if r["role"] != "final"]
  cal = report["calibration"]
  cal_text = (f"Taus calibrated on Muon's trajectory (lr {cal['lr']:g},"
              f" {cal['steps']} steps, {cal['samples']} rho samples): the"
              f" {cal['quantiles']} quantiles of rho are {cal['taus']}."
              if cal else f"Taus given: {report['taus']}.")
  text = [
      f"# tau sweep: {cfg.task}", "",
      f"Wall time {report['wall_s']:.0f} s. Seeds {list(cfg.seeds)} at the lr"
      f" chosen on the validation split with seed {cfg.seeds[0]}; mean ± std"
      " (ddof 1) over seeds. Δ columns: paired per-seed difference to Muon,"
      " `*` where |mean| > 2 std / sqrt(seeds).", "", cal_text, "",
      reporting.markdown_table(headers, table_rows), "",
      *convergence_text(rows),
      "## lr sweep (seed 0; chosen by validation loss)", "",
      reporting.markdown_table(["arm", "lr", "val loss", "test loss",
                                "orth. fraction", "chosen"], sweep_rows), "",
      f"Task: `{json.dumps({k: v for k, v in report['task'].items() if k != 'model'})}`",
  ]
  (out / "results.md").write_text("\n".join(text) + "\n")
  plot_summary(rows, out / "tau_sweep.png", cfg)
  plot_curves(report["runs"], rows, out / "curves.png", cfg)
  reporting.write_command_md(
      out, f"tau sweep ({cfg.task})", command, cfg.seeds, report["wall_s"],
      notes=[f"runs: {len(report['runs'])}",
             "regenerate: the command above (CPU; numbers vary with the"
             " machine only at rounding level)"])


def convergence_text(rows: list[dict]) -> list[str]:
  """results.md lines: per arm, the validation loss change over the last
  LAST_FRACTION of steps and how many seeds count as converged."""
  rows = [r for r in rows if "converged" in r]
  if not rows:
    return []
  table = [[r["arm"], _pm(r, "val_loss"),
            f"{100 * r['val_change_last20_mean']:+.2f}% ±"
            f" {100 * r['val_change_last20_std']:.2f}%",
            f"{r['converged']} / {r['seeds']}"] for r in rows]
  return [
      "## Convergence", "",
      f"Relative change of validation loss over the last"
      f" {LAST_FRACTION:.0%} of the steps (mean ± std over seeds); a run"
      f" counts as converged when |change| < {CONVERGED_CHANGE:.0%}.", "",
      reporting.markdown_table(["arm", "final val loss",
                                f"change over the last {LAST_FRACTION:.0%}",
                                "converged"], table), ""]


def plot_summary(rows: list[dict], path: pathlib.Path,
                 cfg: Any) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  for ax, metric, label in zip(axes, ("test_loss", "gap"),
                               ("test loss", "test loss - train loss")):
    for i, r in enumerate(rows):
      if f"{metric}_mean" not in r:
        continue
      color, _, marker = plots.curve_style(i)
      x = r.get("orth_frac_mean", np.nan)
      if r["optimizer"] == "adamw":  # no gate: a horizontal band
        ax.axhspan(r[f"{metric}_mean"] - r[f"{metric}_std"],
                   r[f"{metric}_mean"] + r[f"{metric}_std"], color=color,
                   alpha=0.15)
        ax.axhline(r[f"{metric}_mean"], color=color, ls="--",
                   label=f"{r['arm']} (no gate; band: ±std)")
        continue
      ax.errorbar(x, r[f"{metric}_mean"], yerr=r[f"{metric}_std"],
                  xerr=r.get("orth_frac_std", 0), color=color, marker=marker,
                  ms=7, capsize=4, ls="none",
                  mfc="none" if r.get("sgd_scale") == "rms_match" else color,
                  label=f"{r['arm']} (lr {r['lr']:g})")
    ax.set_xlabel("orthogonalized fraction (Muon = 1, SGD = 0)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=7, loc="best")
  fig.suptitle(f"tau sweep, {cfg.task}: mean ± std over seeds {list(cfg.seeds)}"
               " (hollow: sgd_scale=rms_match)", fontsize=10)
  plots.save_figure(fig, path)


def plot_curves(runs: list[dict], rows: list[dict], path: pathlib.Path,
                cfg: Any) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(8, 5))
  for i, row in enumerate(rows):
    group = [r for r in runs if r["arm"] == row["arm"] and r["role"] != "sweep"]
    steps = [c["step"] for c in group[0]["curve"]]
    vals = np.array([[c["val_loss"] for c in r["curve"]] for r in group])
    color, ls, marker = plots.curve_style(i)
    mean = vals.mean(0)
    ax.plot(steps, mean, color=color, ls=ls, marker=marker, ms=4,
            label=f"{row['arm']} (lr {row['lr']:g})")
    if len(group) > 1:
      std = vals.std(0, ddof=1)
      ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.12)
  ax.set_xlabel("step")
  ax.set_ylabel("validation loss")
  ax.set_title(f"{cfg.task}: validation loss, mean over seeds (band: ±std)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  plots.save_figure(fig, path)
