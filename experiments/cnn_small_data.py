"""CNN, small data: Muon and MiMuon, each at its own lr, at N = 1k and 4k.

  python -m experiments.cnn_small_data --out runs/cnn_small_data

Round one (`gen_gap`) found MiMuon ahead of Muon on test loss at N = 1k and
4k Fashion-MNIST examples, with both at the lrs `tau_sweep` chose at N = 54k
and MiMuon at Muon's lr. Here every arm gets its own lr at every N: Muon and
MiMuon each sweep Muon's vision grid on the validation split with the first
seed (`tau_sweep.train_arms` with `sweep_gated`), the other seeds train at
the lr kept, and the test split is only reported. MiMuon's tau is round
one's (`--from-sweep`: the arm `gen_gap` used, orthogonalized fraction
closest to `--target-fraction` at N = 54k), or `--tau`.

Writes results.json, results.csv, results.md (per N and arm: test loss,
test - train gap, paired MiMuon - Muon differences with round one's
significance rule), cnn_small_data.png and COMMAND.md.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Sequence

from experiments import gen_gap
from experiments import size_study
from experiments import tau_sweep
from experiments import train_vision
from experiments.harness import cli
from experiments.harness import data_images
from experiments.harness import reporting
from experiments.harness.cli import field


@dataclasses.dataclass(frozen=True)
class CNNSmallDataConfig:
  """Configuration of `cnn_small_data` (every field is a `--flag`)."""

  out: str = field("runs/cnn_small_data", "output directory")
  from_sweep: str | None = field(
      "experiments/results/tau_sweep_vision",
      "a tau_sweep --task vision output folder: MiMuon's tau from it (as"
      " gen_gap); none: give --tau")
  target_fraction: float = field(
      0.5, "with --from-sweep: the MiMuon arm whose orthogonalized fraction"
      " is closest to this", minimum=0)
  tau: float | None = field(None, "MiMuon spacing tau (overrides the sweep's)",
                            minimum=0)
  sizes: tuple[int, ...] = field((1000, 4000), "training-set sizes N",
                                 minimum=1)
  seeds: tuple[int, ...] = field((0, 1, 2),
                                 "seeds (init, batches); the first picks lrs")
  steps: int = field(500, "steps per run (the same budget for every N)",
                     minimum=1)
  warmup_steps: int = field(30, "linear warmup steps", minimum=0)
  grid_scale: float = field(1.0, "multiplies the lr grid (tests)",
                            positive=True)
  grid_points: int = field(3, "lrs swept per arm (the middle ones)",
                           minimum=1)
  batch_size: int = field(16, "examples per step / 8 (as in tau_sweep)",
                          minimum=1)
  data_dir: str | None = field(None, "Fashion-MNIST folder; none: default")
  dataset: str = field("fashion", "dataset", choices=data_images.DATASETS)
  width: int = field(16, "CNN channels")
  hidden: int = field(128, "CNN hidden units")
  model: str = field("cnn", "model", choices=train_vision.MODELS)


def mimuon_tau(cfg: CNNSmallDataConfig) -> tuple[float, str]:
  """(tau, where it came from): `--tau`, else round one's (`gen_gap`)."""
  if cfg.tau is not None:
    return cfg.tau, f"{cfg.tau:g} (given)"
  if cfg.from_sweep is None:
    raise ValueError("Give --tau or --from-sweep.")
  _, _, provenance = gen_gap.settings(gen_gap.GenGapConfig(
      from_sweep=cfg.from_sweep, target_fraction=cfg.target_fraction))
  return provenance["tau"], (f"{provenance['tau']:g}, round one's:"
                             f" {provenance['source']}")


def sweep_config(cfg: CNNSmallDataConfig) -> tau_sweep.TauSweepConfig:
  """The tau_sweep settings this study trains with (one eval at the end)."""
  return tau_sweep.TauSweepConfig(
      task="vision", out=cfg.out, steps=cfg.steps,
      warmup_steps=cfg.warmup_steps, eval_every=cfg.steps, seeds=cfg.seeds,
      sgd_scales=("none",), sweep_gated=True, grid_scale=cfg.grid_scale,
      grid_points=cfg.grid_points, batch_size=cfg.batch_size,
      data_dir=cfg.data_dir, dataset=cfg.dataset, width=cfg.width,
      hidden=cfg.hidden, model=cfg.model)


def run(cfg: CNNSmallDataConfig, command: str = "") -> dict[str, Any]:
  out = pathlib.Path(cfg.out)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  tau, source = mimuon_tau(cfg)
  scfg = sweep_config(cfg)
  splits = tau_sweep.vision_splits(scfg)
  tasks = {n: tau_sweep.vision_task(scfg, splits, train_size=n)
           for n in cfg.sizes}
  arms = [tau_sweep.Arm("muon", "muon", "muon"),
          tau_sweep.Arm(f"mimuon-{tau:.3g}-none", "mimuon", "muon", tau,
                        "none")]
  runs, rows, chosen = size_study.train_sizes(scfg, tasks, arms)
  info = tasks[cfg.sizes[0]].info
  report = {
      "config": dataclasses.asdict(cfg), "task": info, "taus": [tau],
      "taus_source": source,
      "setting": (f"{cfg.model.upper()} on {info['dataset']}, the first N of"
                  f" a seeded permutation of the training split,"
                  f" {cfg.steps} steps of {8 * cfg.batch_size} examples at"
                  f" every N; validation: {info['val']} held-out training"
                  f" examples, test: the official {info['test']}. Each arm"
                  f" sweeps {list(tau_sweep.grid(scfg, arms[0]))} at every"
                  " N."),
      "chosen_lr": {str(n): c for n, c in chosen.items()}, "rows": rows,
      "fits": size_study.fit_slopes(rows), "runs": runs,
      "wall_s": time.perf_counter() - t0, "env": reporting.env_info()}
  size_study.write_outputs(
      out, "cnn_small_data",
      "CNN, small data: Muon and MiMuon at their own lrs", report, command,
      cfg.seeds, unit="examples")
  print((out / "results.md").read_text())
  return report


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  return cli.study_main(CNNSmallDataConfig, __doc__, run, argv)


if __name__ == "__main__":
  main()
