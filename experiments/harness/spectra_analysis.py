"""The analysis of `experiments.spectra`'s records, and its findings text.

  analysis = analyse(records)          # gate fractions over tau, quantiles
  text = findings(result)              # findings.md

Each tau_mode's rule (spacing: rho >= tau; relative: rel_gap >= tau;
absolute: kappa >= tau) is applied offline to the recorded statistics over a
grid of tau; nothing here trains or measures.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from experiments.harness import optimizers
from experiments.harness import reporting
from mimuon_optax import DEFAULT_TAU

BETA = 0.95  # Muon's momentum decay (mimuon_optax.muon's default).
FIELDS = ("min_gap", "rel_gap", "rho", "median_gap", "s_max", "rank",
          "resolution")
# The statistic each tau_mode compares with tau.
MODE_STAT = {"spacing": "rho", "relative": "rel_gap", "absolute": "min_gap"}
TAU_GRIDS = {"spacing": np.logspace(-3, 1.5, 91),
             "relative": np.logspace(-8, 0, 81),
             "absolute": np.logspace(-10, 0, 101)}
REPORT_TAUS = {"spacing": (0.1, 0.2, 0.3, 0.5, 1.0),
               "relative": (1e-5, 1e-4, 1e-3)}
TARGET_FRACTIONS = (0.2, 0.5, 0.9)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def orth_fraction(values: np.ndarray, taus: Sequence[float]) -> np.ndarray:
  """Fraction of values >= tau for each tau (the gate; NaN never passes)."""
  v = np.asarray(values, np.float64)[:, None]
  return np.mean(np.where(np.isnan(v), False, v >= np.asarray(taus)[None]),
                 axis=0)


def tau_for_fraction(values: np.ndarray, fraction: float) -> float | None:
  """tau > 0 at which `fraction` of `values` pass `value >= tau`; None when
  fewer than `fraction` of them are > 0 (no tau > 0 reaches it)."""
  values = np.asarray(values, np.float64)
  if np.mean(values > 0) < fraction:
    return None
  return float(np.nanquantile(values, 1 - fraction))


def _quantiles(values: np.ndarray) -> dict[str, float]:
  finite = values[np.isfinite(values)]
  if not finite.size:
    return {}
  return dict(zip(map(str, QUANTILES), np.quantile(finite, QUANTILES).tolist()))


def spacing_tau_floor(values: dict[str, np.ndarray]) -> np.ndarray:
  """The resolution in rho's units: a rho below it cannot be told from 0."""
  return (values["resolution"] * np.sqrt(values["rank"])
          / values["median_gap"])


def _summary(values: dict[str, np.ndarray]) -> dict[str, Any]:
  """Quantiles and gate fractions of one group of (step, matrix) samples."""
  resolved = values["min_gap"] > 0
  out = {"count": int(values["rho"].size),
         # kappa at or below the resolution counts as 0: SGD for every tau > 0.
         "kappa_zero_fraction": float(np.mean(values["min_gap"] == 0)),
         **{f"{s}_quantiles": _quantiles(values[s])
            for s in ("rel_gap", "rho", "min_gap", "rank")},
         "rho_resolved_quantiles": _quantiles(values["rho"][resolved]),
         "rel_resolution_quantiles": _quantiles(values["resolution"]
                                                / values["s_max"]),
         "rel_median_gap_quantiles": _quantiles(values["median_gap"]
                                                / values["s_max"]),
         "spacing_tau_floor_quantiles": _quantiles(spacing_tau_floor(values)),
         "orth_frac_default": float(orth_fraction(values["rho"],
                                                  [DEFAULT_TAU])[0])}
  for mode, taus in REPORT_TAUS.items():
    out[f"orth_frac_{mode}_at"] = dict(zip(
        map(str, taus), orth_fraction(values[MODE_STAT[mode]], taus).tolist()))
  for mode, stat in MODE_STAT.items():
    out[f"orth_frac_{mode}"] = orth_fraction(values[stat],
                                             TAU_GRIDS[mode]).tolist()
  out["spacing_tau_for_fraction"] = {
      str(p): tau_for_fraction(values["rho"], p) for p in TARGET_FRACTIONS}
  return out


def samples(rec: dict[str, Any], kind: str | None = None
            ) -> dict[str, np.ndarray]:
  """The recorded statistics, flattened over (record, matrix)."""
  keep = np.array([kind is None or k == kind for k in rec["kinds"]])
  return {f: np.asarray(v, np.float64)[:, keep].ravel()
          for f, v in rec["stats"].items()}


def analyse(recs: dict[str, dict[str, Any]]) -> dict[str, Any]:
  models = {}
  for preset, rec in recs.items():
    kinds = {}
    for kind in dict.fromkeys(rec["kinds"]):
      shape = rec["shapes"][rec["kinds"].index(kind)]
      kinds[kind] = {"shape": shape, **_summary(samples(rec, kind))}
    models[preset] = {"all": _summary(samples(rec)), "kinds": kinds}
  pooled = {f: np.concatenate([samples(r)[f] for r in recs.values()])
            for f in FIELDS}
  return {"models": models, "pooled": _summary(pooled),
          "host_vs_float64": {p: precision_agreement(r)
                              for p, r in recs.items() if "rho_float64" in r}}


