"""Generalization gap vs training-set size, per optimizer, over seeds.

  python -m experiments.gen_gap                       # the committed result
  python -m experiments.gen_gap --sweep               # its lr sweep

For every training-set size N (the first N of a seeded permutation of
Fashion-MNIST's 60k), optimizer and seed, an MLP (784-256-256-10) trains for
the same step budget; then train loss (all N examples, eval mode), test loss
(10k) and their gap are measured. Small N is trained for many epochs and
overfits; the question is whether MiMuon's cautious orthogonalization changes
the gap. Writes results.json (every run), results.csv (mean and std over
seeds), gen_gap.png (gap and test accuracy vs N, log-x) and COMMAND.md.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
import shlex
import sys
import time
from typing import Any, Sequence

if __package__ in (None, ""):  # `python experiments/gen_gap.py`
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  import experiments  # noqa: F401  (sets OPENBLAS_NUM_THREADS first)

import jax
import numpy as np
import optax

import mimuon_optax
from experiments import common
from experiments import data_images
from experiments import train_vision
from experiments.common import field

# Tuned at N=10000, seed 0 (`--sweep`, see experiments/README.md).
DEFAULT_LRS = {"adamw": 1e-3, "muon": 3e-3, "mimuon": 0.3}
ADAM_LR = 3e-3


@dataclasses.dataclass(frozen=True)
class GenGapConfig(common.OptimizerConfig):
  """Configuration of `gen_gap` (every field is a `--flag`).

  `--optimizer` and `--lr` are set per run from `--optimizers` / `--lrs`;
  `--adam-lr` none means ADAM_LR.
  """

  out: str = field("runs/gen_gap", "output directory")
  dataset: str = field("fashion", "dataset",
                       choices=train_vision.data_images.DATASETS)
  data_dir: str | None = field(None, "Fashion-MNIST folder; none: default")
  model: str = field("mlp", "model", choices=train_vision.MODELS)
  width: int = field(16, "cnn channels")
  hidden: int = field(256, "hidden units")
  sizes: tuple[int, ...] = field((1000, 3000, 10000, 30000, 60000),
                                 "training-set sizes N", minimum=1)
  seeds: tuple[int, ...] = field((0, 1, 2), "seeds (init, subset, batches)")
  optimizers: tuple[str, ...] = field(common.OPTIMIZERS, "optimizers",
                                      choices=common.OPTIMIZERS)
  steps: int = field(600, "steps per run (the same budget for every N)",
                     minimum=1)
  batch_size: int = field(128, "examples per step", minimum=1)
  lrs: tuple[float, ...] | None = field(
      None, "peak lr per optimizer (same order); none: gen_gap.DEFAULT_LRS")
  sweep: bool = field(False, "run the lr sweep (at --sweep-size, seed 0)")
  sweep_size: int = field(10000, "N of the sweep runs")
  sweep_adamw: tuple[float, ...] = field((1e-3, 3e-3, 1e-2), "AdamW grid")
  sweep_muon: tuple[float, ...] = field((0.01, 0.03, 0.1), "Muon grid")
  sweep_mimuon: tuple[float, ...] = field((0.01, 0.03, 0.1, 0.3, 1.0),
                                          "MiMuon grid")


class Trainer:
  """One compiled step per optimizer, reused for every N and seed."""

  def __init__(self, cfg: GenGapConfig, data: data_images.ImageData,
               optimizer: str, lr: float):
    self.cfg, self.data, self.optimizer = cfg, data, optimizer
    graphdef, params = train_vision.init_model(cfg, data, 0)
    opt_cfg = dataclasses.replace(cfg, optimizer=optimizer, lr=lr,
                                  adam_lr=cfg.adam_lr or ADAM_LR)
    self.tx, _ = common.make_optimizer(
        opt_cfg, "vision", cfg.steps,
        train_vision.vision_dimension_numbers(params))
    loss_fn, self.eval_fn = train_vision.make_loss_fns(graphdef)
    tx = self.tx

    @jax.jit
    def step(params, opt_state, x, y):
      loss, grads = jax.value_and_grad(loss_fn)(params, (x, y))
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    self.step = step

  def run(self, n: int, seed: int) -> dict[str, Any]:
    cfg = self.cfg
    data = data_images.subset(self.data, n, seed)
    _, params = train_vision.init_model(cfg, data, seed)
    opt_state = self.tx.init(params)
    x, y = data.x_train, data.y_train
    t0 = time.perf_counter()
    for step in range(cfg.steps):
      idx = data_images.batch_indices(len(x), cfg.batch_size, seed, step)
      params, opt_state, _ = self.step(params, opt_state, x[idx], y[idx])
    train_loss, train_acc = train_vision.evaluate_split(self.eval_fn, params,
                                                        x, y)
    test_loss, test_acc = train_vision.evaluate_split(
        self.eval_fn, params, data.x_test, data.y_test)
    orth = None
    if self.optimizer == "mimuon":  # mean over matrices of orth_count/steps
      counts = common.flat_per_matrix(
          mimuon_optax.mix_diagnostics(opt_state).orth_count)
      orth = float(np.mean([c.mean() for c in counts.values()]) / cfg.steps)
    return {"n": len(x), "seed": seed, "train_loss": train_loss,
            "test_loss": test_loss, "gap": test_loss - train_loss,
            "train_acc": train_acc, "test_acc": test_acc, "orth_frac": orth,
            "wall_s": time.perf_counter() - t0}


def aggregate(runs: list[dict]) -> list[dict]:
  """Mean and std (ddof=1) over seeds per (optimizer, n)."""
  rows = []
  keys = sorted({(r["optimizer"], r["n"]) for r in runs},
                key=lambda k: (common.OPTIMIZERS.index(k[0]), k[1]))
  for opt, n in keys:
    group = [r for r in runs if r["optimizer"] == opt and r["n"] == n]
    row = {"optimizer": opt, "n": n, "seeds": len(group), "lr": group[0]["lr"]}
    for metric in ("train_loss", "test_loss", "gap", "train_acc", "test_acc",
                   "orth_frac"):
      if group[0].get(metric) is None:
        continue
      values = np.array([r[metric] for r in group])
      row[f"{metric}_mean"] = float(values.mean())
      row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    rows.append(row)
  return rows


def plot(rows: list[dict], path: pathlib.Path, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for i, opt in enumerate(dict.fromkeys(r["optimizer"] for r in rows)):
    sel = [r for r in rows if r["optimizer"] == opt]
    n = [r["n"] for r in sel]
    color, ls, marker = common.curve_style(i)
    for ax, metric in zip(axes, ("gap", "test_acc")):
      ax.errorbar(n, [r[f"{metric}_mean"] for r in sel],
                  yerr=[r[f"{metric}_std"] for r in sel], color=color, ls=ls,
                  marker=marker, capsize=3,
                  label=f"{opt} (lr {sel[0]['lr']:g}; bars: std over seeds)")
  for ax, label in zip(axes, ("test loss - train loss", "test accuracy")):
    ax.set_xscale("log")
    ax.set_xlabel("training examples N")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _lr_for(cfg: GenGapConfig, opt: str) -> float:
  if cfg.lrs is None:
    return DEFAULT_LRS[opt]
  return cfg.lrs[cfg.optimizers.index(opt)]


def sweep(cfg: GenGapConfig, data, command: str) -> None:
  out = pathlib.Path(cfg.out) / "sweep"
  out.mkdir(parents=True, exist_ok=True)
  grids = {"adamw": cfg.sweep_adamw, "muon": cfg.sweep_muon,
           "mimuon": cfg.sweep_mimuon}
  t0, results = time.perf_counter(), []
  for opt in cfg.optimizers:
    for lr in grids[opt]:
      r = Trainer(cfg, data, opt, lr).run(cfg.sweep_size, 0)
      results.append({"optimizer": opt, "lr": lr, **r})
      print(f"{opt} lr={lr:g}: test_loss {r['test_loss']:.4f} test_acc"
            f" {r['test_acc']:.4f} train_loss {r['train_loss']:.4f}", flush=True)
  best = {}
  for r in results:
    if r["optimizer"] not in best or r["test_loss"] < best[r["optimizer"]]["test_loss"]:
      best[r["optimizer"]] = r
  rows = [[r["optimizer"], f"{r['lr']:g}" + (" **best**" if best[r["optimizer"]] is r else ""),
           r["train_loss"], r["test_loss"], r["gap"], r["test_acc"]]
          for r in results]
  wall = time.perf_counter() - t0
  table = common.markdown_table(
      ["optimizer", "peak lr", "train loss", "test loss", "gap", "test acc"], rows)
  (out / "sweep.md").write_text(
      f"# gen_gap lr sweep: {cfg.model} on {cfg.dataset}, N={cfg.sweep_size},"
      f" {cfg.steps} steps, seed 0\n\n{table}\n")
  common.write_json(out / "sweep.json", {"config": common.config_dict(cfg),
                                         "results": results})
  common.write_command_md(out, "gen_gap lr sweep", command, [0], wall,
                          [f"AdamW lr of the non-matrix leaves: {ADAM_LR}"])
  print(table)


def main(argv: Sequence[str] | None = None) -> list[dict]:
  cfg = common.parse_config(GenGapConfig, __doc__.split("\n\n")[0], argv)
  args = sys.argv[1:] if argv is None else list(argv)
  command = "python -m experiments.gen_gap " + shlex.join(args)
  data = data_images.load_images(cfg.dataset, cfg.data_dir)
  if cfg.sweep:
    sweep(cfg, data, command)
    return []
  out = pathlib.Path(cfg.out)
  out.mkdir(parents=True, exist_ok=True)
  t0, runs = time.perf_counter(), []
  for opt in cfg.optimizers:
    lr = _lr_for(cfg, opt)
    trainer = Trainer(cfg, data, opt, lr)
    for n in cfg.sizes:
      for seed in cfg.seeds:
        r = {"optimizer": opt, "lr": lr, **trainer.run(n, seed)}
        runs.append(r)
        print(f"{opt} N={r['n']} seed={seed}: train {r['train_loss']:.4f} test"
              f" {r['test_loss']:.4f} gap {r['gap']:.4f} acc"
              f" {r['test_acc']:.4f} ({r['wall_s']:.1f}s)", flush=True)
  wall = time.perf_counter() - t0
  rows = aggregate(runs)
  common.write_json(out / "results.json", {
      "config": common.config_dict(cfg), "command": command,
      "env": common.env_info(), "wall_s": wall, "runs": runs,
      "summary": rows})
  with open(out / "results.csv", "w", newline="") as f:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(f, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
  title = (f"{cfg.model} on {cfg.dataset}, {cfg.steps} steps x"
           f" {cfg.batch_size}, mean +- std over seeds {list(cfg.seeds)}")
  plot(rows, out / "gen_gap.png", title)
  table = common.markdown_table(
      ["optimizer", "N", "train loss", "test loss", "gap", "test acc",
       "orth. frac"],
      [[r["optimizer"], r["n"],
        f"{r['train_loss_mean']:.4f} ± {r['train_loss_std']:.4f}",
        f"{r['test_loss_mean']:.4f} ± {r['test_loss_std']:.4f}",
        f"{r['gap_mean']:.4f} ± {r['gap_std']:.4f}",
        f"{r['test_acc_mean']:.4f} ± {r['test_acc_std']:.4f}",
        f"{r['orth_frac_mean']:.3f}" if "orth_frac_mean" in r else "-"]
       for r in rows])
  (out / "results.md").write_text(f"# gen_gap: {title}\n\n{table}\n")
  common.write_command_md(
      out, "gen_gap: generalization gap vs training-set size", command,
      cfg.seeds, wall,
      [f"lrs: {', '.join(f'{o} {_lr_for(cfg, o):g}' for o in cfg.optimizers)}"
       f" (matrix lr; AdamW lr of non-matrix leaves {ADAM_LR})",
       f"MiMuon: tau={cfg.tau}, tau_mode={cfg.tau_mode},"
       f" sgd_scale={cfg.sgd_scale}"])
  print(table)
  return runs


if __name__ == "__main__":
  main()
