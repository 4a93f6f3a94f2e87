"""The regime map: paired MiMuon vs Muon test results against N, per task.

  python -m experiments.regime_map --out experiments/results/regime_map

Reads every size study, whichever of their result folders exist
(results.json, or a tau sweep's runs.json): round one's `gen_gap` (CNN,
MiMuon at Muon's lr), `cnn_small_data`, `cnn_small_data_lowlr` and
`cnn_small_data_n1k` (CNN, each arm at its own lr, three grids),
`lm_small_data` (tiny Qwen3), `lm_small_data_16k_own_lr` (MiMuon's own lr
at 16k) and `lm_finetune`, and the full-data tau sweeps as one point each
(round one's `tau_sweep_vision` and `tau_sweep_lm`, and `lm_converge`, the
LM run ~7x longer), and `yolo26_detection` (YOLO26n, the third panel).

One panel per task; x: the N training items (log), y: the per-seed paired
difference of the task's test metric (same seed = same init and batch
order), mean ± std over seeds, a filled marker where significant by round
one's rule (|mean| > 2 std / sqrt(seeds)). Negative: MiMuon better on every
panel: MiMuon - Muon of the test loss, Muon - MiMuon of the test mAP50-95
(higher is better).

What is drawn how, from the results alone: a MiMuon arm is "at its own lr"
where it swept its own lr grid at that N, else "at Muon's lr". Of the points
of one task, N and arm, the current one is at its own lr if any is, then the
best tuned (lowest validation loss of Muon and MiMuon at their kept lrs;
for detection the highest validation mAP50-95); the others are superseded.
Current points are in colour (solid: own lr, dashed: Muon's lr); superseded
points and round one's studies are grey. The legend names each series in
words (MiMuon's measured orthogonalized fraction, the setting, the lr).

Writes regime_map.png, regime_map.md (the table behind it) and COMMAND.md;
reads only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from typing import Any, Callable, Sequence

import numpy as np

from experiments.harness import cli
from experiments.harness import plots
from experiments.harness import reporting
from experiments.harness.cli import field
from experiments.harness.tau_sweep_report import mean_std

RESULTS = "experiments/results"


@dataclasses.dataclass(frozen=True)
class Study:
  """What a result folder is: which panel, in which words, counted how."""

  task: str  # the panel: a key of TASKS
  setting: str  # words for the legend
  items_per_step: Callable[[dict[str, Any]], int]  # from the run's config
  unit: str  # of N
  round_one: bool = False  # superseded by round two: drawn grey
  metric: str = "test loss"  # what the task reports: a key of DIFFERENCES


def _images(c: dict[str, Any]) -> int:
  return 8 * c["batch_size"]


def _tokens(c: dict[str, Any]) -> int:
  return c["batch_size"] * c["seq_len"]


def _detection_images(c: dict[str, Any]) -> int:
  return c["batch_size"]


# The difference drawn, per metric: signed so that < 0 is MiMuon better.
DIFFERENCES = {"test loss": "test loss, MiMuon - Muon",
               "test mAP50-95": "test mAP50-95, Muon - MiMuon"}


# Panel order and titles.
TASKS = {"LM": "LM: tiny Qwen3 on Shakespeare",
         "CNN": "CNN on Fashion-MNIST",
         "detection": "Detection: YOLO26n on Fashion-MNIST canvases"}
STUDIES = {
    "gen_gap": Study("CNN", "size study", _images, "examples", True),
    "cnn_small_data": Study("CNN", "small data", _images, "examples"),
    "cnn_small_data_lowlr": Study("CNN", "small data", _images, "examples"),
    "cnn_small_data_n1k": Study("CNN", "small data", _images, "examples"),
    "lm_small_data": Study("LM", "small data", _tokens, "tokens"),
    "lm_small_data_16k_own_lr": Study("LM", "small data", _tokens, "tokens"),
    "lm_finetune": Study("LM", "fine-tuning", _tokens, "tokens"),
    # Full-data tau sweeps (runs.json; N: the whole training split).
    "tau_sweep_vision": Study("CNN", "full data", _images, "examples", True),
    "tau_sweep_lm": Study("LM", "full data", _tokens, "tokens", True),
    "lm_converge": Study("LM", "full data", _tokens, "tokens"),
    "yolo26_detection": Study("detection", "CPU protocol", _detection_images,
                              "images", metric="test mAP50-95"),
    "yolo26_detection_n4000": Study("detection", "CPU protocol",
                                    _detection_images, "images",
                                    metric="test mAP50-95"),
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
  """Per MiMuon arm and N: the paired test-loss differences to Muon, the
  lrs the arm swept, its orthogonalized fraction and the validation loss
  the pair reached."""
  spec = STUDIES[study]
  cfg = report["config"]
  steps = cfg["steps"]
  finals: dict[tuple, dict] = {}
  swept: dict[tuple, set] = {}
  for r in report["runs"]:
    if r.get("diverged", False):
      continue
    n = r["n"] if "n" in r else training_items(report)
    if r.get("role", "final") != "final":
      swept.setdefault((n, r["arm"]), set()).add(r["lr"])
    if r.get("role", "final") != "sweep":
      finals[n, r["arm"], r["seed"]] = r
  rows = []
  for n, arm in dict.fromkeys((n, a) for n, a, _ in finals):
    if not (arm.startswith("mimuon") and arm.endswith("-none")):
      continue  # The paper's MiMuon only (round one's rms_match arm is not)
    pairs = [(r, finals[n, "muon", s]) for (m, a, s), r in finals.items()
             if (m, a) == (n, arm) and (n, "muon", s) in finals]
    if not pairs:
      continue
    mean, std = mean_std([r["test_loss"] - b["test_loss"] for r, b in pairs])
    fracs = [r["orth_frac"] for r, _ in pairs if "orth_frac" in r]
    grid = sorted(swept.get((n, arm), ()))
    rows.append({
        "study": study, "task": spec.task, "setting": spec.setting,
        "metric": spec.metric, "round_one": spec.round_one, "arm": arm,
        "n": n, "unit": spec.unit, "steps": steps,
        "epochs": steps * spec.items_per_step(cfg) / n,
        "seeds": len(pairs), "own_lr": len(grid) >= 2,
        "lr_grid": grid if len(grid) >= 2 else [],
        "orth_frac": float(np.mean(fracs)) if fracs else None,
        "val_loss": float(np.mean([(r["val_loss"] + b["val_loss"]) / 2
                                   for r, b in pairs])),
        "d_test_loss_mean": mean, "d_test_loss_std": std,
        "significant": len(pairs) >= 2 and bool(
            abs(mean) > 2 * std / math.sqrt(len(pairs)))})
  return rows


def detection_rows(study: str, report: dict[str, Any]
                   ) -> list[dict[str, Any]]:
  """`paired_rows` of a detection study (`yolo26_detection`'s results.json):
  per MiMuon arm and N, its paired test mAP50-95 difference to Muon as the
  study reports it (`d_vs_muon`), negated so that < 0 is MiMuon better as on
  the other panels; `d_test_loss_*` hold that difference."""
  spec = STUDIES[study]
  cfg = report["config"]
  rows = []
  for row in report["rows"]:
    if "d_vs_muon" not in row:
      continue  # Not MiMuon, or fewer than 2 seeds paired with Muon
    size, arm = row["size"], row["arm"]
    mean, std, significant = row["d_vs_muon"]
    chosen = {a: report["chosen_lr"][f"{size}/{a}"] for a in (arm, "muon")}
    kept = {a: {r["seed"]: r for r in report["runs"]
                if (r["size"], r["arm"], r["lr"]) == (size, a, chosen[a]["lr"])}
            for a in (arm, "muon")}  # every seed, whatever its role
    pairs = [(r, kept["muon"][s]) for s, r in kept[arm].items()
             if s in kept["muon"]]
    epochs = cfg["epochs"]
    rows.append({
        "study": study, "task": spec.task, "setting": spec.setting,
        "metric": spec.metric, "round_one": spec.round_one, "arm": arm,
        "n": size, "unit": spec.unit, "steps": pairs[0][0]["steps"],
        "epochs": (epochs[0] if len(epochs) == 1
                   else epochs[cfg["sizes"].index(size)]),
        "seeds": len(pairs),
        # Every arm keeps the best lr of its own grid at every N.
        "own_lr": True,
        "lr_grid": sorted(float(lr) for lr in chosen[arm]["val_scores"]),
        "orth_frac": row.get("orth_frac", {}).get("all"),
        # Only ranks duplicates in `mark_current` (lower: better tuned): the
        # pair's mean validation mAP50-95 at the kept lrs, negated.
        "val_loss": -float(np.mean([(r["val_map50_95"] + b["val_map50_95"])
                                    / 2 for r, b in pairs])),
        "d_test_loss_mean": 0.0 - mean, "d_test_loss_std": std,
        "significant": bool(significant)})
  return rows


def mark_current(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Sets `current` on every row: of the rows of one task, N and arm, the
  one at its own lr if any is, then the lowest validation loss; round one's
  studies are never current."""
  best: dict[tuple, dict] = {}
  for r in rows:
    key = (r["task"], r["n"], r["arm"])
    if key not in best or ((not r["own_lr"], r["val_loss"]) <
                           (not best[key]["own_lr"], best[key]["val_loss"])):
      best[key] = r
  for r in rows:
    r["current"] = (not r["round_one"]
                    and best[r["task"], r["n"], r["arm"]] is r)
  return rows


def series_label(rows: list[dict[str, Any]]) -> str:
  """A series in words, e.g. "MiMuon, orth. fraction 0.5: fine-tuning, 200
  steps, own lr (grid 9e-05 to 0.0009)"."""
  r = rows[0]
  fracs = [x["orth_frac"] for x in rows if x["orth_frac"] is not None]
  who = (f"MiMuon, orth. fraction {np.mean(fracs):.1f}" if fracs
         else f"MiMuon ({r['arm']})")
  grids = sorted({g for x in rows for g in x["lr_grid"]})
  lr = (f"own lr (grid {grids[0]:.2g} to {grids[-1]:.2g})" if r["own_lr"]
        else "Muon's lr")
  steps = sorted({x["steps"] for x in rows})
  span = f"{steps[0]}" if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"
  return f"{who}: {r['setting']}, {span} steps, {lr}"


GREY = "0.65"


def _label_n(ax: Any, ns: Sequence[int]) -> None:
  """x ticks at the Ns of the panel (200, 1k, 16k, 1.25M), none closer than a
  factor 1.6 to the previous labelled one, so that no two labels touch."""
  import matplotlib.ticker
  ticks: list[int] = []
  for n in ns:
    if not ticks or n >= 1.6 * ticks[-1]:
      ticks.append(n)
  ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
  ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
      lambda n, _: f"{n / 1e6:.3g}M" if n >= 1e6 else
      f"{n / 1e3:.3g}k" if n >= 1e3 else f"{n:.3g}"))
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_xlim(min(ns) / 1.5, max(ns) * 1.5)