def precision_agreement(rec: dict[str, Any]) -> dict[str, Any]:
  """precision="host" vs "float64" on the same momenta: the gate's decisions.

  Fraction of (record, matrix) samples with the same spacing-mode decision
  at each REPORT_TAUS tau, and the largest relative difference in rho.
  """
  host = np.asarray(rec["stats"]["rho"], np.float64).ravel()
  f64 = np.asarray(rec["rho_float64"], np.float64).ravel()
  finite = np.isfinite(host) & np.isfinite(f64) & (f64 > 0)
  return {
      "n": int(host.size),
      "decisions_equal_at": {
          str(t): float(np.mean((host >= t) == (f64 >= t)))
          for t in REPORT_TAUS["spacing"]},
      "max_rel_rho_diff": float(np.max(
          np.abs(host[finite] - f64[finite]) / f64[finite], initial=0.0)),
  }


def _fmt(x: float | None) -> str:
  if x is None:
    return "unreachable"
  return f"{x:.2e}" if x < 0.01 or x >= 100 else f"{x:.3f}"


def findings(result: dict[str, Any]) -> str:
  recs, an, cfg = result["records"], result["analysis"], result["config"]
  env = result["env"]
  lines = [
      "# spectra: the momenta MiMuon's gate sees, at two Qwen3 widths"
      " (generated)", "",
      "**Supersedes** every earlier number in this folder: those came from"
      " the old gate, which merged near-equal singular values before taking"
      " the minimum gap. These use the paper-exact kappa (no merging) of"
      " `mimuon_optax.spectral_gap` (commit 1800f71 and later).", "",
      f"Command: `{result['command']}`  ",
      f"Library: mimuon_optax at {result.get('git', '?')}  ",
      f"Device: 2-core CPU ({env['cpu']}, {env['cpu_count']} cores),"
      f" jax {env['jax']}, optax {env['optax']}, flax {env['flax']}.  ",
      f"Total wall time: {result['wall_s']:.0f} s."
      + (f" Analysis redone from the same records: `{result['reanalysed_with']}`."
         if "reanalysed_with" in result else ""), "",
      f"Setup: Muon (= MiMuon with tau=0; lr {optimizers.DEFAULT_LRS['lm']['muon']}"
      f" matrix/AdamW, warmup 20 + cosine), beta={BETA}, Newton-Schulz in"
      f" {cfg['ns_dtype']}, Shakespeare bytes (vocab 256), batch"
      f" {cfg['batch_size']} x seq {cfg['seq_len']}, seed {cfg['seed']}."
      f" Gate input: beta*M_t + (1-beta)*G_t of every q/k/v/o/gate/up/down"
      f" matrix, measured on step 1 and every {cfg['record_every']} steps.", "",
      reporting.markdown_table(
          ["model", "hidden", "params", "steps", "records x matrices",
           "s/step (median)", "measure s (total)", "wall s", "loss"],
          [[p, r["hidden_size"], f"{r['params'] / 1e6:.1f}M", r["steps"][-1],
            f"{len(r['steps'])} x {len(r['names'])}",
            f"{r['step_s_median']:.3f}", f"{r['measure_s']:.0f}",
            f"{r['wall_s']:.0f}", f"{r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}"]
           for p, r in recs.items()]), "",
      "## Per model and layer kind", "",
      "rho = kappa sqrt(r) / median gap (tau_mode=\"spacing\", default tau"
      f" {DEFAULT_TAU}); rel = kappa / s_max (tau_mode=\"relative\"). n ="
      " (step, matrix) samples.", ""]
  rows = []
  for preset, m in an["models"].items():
    for kind, k in [*m["kinds"].items(), ("all", m["all"])]:
      q_rho, q_rel = k["rho_quantiles"], k["rel_gap_quantiles"]
      rows.append([
          preset, kind, "x".join(map(str, k.get("shape", ["-"]))), k["count"],
          _fmt(q_rho["0.05"]), _fmt(q_rho["0.5"]), _fmt(q_rho["0.95"]),
          _fmt(q_rel["0.05"]), _fmt(q_rel["0.5"]), _fmt(q_rel["0.95"]),
          f"{k['orth_frac_spacing_at']['0.3']:.3f}",
          f"{k['orth_frac_relative_at']['0.0001']:.3f}",
          f"{k['kappa_zero_fraction']:.3f}",
          f"{k['rank_quantiles']['0.5']:.0f}",
          _fmt(k["spacing_tau_floor_quantiles"]["0.5"])])
  lines += [reporting.markdown_table(
      ["model", "kind", "matrix", "n", "rho p5", "rho p50", "rho p95",
       "rel p5", "rel p50", "rel p95", "orth spacing 0.3",
       "orth relative 1e-4", "kappa=0", "rank p50", "rho floor p50"], rows),
      "",
      "kappa=0: fraction of samples whose smallest gap is at or below the"
      " gate's resolution (`GapStats.resolution`; median"
      f" {_fmt(an['pooled']['rel_resolution_quantiles']['0.5'])} s_max here),"
      " which `spectral_gap` counts as an exact repeat, so the gate takes the"
      " SGD branch for every tau > 0 in every tau_mode. rho floor = resolution"
      " * sqrt(r) / median gap, the resolution in rho's units.", ""]
  agree = an.get("host_vs_float64", {})
  if agree:
    taus = REPORT_TAUS["spacing"]
    lines += ["## The gate's two float64 paths on these momenta", "",
              "Each recorded momentum measured twice: `precision=\"host\"`"
              " (float64 LAPACK on the host, the statistics above) and"
              " `\"float64\"` (in-graph tridiagonalization + bisection)."
              " Fraction of samples with the same spacing-mode decision:", "",
              reporting.markdown_table(
                  ["model", "n", *(f"tau {t:g}" for t in taus),
                   "max rel rho diff"],
                  [[p, a["n"], *(f"{a['decisions_equal_at'][str(t)]:.3f}"
                                 for t in taus),
                    f"{a['max_rel_rho_diff']:.1e}"]
                   for p, a in agree.items()]), ""]
  lines += ["## Orthogonalized fraction per width", "",
            "Fraction of (step, matrix) samples the gate would orthogonalize.",
            ""]
  heads, rows = ["model"], []
  for mode, taus in REPORT_TAUS.items():
    heads += [f"{mode} {t:g}" for t in taus]
  for preset, m in [*an["models"].items(), ("pooled", an["pooled"])]:
    row = [preset]
    for mode, taus in REPORT_TAUS.items():
      row += [f"{m['all'][f'orth_frac_{mode}_at'][str(t)]:.3f}"
              if preset != "pooled" else
              f"{m[f'orth_frac_{mode}_at'][str(t)]:.3f}" for t in taus]
    rows.append(row)
  lines += [reporting.markdown_table(heads, rows), ""]
  lines += ["## Spacing tau for a target fraction", "",
            "tau such that rho >= tau for the given fraction of samples"
            " (the (1 - fraction) quantile of rho); unreachable: more than"
            " 1 - fraction of the samples have kappa = 0.", ""]
  rows = [[p, *(_fmt(m["all"]["spacing_tau_for_fraction"][str(f)])
                for f in TARGET_FRACTIONS)]
          for p, m in an["models"].items()]
  rows.append(["pooled", *(_fmt(an["pooled"]["spacing_tau_for_fraction"][str(f)])
                           for f in TARGET_FRACTIONS)])
  lines += [reporting.markdown_table(
      ["samples", *(f"fraction {f}" for f in TARGET_FRACTIONS)], rows), ""]
  widths = list(an["models"])
  if len(widths) == 2:
    a, b = (an["models"][p]["all"] for p in widths)
    lines += ["## Width comparison", ""]
    for mode, taus in REPORT_TAUS.items():
      pairs = ", ".join(
          f"tau={t:g}: {a[f'orth_frac_{mode}_at'][str(t)]:.3f} vs"
          f" {b[f'orth_frac_{mode}_at'][str(t)]:.3f}" for t in taus)
      lines.append(f"- {mode}, {widths[0]} vs {widths[1]}: {pairs}")
    lines.append(
        f"- kappa = 0 (unresolved, SGD at any tau > 0):"
        f" {a['kappa_zero_fraction']:.3f} vs {b['kappa_zero_fraction']:.3f};"
        f" median rho of the resolved samples"
        f" {_fmt(a['rho_resolved_quantiles'].get('0.5'))} vs"
        f" {_fmt(b['rho_resolved_quantiles'].get('0.5'))}; median (median"
        f" gap / s_max) {_fmt(a['rel_median_gap_quantiles']['0.5'])} vs"
        f" {_fmt(b['rel_median_gap_quantiles']['0.5'])}, median rank"
        f" {a['rank_quantiles']['0.5']:.0f} vs {b['rank_quantiles']['0.5']:.0f},"
        f" against a resolution of"
        f" {_fmt(a['rel_resolution_quantiles']['0.5'])} s_max")
    lines.append(
        f"- median rho {_fmt(a['rho_quantiles']['0.5'])} vs"
        f" {_fmt(b['rho_quantiles']['0.5'])}; median rel_gap"
        f" {_fmt(a['rel_gap_quantiles']['0.5'])} vs"
        f" {_fmt(b['rel_gap_quantiles']['0.5'])}")
    lines.append("")
  lines += ["Plot: `spectra.png` (orthogonalized fraction vs tau per width,"
            " spacing and relative; histogram of rho per width).", ""]
  return "\n".join(lines)
