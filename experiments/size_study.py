"""Arms x N x seeds on the LM: the shared part of lm_small_data and lm_finetune.

  results = size_study.study(scfg, calib_task, tasks, "where")  # {n: Task}
  size_study.write_outputs(out, "lm_small_data", title, report, command, seeds)

For every N the lr of each arm is chosen on the validation split with the
first seed (`tau_sweep.train_arms`), the other seeds train at it, and the
per-arm rows with the paired differences to Muon (and round one's rule:
significant where |mean| > 2 std / sqrt(seeds)) come from
`tau_sweep_report.summarize`. Slopes are least-squares fits of log(metric)
vs log(N) over the Ns.
"""

from __future__ import annotations

import csv
import pathlib
from typing import Any, Sequence

import numpy as np

from experiments import tau_sweep
from experiments.harness import plots
from experiments.harness import reporting
from experiments.harness import tau_sweep_report

# The two MiMuon arms: taus whose orthogonalized fraction along Muon's own
# trajectory is about 0.9 and 0.5 (the 0.1 and 0.5 quantiles of rho).
GATED_FRACTIONS = (0.9, 0.5)
FIT_METRICS = ("test_loss", "gap")


def taus_from_calibration(calibration: dict[str, Any],
                          fractions: Sequence[float] = GATED_FRACTIONS
                          ) -> list[float]:
  """The calibrated taus (`tau_sweep.calibrate`) of orthogonalized fractions
  `fractions`, i.e. the rho quantiles 1 - fraction."""
  by_q = {round(q, 6): t for q, t in zip(calibration["quantiles"],
                                         calibration["taus"])}
  missing = [f for f in fractions if round(1 - f, 6) not in by_q]
  if missing:
    raise ValueError(f"fractions {missing}: no calibrated quantile"
                     f" {[round(1 - f, 6) for f in missing]} in"
                     f" {calibration['quantiles']}")
  return [by_q[round(1 - f, 6)] for f in fractions]


def make_arms(taus: Sequence[float], sgd_scale: str = "none"
              ) -> list[tau_sweep.Arm]:
  """AdamW, Muon and MiMuon at each tau (named as in tau_sweep)."""
  return [tau_sweep.Arm("adamw", "adamw", "adamw"),
          tau_sweep.Arm("muon", "muon", "muon")] + [
              tau_sweep.Arm(f"mimuon-{t:.3g}-{sgd_scale}", "mimuon", "muon",
                            t, sgd_scale) for t in taus]


def train_sizes(scfg: tau_sweep.TauSweepConfig,
                tasks: dict[int, tau_sweep.Task],
                arms: Sequence[tau_sweep.Arm]
                ) -> tuple[list[dict], list[dict], dict[int, dict]]:
  """(runs, rows, {n: {arm: lr}}): the protocol of `tau_sweep` at every N.

  `tasks` maps N to a task; every task must share the model (one compiled
  step per (arm, lr) serves every N).
  """
  compiled: dict = {}
  runs, rows, chosen = [], [], {}
  for n, task in tasks.items():
    print(f"-- N = {n:,}", flush=True)
    runs_n, chosen[n] = tau_sweep.train_arms(scfg, task, arms, compiled)
    for r in runs_n:
      r["n"] = n
    runs += runs_n
    rows += [{"n": n, **row} for row in tau_sweep_report.summarize(
        scfg, arms, runs_n, chosen[n])]
  return runs, rows, chosen


def study(scfg: tau_sweep.TauSweepConfig, calib_task: tau_sweep.Task,
          tasks: dict[int, tau_sweep.Task], trajectory: str
          ) -> dict[str, Any]:
  """The taus (`scfg.taus`, or calibrated on `calib_task`: Muon's trajectory
  described by `trajectory`), then `train_sizes`; returns the report's
  calibration, taus, taus_source, chosen_lr, rows, fits and runs."""
  calibration = None
  if scfg.taus is None:
    calibration = tau_sweep.calibrate(scfg, calib_task)
    taus = taus_from_calibration(calibration)
    source = (f"{list(taus)}: the rho quantiles of orthogonalized fraction"
              f" {list(GATED_FRACTIONS)} along Muon's trajectory on"
              f" {trajectory} (lr {calibration['lr']:g},"
              f" {calibration['steps']} steps, {calibration['samples']}"
              " samples)")
  else:
    taus, source = list(scfg.taus), f"{list(scfg.taus)} (given)"
  print(f"MiMuon taus {source}", flush=True)
  runs, rows, chosen = train_sizes(scfg, tasks, make_arms(taus))
  return {"calibration": calibration, "taus": list(taus),
          "taus_source": source,
          "chosen_lr": {str(n): c for n, c in chosen.items()}, "rows": rows,
          "fits": fit_slopes(rows), "runs": runs}


def loglog_slope(n: Sequence[float], y: Sequence[float]) -> float | None:
  """Least-squares slope of log(y) vs log(n); None unless >= 2 points, all
  positive and finite."""
  n, y = np.asarray(n, float), np.asarray(y, float)
  if len(n) < 2 or not (np.all(np.isfinite(y)) and np.all(y > 0)):
    return None
  return float(np.polyfit(np.log(n), np.log(y), 1)[0])


def fit_slopes(rows: list[dict]) -> list[dict]:
  """Per arm: the log-log slope of the seed-mean test loss and gap vs N."""
  fits = []
  for arm in dict.fromkeys(r["arm"] for r in rows):
    sel = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["n"])
    fits.append({"arm": arm, **{
        f"{m}_slope": loglog_slope([r["n"] for r in sel],
                                   [r[f"{m}_mean"] for r in sel])
        for m in FIT_METRICS}})
  return fits