def figure(rows: list[dict[str, Any]]) -> Any:
  """The map: one panel per task (in TASKS' order), legend beneath each."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
  fig, axes = plt.subplots(1, len(tasks), figsize=(7.5 * len(tasks), 7.6),
                           squeeze=False)
  for ax, task in zip(axes[0], tasks):
    sel = [r for r in rows if r["task"] == task]
    series = list(dict.fromkeys((r["study"], r["arm"], r["own_lr"])
                                for r in sel))
    for i, key in enumerate(series):
      points = sorted((r for r in sel if (r["study"], r["arm"], r["own_lr"])
                       == key), key=lambda r: r["n"])
      dodge = 1 + 0.035 * (i - (len(series) - 1) / 2)  # bars side by side
      for current in (True, False):
        pts = [r for r in points if r["current"] == current]
        if not pts:
          continue
        color, _, marker = plots.curve_style(i)
        style = (dict(color=color, ls="-" if key[2] else "--", ms=7, lw=1.6,
                      label=series_label(pts))
                 if current else dict(color=GREY, ls=":", ms=5, lw=0.8,
                                      zorder=1))
        x = [r["n"] * dodge for r in pts]
        ax.errorbar(x, [r["d_test_loss_mean"] for r in pts],
                    yerr=[r["d_test_loss_std"] for r in pts], marker=marker,
                    mfc="none", capsize=3, **style)
        filled = [r for r in pts if r["significant"]]
        ax.plot([r["n"] * dodge for r in filled],
                [r["d_test_loss_mean"] for r in filled], ls="",
                marker=marker, ms=style["ms"], color=style["color"])
    ax.plot([], [], color=GREY, ls=":", marker="o", mfc="none",
            label="grey: round one, or superseded by a run at its own lr /"
            " better tuned")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    _label_n(ax, sorted({r["n"] for r in sel}))
    ax.set_xlabel(f"training {sel[0]['unit']} N (log; ticks at the Ns run)")
    ax.set_ylabel(f"paired Δ {DIFFERENCES[sel[0]['metric']]}"
                  " (< 0: MiMuon better)")
    ax.set_title(TASKS[task], fontsize=10)
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda j: (  # own lr first
        2 if labels[j].startswith("grey") else "own lr" not in labels[j]))
    ax.legend([handles[j] for j in order], [labels[j] for j in order],
              fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.11),
              title="bars: ±std over seeds; filled: significant",
              title_fontsize=7.5, frameon=False)
  fig.suptitle("Where MiMuon helps: paired MiMuon vs Muon test results (< 0:"
               " MiMuon better), one panel per task", fontsize=11)
  fig.tight_layout()
  return fig


def plot(rows: list[dict[str, Any]], path: pathlib.Path) -> None:
  plots.save_figure(figure(rows), path)


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
    read = detection_rows if STUDIES[study].task == "detection" else (
        paired_rows)
    rows += read(study, report)
    seeds.update(report["config"]["seeds"])
    command_of = (report.get("command")
                  or reporting.read_command_md(path.parent))
    sources.append(f"{path} ({command_of})")
  if not rows:
    raise FileNotFoundError(f"--studies: no results.json in {cfg.results}"
                            f" for any of {list(cfg.studies)}")
  mark_current(rows)
  out = pathlib.Path(cfg.out)
  out.mkdir(parents=True, exist_ok=True)
  plot(rows, out / "regime_map.png")
  table = reporting.markdown_table(
      ["task", "study", "arm", "orth. fraction", "lr", "N", "epochs",
       "seeds", "Δ of", "Δ (< 0: MiMuon better)", "drawn"],
      [[r["task"], r["study"], r["arm"],
        "" if r["orth_frac"] is None else f"{r['orth_frac']:.2f}",
        "own" if r["own_lr"] else "Muon's", f"{r['n']:,} {r['unit']}",
        f"{r['epochs']:.2f}", r["seeds"], DIFFERENCES[r["metric"]],
        f"{r['d_test_loss_mean']:+.4f} ± {r['d_test_loss_std']:.4f}"
        f"{' *' if r['significant'] else ''}",
        "colour" if r["current"] else "grey"]
       for r in rows])
  (out / "regime_map.md").write_text(
      "# Regime map: paired MiMuon vs Muon test results\n\n"
      "Per-seed paired differences, mean ± std (ddof 1), signed so that < 0"
      " is MiMuon better: MiMuon - Muon of the test loss, Muon - MiMuon of"
      " the test mAP50-95 (detection); `*`: |mean| > 2 std / sqrt(seeds)."
      " Epochs: steps x items per step / N (detection: the study's epochs)."
      " lr: MiMuon's own (it swept its grid at that N) or Muon's. Drawn grey:"
      " round one, or superseded (another run at the same task, N and arm is"
      " at its own lr, or is better tuned: a lower validation loss, a higher"
      " validation mAP50-95).\n\n" + table +
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
