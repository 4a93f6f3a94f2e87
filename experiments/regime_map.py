"""The regime map: paired MiMuon - Muon test loss vs passes over the data.

  python -m experiments.regime_map --out experiments/results/regime_map

Puts every size study on one figure: round one's `gen_gap` (CNN, MiMuon at
Muon's lr), `cnn_small_data`, `cnn_small_data_lowlr` and `cnn_small_data_n1k`
(CNN, each arm at its own lr, three grids), `lm_small_data` (tiny Qwen3),
`lm_small_data_16k_own_lr` (MiMuon's own lr at 16k) and `lm_finetune`, and
the full-data tau sweeps as one point each (round one's `tau_sweep_vision`
and `tau_sweep_lm`, and `lm_converge`, the LM run ~7x longer), whichever of
their result folders exist (results.json, or a tau sweep's runs.json).
The x axis is the number of passes over the N training items that a run's
budget makes (steps x items per step / N: epochs), the quantity that sets
how far a run can overfit and the one both tasks share; the y axis is the
per-seed paired difference MiMuon - Muon of the test loss (same seed = same
init and batch order), mean ± std over seeds, filled where significant by
round one's rule (|mean| > 2 std / sqrt(seeds)). Negative: MiMuon better.

Writes regime_map.png, regime_map.md (the table behind it) and COMMAND.md;
reads only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from typing import Any, Sequence

from experiments.harness import cli
from experiments.harness import plots
from experiments.harness import reporting
from experiments.harness.cli import field
from experiments.harness.tau_sweep_report import mean_std

RESULTS = "experiments/results"
# Study folder -> (task label, items per step from its config, unit).
STUDIES = {
    "gen_gap": ("CNN, MiMuon at Muon's lr (round one)",
                lambda c: 8 * c["batch_size"], "examples"),
    "cnn_small_data": ("CNN, each at its own lr (grid 0.01-0.1)",
                       lambda c: 8 * c["batch_size"], "examples"),
    "cnn_small_data_lowlr": ("CNN, each at its own lr (grid 0.003-0.03)",
                             lambda c: 8 * c["batch_size"], "examples"),
    "cnn_small_data_n1k": ("CNN, each at its own lr (grid 0.00033-0.0033)",
                           lambda c: 8 * c["batch_size"], "examples"),
    "lm_small_data": ("LM (tiny Qwen3), small data",
                      lambda c: c["batch_size"] * c["seq_len"], "tokens"),
    "lm_small_data_16k_own_lr": (
        "LM (tiny Qwen3), small data, each at its own lr",
        lambda c: c["batch_size"] * c["seq_len"], "tokens"),
    "lm_finetune": ("LM (tiny Qwen3), fine-tuning",
                    lambda c: c["batch_size"] * c["seq_len"], "tokens"),
    # Full-data tau sweeps (runs.json; N: the whole training split).
    "tau_sweep_vision": ("CNN, full data (round one)",
                         lambda c: 8 * c["batch_size"], "examples"),
    "tau_sweep_lm": ("LM (tiny Qwen3), full data (round one)",
                     lambda c: c["batch_size"] * c["seq_len"], "tokens"),
    "lm_converge": ("LM (tiny Qwen3), full data, towards convergence",
                    lambda c: c["batch_size"] * c["seq_len"], "tokens"),
}


def training_items(report: dict[str, Any]) -> int | None:
  """A full-data run's N: its task's training tokens or examples."""
  task = report.get("task", {})
  return task.get("train_tokens") or task.get("train")


@dataclasses.dataclass(frozen=True)
class RegimeMapConfig:
  """Configuration of `regime_map` (every field is a `--flag`)."""

  out: str = field("runs/regime_map", "output directory")
  results: str = field(RESULTS, "folder holding the studies' result folders")
  studies: tuple[str, ...] = field(tuple(STUDIES), "study folders to read",
                                   choices=tuple(STUDIES))


def paired_rows(study: str, report: dict[str, Any]) -> list[dict[str, Any]]:
  """Per MiMuon arm and N: the paired test-loss differences to Muon."""
  label, per_step, unit = STUDIES[study]
  cfg = report["config"]
  budget = cfg["steps"] * per_step(cfg)
  finals: dict[tuple, float] = {}
  for r in report["runs"]:
    if r.get("role", "final") != "sweep" and not r.get("diverged", False):
      n = r["n"] if "n" in r else training_items(report)
      finals[n, r["arm"], r["seed"]] = r["test_loss"]
  rows = []
  for n, arm in dict.fromkeys((n, a) for n, a, _ in finals):
    if not (arm.startswith("mimuon") and arm.endswith("-none")):
      continue  # The paper's MiMuon only (round one's rms_match arm is not)
    diffs = [v - finals[n, "muon", s] for (m, a, s), v in finals.items()
             if (m, a) == (n, arm) and (n, "muon", s) in finals]
    if not diffs:
      continue
    mean, std = mean_std(diffs)
    rows.append({
        "study": study, "task": label, "arm": arm, "n": n, "unit": unit,
        "epochs": budget / n, "seeds": len(diffs), "d_test_loss_mean": mean,
        "d_test_loss_std": std, "significant": len(diffs) >= 2 and bool(
            abs(mean) > 2 * std / math.sqrt(len(diffs)))})
  return rows


def plot(rows: list[dict], path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(13, 5.5))
  series = list(dict.fromkeys((r["study"], r["arm"]) for r in rows))
  for i, (study, arm) in enumerate(series):
    sel = sorted((r for r in rows if (r["study"], r["arm"]) == (study, arm)),
                 key=lambda r: r["epochs"])
    color, ls, marker = plots.curve_style(i)
    ax.errorbar([r["epochs"] for r in sel],
                [r["d_test_loss_mean"] for r in sel],
                yerr=[r["d_test_loss_std"] for r in sel], color=color, ls=ls,
                marker=marker, mfc="none", capsize=3,
                label=f"{sel[0]['task']}: {arm}")
    for r in sel:
      if r["significant"]:
        ax.plot(r["epochs"], r["d_test_loss_mean"], marker=marker,
                color=color, ls="")
      ax.annotate(f"N={r['n']:,}", (r["epochs"], r["d_test_loss_mean"]),
                  textcoords="offset points", xytext=(4, 4), fontsize=6,
                  color=color)
  ax.axhline(0, color="k", lw=0.8)
  ax.set_xscale("log")
  ax.set_xlabel("passes over the N training items in the run's budget"
                " (epochs, log)")
  ax.set_ylabel("paired Δ test loss, MiMuon - Muon (< 0: MiMuon better)")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7, title="bars: ±std over seeds; filled: significant",
            title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  fig.suptitle("Where MiMuon helps: every size study on one map", fontsize=10)
  plots.save_figure(fig, path)


def run(cfg: RegimeMapConfig, command: str = "") -> list[dict[str, Any]]:
  t0 = time.perf_counter()
  rows, sources, seeds = [], [], set()
  for study in cfg.studies:
    path = pathlib.Path(cfg.results, study, "results.json")
    if not path.exists():
      path = path.with_name("runs.json")  # a tau sweep's
    if not path.exists():
      print(f"{study}: no results.json or runs.json in {path.parent},"
            " skipped", flush=True)
      continue
    report = json.loads(path.read_text())
    rows += paired_rows(study, report)
    seeds.update(report["config"]["seeds"])
    sources.append(f"{path} ({report.get('command', '')})")
  if not rows:
    raise FileNotFoundError(f"--studies: no results.json in {cfg.results}"
                            f" for any of {list(cfg.studies)}")
  out = pathlib.Path(cfg.out)
  out.mkdir(parents=True, exist_ok=True)
  plot(rows, out / "regime_map.png")
  table = reporting.markdown_table(
      ["task", "arm", "N", "epochs", "seeds", "Δ test loss MiMuon - Muon"],
      [[r["task"], r["arm"], f"{r['n']:,} {r['unit']}", f"{r['epochs']:.2f}",
        r["seeds"], f"{r['d_test_loss_mean']:+.4f} ±"
        f" {r['d_test_loss_std']:.4f}{' *' if r['significant'] else ''}"]
       for r in rows])
  (out / "regime_map.md").write_text(
      "# Regime map: paired MiMuon - Muon test loss\n\n"
      "Per-seed paired differences, mean ± std (ddof 1); `*`: |mean| > 2 std"
      " / sqrt(seeds). Epochs: steps x items per step / N.\n\n" + table +
      "\n\nSources:\n\n" + "\n".join(f"- {s}" for s in sources) + "\n")
  reporting.write_command_md(out, "regime map", command, sorted(seeds),
                             time.perf_counter() - t0,
                             ["reads: " + ", ".join(sources)])
  print((out / "regime_map.md").read_text())
  return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  return cli.study_main(RegimeMapConfig, __doc__, run, argv)


if __name__ == "__main__":
  main()