def _pm(row: dict, m: str) -> str:
  if f"{m}_mean" not in row:
    return ""
  return f"{row[f'{m}_mean']:.4f} ± {row[f'{m}_std']:.4f}"


def _diff(row: dict, m: str) -> str:
  if f"d_{m}_vs_muon_mean" not in row:
    return ""
  mark = " *" if row[f"d_{m}_vs_muon_significant"] else ""
  return (f"{row[f'd_{m}_vs_muon_mean']:+.4f} ±"
          f" {row[f'd_{m}_vs_muon_std']:.4f}{mark}")


def results_md(title: str, report: dict, unit: str = "tokens") -> str:
  rows = report["rows"]
  table = reporting.markdown_table(
      [f"N ({unit})", "arm", "lr", "orth. fraction", "train loss",
       "test loss", "test - train", "Δ test loss vs Muon (paired)",
       "Δ gap vs Muon (paired)"],
      [[f"{r['n']:,}", r["arm"], f"{r['lr']:g}", _pm(r, "orth_frac"),
        _pm(r, "train_loss"), _pm(r, "test_loss"), _pm(r, "gap"),
        _diff(r, "test_loss"), _diff(r, "gap")] for r in rows])
  fmt = lambda s: "" if s is None else f"{s:+.3f}"
  slopes = reporting.markdown_table(
      ["arm", "slope of test loss vs N", "slope of test - train vs N"],
      [[f["arm"], fmt(f["test_loss_slope"]), fmt(f["gap_slope"])]
       for f in report["fits"]])
  sweep = reporting.markdown_table(
      ["N", "arm", "lr", "val loss", "chosen"],
      [[f"{r['n']:,}", r["arm"], f"{r['lr']:g}", r["val_loss"],
        "yes" if r["role"] != "sweep" else ""]
       for r in report["runs"] if r["role"] != "final"])
  return "\n".join([
      f"# {title}", "",
      f"Wall time {report['wall_s']:.0f} s. {report['setting']}", "",
      "Per N: the lr of each arm chosen on the validation split with the"
      " first seed (the test split never chose anything), every seed at it;"
      " mean ± std (ddof 1) over seeds. Δ columns: paired per-seed"
      " difference to Muon (same seed = same init and batch order), `*`"
      " where |mean| > 2 std / sqrt(seeds).", "",
      f"MiMuon taus: {report['taus_source']}", "", table, "",
      "## Log-log slopes (least squares over the Ns, seed means)", "",
      slopes, "", "## lr sweep (first seed; chosen by validation loss)", "",
      sweep, ""])


def plot(rows: list[dict], path: pathlib.Path, title: str,
         unit: str = "tokens") -> None:
  """Test loss and gap vs N (log-log, seed bars), and the paired
  MiMuon - Muon test-loss difference vs N."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
  arms = list(dict.fromkeys(r["arm"] for r in rows))
  for i, arm in enumerate(arms):
    sel = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["n"])
    color, ls, marker = plots.curve_style(i)
    n = np.array([r["n"] for r in sel], float) * (1 + 0.04 * (i - 1))  # dodge
    style = dict(color=color, ls=ls, marker=marker, capsize=3,
                 mfc="none" if i % 2 else color)
    for ax, m in zip(axes[:2], FIT_METRICS):
      ax.errorbar(n, [r[f"{m}_mean"] for r in sel],
                  yerr=[r[f"{m}_std"] for r in sel], label=arm, **style)
    if arm.startswith("mimuon") and all("d_test_loss_vs_muon_mean" in r
                                        for r in sel):
      axes[2].errorbar(n, [r["d_test_loss_vs_muon_mean"] for r in sel],
                       yerr=[r["d_test_loss_vs_muon_std"] for r in sel],
                       label=f"{arm} - muon", **style)
  axes[2].axhline(0, color="k", lw=0.8)
  labels = ("test loss (log)", "test loss - train loss (log)",
            "paired Δ test loss, MiMuon - Muon")
  for ax, label in zip(axes, labels):
    ax.set_xscale("log")
    ax.set_xlabel(f"training {unit} N (log)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3, which="both")
    if ax.has_data():
      ax.legend(fontsize=8, title="bars: ±std over seeds", title_fontsize=8)
  for ax, m in zip(axes[:2], FIT_METRICS):
    if all(r[f"{m}_mean"] > 0 for r in rows):
      ax.set_yscale("log")
  fig.suptitle(title, fontsize=10)
  plots.save_figure(fig, path)


def write_outputs(out: pathlib.Path, name: str, title: str, report: dict,
                  command: str, seeds: Sequence[int],
                  notes: Sequence[str] = (), unit: str = "tokens") -> None:
  """results.json, results.csv, results.md, `name`.png and COMMAND.md."""
  reporting.write_json(out / "results.json", {**report, "command": command})
  rows = report["rows"]
  with open(out / "results.csv", "w", newline="") as f:
    writer = csv.DictWriter(
        f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)),
        restval="")
    writer.writeheader()
    writer.writerows(rows)
  (out / "results.md").write_text(results_md(title, report, unit))
  plot(rows, out / f"{name}.png", title, unit)
  reporting.write_command_md(out, title, command, seeds, report["wall_s"],
                             [f"runs: {len(report['runs'])}", *notes])

