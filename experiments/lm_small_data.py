"""LM, small data, many epochs: test loss and gap vs training tokens N, AdamW / Muon / MiMuon.

  python -m experiments.lm_small_data --out runs/lm_small_data

The tiny Qwen3 with the real Qwen3 tokenizer and round one's splits
(`tau_sweep --task lm`: validation Macbeth + Tempest, test Hamlet + Twelfth
Night, the compact vocabulary over the whole corpus), trained on the first N
tokens of the training plays, for the same number of steps at every N, so
that the small Ns are seen for many epochs and overfit.

Arms: AdamW, Muon, and MiMuon (`sgd_scale="none"`) at two taus: the
calibrated taus of orthogonalized fraction 0.9 and 0.5 (the 0.1 and 0.5
quantiles of rho along Muon's own trajectory on the full training split,
`tau_sweep.calibrate`; `--taus` skips the calibration). At every N each arm's
lr is chosen on the validation split with the first seed (AdamW and Muon on
their grid; MiMuon at Muon's lr, or on Muon's grid with `--sweep-gated`), the
other seeds train at it (`tau_sweep.train_arms`). The test split is only
reported.

Writes results.json (every run), results.csv, results.md (per N and arm: test
loss, test - train gap, paired MiMuon - Muon differences with round one's
significance rule; log-log slopes vs N), lm_small_data.png and COMMAND.md.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Sequence

from experiments import size_study
from experiments import tau_sweep
from experiments import train_lm
from experiments.harness import cli
from experiments.harness import reporting
from experiments.harness.cli import field


@dataclasses.dataclass(frozen=True)
class LMSmallDataConfig:
  """Configuration of `lm_small_data` (every field is a `--flag`)."""

  out: str = field("runs/lm_small_data", "output directory")
  sizes: tuple[int, ...] = field(
      (16_000, 64_000, 256_000, 1_000_000),
      "training tokens N (the first N of the training plays)", minimum=2)
  steps: int = field(1000, "steps per run (the same budget for every N)",
                     minimum=1)
  warmup_steps: int = field(30, "linear warmup steps", minimum=0)
  eval_every: int = field(200, "validation loss every k steps (curves)",
                          minimum=1)
  seeds: tuple[int, ...] = field((0, 1, 2),
                                 "seeds (init, batches); the first picks lrs")
  taus: tuple[float, ...] | None = field(
      None, "MiMuon spacing taus; none: calibrated (orthogonalized fraction"
      " 0.9 and 0.5)", minimum=0)
  calib_steps: int = field(150, "steps of the tau calibration run", minimum=1)
  sweep_gated: bool = field(
      False, "sweep MiMuon's lr on Muon's grid too; default: Muon's lr")
  grid_scale: float = field(1.0, "multiplies every lr grid (tests)",
                            positive=True)
  grid_points: int = field(3, "lrs per grid (the middle ones)", minimum=1)
  model_preset: str = field("tiny", "model size", choices=train_lm.PRESETS)
  seq_len: int = field(64, "tokens per window", minimum=1)
  batch_size: int = field(8, "windows per step", minimum=1)
  eval_batches: int = field(4, "window batches per evaluation (each split)",
                            minimum=1)


def sweep_config(cfg: LMSmallDataConfig) -> tau_sweep.TauSweepConfig:
  """The tau_sweep settings this study trains with."""
  return tau_sweep.TauSweepConfig(
      task="lm", out=cfg.out, steps=cfg.steps, warmup_steps=cfg.warmup_steps,
      eval_every=cfg.eval_every, seeds=cfg.seeds, taus=cfg.taus,
      calib_steps=cfg.calib_steps, sgd_scales=("none",),
      sweep_gated=cfg.sweep_gated, grid_scale=cfg.grid_scale,
      grid_points=cfg.grid_points, model_preset=cfg.model_preset,
      tokenizer="qwen3", seq_len=cfg.seq_len, batch_size=cfg.batch_size,
      eval_batches=cfg.eval_batches)


def run(cfg: LMSmallDataConfig, command: str = "") -> dict[str, Any]:
  out = pathlib.Path(cfg.out)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  scfg = sweep_config(cfg)
  full = tau_sweep.lm_task(scfg)
  if max(cfg.sizes) > full.info["train_tokens"]:
    raise ValueError(f"--sizes: {max(cfg.sizes)} > the"
                     f" {full.info['train_tokens']} training tokens")
  tasks = {n: tau_sweep.lm_task(scfg, train_size=n) for n in cfg.sizes}
  results = size_study.study(scfg, full, tasks, "the full training split")
  report = {
      "config": dataclasses.asdict(cfg), "task": full.info,
      "setting": (f"Tiny Qwen3 ({cfg.model_preset}), Qwen3 tokenizer, first N"
                  f" tokens of the {full.info['train_plays']} training plays,"
                  f" {cfg.steps} steps of {cfg.batch_size} x {cfg.seq_len}"
                  f" tokens at every N ({cfg.steps * cfg.batch_size * cfg.seq_len:,}"
                  " tokens seen); train loss on fixed windows of the N tokens,"
                  " validation and test on held-out plays."),
      **results,
      "wall_s": time.perf_counter() - t0, "env": reporting.env_info()}
  size_study.write_outputs(
      out, "lm_small_data", "LM, small data: loss vs training tokens N",
      report, command, cfg.seeds,
      [f"splits: validation {full.info['val_plays']}, test"
       f" {full.info['test_plays']}"])
  print((out / "results.md").read_text())
  return report


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  return cli.study_main(LMSmallDataConfig, __doc__, run, argv)


if __name__ == "__main__":
  main()
