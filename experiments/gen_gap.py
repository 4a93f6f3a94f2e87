"""Generalization gap vs training-set size N for AdamW, Muon and MiMuon, over seeds.

  python -m experiments.gen_gap --from-sweep experiments/results/tau_sweep_vision \\
      --out experiments/results/gen_gap

The CNN and Fashion-MNIST splits of `tau_sweep --task vision` (54k train,
6k validation, 10k test). For every N (the first N of a seeded permutation
of the 54k), optimizer and seed, the CNN trains for the same step budget;
then the train loss (eval mode, on the N examples, at most 10k of them), the
test loss and accuracy (10k) and the gap test - train are measured. Small N
is trained for many epochs and overfits: the paper's bound says MiMuon's gap
shrinks like 1/N, Muon's like 1/(N kappa^T).

Learning rates and tau are not chosen here (the test split would leak into
them): `--from-sweep` reads, from a `tau_sweep` vision result, the lr each
arm kept on the validation split and the MiMuon arm whose orthogonalized
fraction is closest to `--target-fraction` (0.5, the arm that mixes most)
with `--sgd-scale`. Without it, give `--lrs` and `--tau`.

Writes results.json (every run), results.csv and results.md (mean and std
over seeds), gen_gap.png (gap vs N, log-log; test accuracy vs N) and
COMMAND.md.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
import time
from typing import Any, Sequence

import numpy as np

from experiments import tau_sweep
from experiments import train_vision
from experiments.harness import cli
from experiments.harness import data_images
from experiments.harness import plots
from experiments.harness import reporting
from experiments.harness import tau_sweep_report
from experiments.harness.cli import field

ARMS = ("adamw", "muon", "mimuon")
METRICS = ("train_loss", "test_loss", "gap", "test_acc", "orth_frac")


@dataclasses.dataclass(frozen=True)
class GenGapConfig:
  """Configuration of `gen_gap` (every field is a `--flag`)."""

  out: str = field("runs/gen_gap", "output directory")
  from_sweep: str | None = field(
      None, "a tau_sweep --task vision output folder: lrs and tau from it")
  target_fraction: float = field(
      0.5, "with --from-sweep: the MiMuon arm whose orthogonalized fraction"
      " is closest to this", minimum=0)
  sgd_scale: str = field("none", "MiMuon SGD-branch scale",
                         choices=("none", "rms_match"))
  lrs: tuple[float, ...] | None = field(
      None, "without --from-sweep: peak lr of adamw, muon, mimuon",
      positive=True)
  tau: float | None = field(None, "without --from-sweep: MiMuon spacing tau",
                            minimum=0)
  sizes: tuple[int, ...] = field((1000, 3000, 10000, 30000, 54000),
                                 "training-set sizes N", minimum=1)
  seeds: tuple[int, ...] = field((0, 1, 2), "seeds (init, subset, batches)")
  steps: int = field(600, "steps per run (the same budget for every N)",
                     minimum=1)
  warmup_steps: int = field(30, "linear warmup steps", minimum=0)
  batch_size: int = field(16, "examples per step / 8 (as in tau_sweep)",
                          minimum=1)
  data_dir: str | None = field(None, "Fashion-MNIST folder; none: default")
  dataset: str = field("fashion", "dataset", choices=data_images.DATASETS)
  width: int = field(16, "CNN channels")
  hidden: int = field(128, "CNN hidden units")
  model: str = field("cnn", "model", choices=train_vision.MODELS)


def settings(cfg: GenGapConfig) -> tuple[dict[str, tau_sweep.Arm],
                                         dict[str, float], dict[str, Any]]:
  """(arms, lrs, provenance) from `--from-sweep` or `--lrs`/`--tau`."""
  if cfg.from_sweep is None:
    if cfg.lrs is None or cfg.tau is None or len(cfg.lrs) != len(ARMS):
      raise ValueError("Without --from-sweep, give --lrs (adamw muon mimuon)"
                       " and --tau.")
    tau, lrs, source = cfg.tau, dict(zip(ARMS, cfg.lrs)), "given"
  else:
    path = pathlib.Path(cfg.from_sweep) / "runs.json"
    if not path.exists():
      raise FileNotFoundError(f"--from-sweep: {path} not found")
    sweep = json.loads(path.read_text())
    if sweep["config"]["task"] != "vision":
      raise ValueError(f"--from-sweep: {path} is not a vision sweep")
    gated = [r for r in sweep["rows"] if r["optimizer"] == "mimuon"
             and r["sgd_scale"] == cfg.sgd_scale and np.isfinite(r["tau"])]
    if not gated:
      raise ValueError(f"--from-sweep: no MiMuon arm with sgd_scale"
                       f" {cfg.sgd_scale!r} in {path}")
    best = min(gated, key=lambda r: abs(r["orth_frac_mean"]
                                        - cfg.target_fraction))
    tau = best["tau"]
    lrs = {"adamw": sweep["chosen_lr"]["adamw"],
           "muon": sweep["chosen_lr"]["muon"], "mimuon": best["lr"]}
    source = (f"{path}: arm {best['arm']} (orth. fraction"
              f" {best['orth_frac_mean']:.2f} at N=54k); lrs chosen there on"
              " the validation split")
  arms = {"adamw": tau_sweep.Arm("adamw", "adamw", "adamw"),
          "muon": tau_sweep.Arm("muon", "muon", "muon"),
          "mimuon": tau_sweep.Arm(f"mimuon-{tau:.3g}-{cfg.sgd_scale}",
                                  "mimuon", "muon", tau, cfg.sgd_scale)}
  return arms, lrs, {"source": source, "tau": tau, "lrs": lrs}


def sweep_config(cfg: GenGapConfig) -> tau_sweep.TauSweepConfig:
  """The tau_sweep settings this study trains with (one eval at the end)."""
  return tau_sweep.TauSweepConfig(
      task="vision", steps=cfg.steps, warmup_steps=cfg.warmup_steps,
      eval_every=cfg.steps, batch_size=cfg.batch_size, data_dir=cfg.data_dir,
      dataset=cfg.dataset, width=cfg.width, hidden=cfg.hidden,
      model=cfg.model)


def aggregate(runs: list[dict]) -> list[dict]:
  """Mean and std (ddof=1) over seeds per (optimizer, n)."""
  rows = []
  for opt in ARMS:
    for n in sorted({r["n"] for r in runs if r["optimizer"] == opt}):
      group = [r for r in runs if r["optimizer"] == opt and r["n"] == n]
      row = {"optimizer": opt, "arm": group[0]["arm"], "n": n,
             "seeds": len(group), "lr": group[0]["lr"]}
      for m in METRICS:
        if all(m in r for r in group):
          row[f"{m}_mean"], row[f"{m}_std"] = tau_sweep_report.mean_std(
              [r[m] for r in group])
      rows.append(row)
  return rows


def plot(rows: list[dict], path: pathlib.Path, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  for i, opt in enumerate(ARMS):
    sel = [r for r in rows if r["optimizer"] == opt]
    if not sel:
      continue
    color, ls, marker = plots.curve_style(i)
    n = np.array([r["n"] for r in sel], float) * (1 + 0.04 * (i - 1))  # dodge
    for ax, metric in zip(axes, ("gap", "test_acc")):
      ax.errorbar(n, [r[f"{metric}_mean"] for r in sel],
                  yerr=[r[f"{metric}_std"] for r in sel], color=color, ls=ls,
                  marker=marker, capsize=3, mfc="none" if i % 2 else color,
                  label=f"{sel[0]['arm']} (lr {sel[0]['lr']:g})")
  axes[0].set_yscale("log")
  for ax, label in zip(axes, ("test loss - train loss (log)", "test accuracy")):
    ax.set_xscale("log")
    ax.set_xlabel("training examples N (log)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, title="bars: ±std over seeds", title_fontsize=8)
  fig.suptitle(title, fontsize=10)
  plots.save_figure(fig, path)


def run(cfg: GenGapConfig, command: str = "") -> list[dict]:
  arms, lrs, provenance = settings(cfg)
  out = pathlib.Path(cfg.out)
  out.mkdir(parents=True, exist_ok=True)
  scfg = sweep_config(cfg)
  splits = tau_sweep.vision_splits(scfg)
  t0, runs = time.perf_counter(), []
  for opt in ARMS:
    arm, lr = arms[opt], lrs[opt]
    prepared = None  # once per arm: the shapes do not depend on N
    for n in cfg.sizes:
      for seed in cfg.seeds:
        task = tau_sweep.vision_task(scfg, splits, n, seed)
        if prepared is None:
          prepared = tau_sweep.prepare(scfg, task, arm, lr, cfg.steps)
        r = tau_sweep.train_one(scfg, task, arm, lr, seed, prepared)
        r = {"optimizer": opt, "n": task.info["train"],
             **{k: v for k, v in r.items() if k != "curve"}}
        runs.append(r)
        print(f"{arm.name} N={r['n']} seed={seed}: train {r['train_loss']:.4f}"
              f" test {r['test_loss']:.4f} gap {r['gap']:.4f} acc"
              f" {r['test_acc']:.4f} ({r['wall_s']:.1f}s)", flush=True)
  wall = time.perf_counter() - t0
  rows = aggregate(runs)
  reporting.write_json(out / "results.json", {
      "config": dataclasses.asdict(cfg), "command": command,
      "settings": provenance, "env": reporting.env_info(), "wall_s": wall,
      "runs": runs, "summary": rows})
  with open(out / "results.csv", "w", newline="") as f:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(f, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
  title = (f"{cfg.model} on {cfg.dataset}, {cfg.steps} steps x"
           f" {8 * cfg.batch_size}; mean ± std over seeds {list(cfg.seeds)}")
  plot(rows, out / "gen_gap.png", title)
  pm = lambda r, m: (f"{r[f'{m}_mean']:.4f} ± {r[f'{m}_std']:.4f}"
                     if f"{m}_mean" in r else "-")
  table = reporting.markdown_table(
      ["arm", "N", "train loss", "test loss", "gap", "test acc",
       "orth. fraction"],
      [[r["arm"], r["n"], pm(r, "train_loss"), pm(r, "test_loss"),
        pm(r, "gap"), pm(r, "test_acc"), pm(r, "orth_frac")] for r in rows])
  (out / "results.md").write_text(
      f"# gen_gap: {title}\n\nSettings: {provenance['source']}.\n\n{table}\n")
  reporting.write_command_md(
      out, "gen_gap: generalization gap vs training-set size", command,
      cfg.seeds, wall,
      [f"lrs: {', '.join(f'{o} {lrs[o]:g}' for o in ARMS)} (matrix lr;"
       f" AdamW lr of non-matrix leaves {tau_sweep.ADAM_LR['vision']})",
       f"MiMuon: tau={provenance['tau']:.3g} (spacing), sgd_scale="
       f"{cfg.sgd_scale}", f"settings: {provenance['source']}"])
  print(table)
  return runs


def main(argv: Sequence[str] | None = None) -> list[dict]:
  return cli.study_main(GenGapConfig, __doc__, run, argv)


if __name__ == "__main__":
  main()
