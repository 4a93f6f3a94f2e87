"""LM fine-tuning: AdamW / Muon / MiMuon fine-tune one pretrained start on N tokens of a new domain.

  python -m experiments.lm_finetune --out runs/lm_finetune

The domain is Shakespeare's histories, which the pretraining never sees:
fine-tuning trains on the first N tokens of `--ft-train-plays` (the Henry VI
trilogy and Richard III, 159,682 Qwen3 tokens), validates on
`--ft-val-plays` (Richard II) and tests on `--ft-test-plays` (Henry V). The
start is regenerated deterministically here: the tiny Qwen3 (Qwen3
tokenizer, compact vocabulary over the whole corpus, as in `tau_sweep --task
lm`) trained by Muon at round one's validation-chosen lr (0.01) for
`--pretrain-steps` on round one's training plays minus every history
(`HISTORIES`); its losses on the domain are recorded.

Then, as in `lm_small_data`: arms AdamW, Muon and MiMuon at the calibrated
taus of orthogonalized fraction 0.9 and 0.5 (rho quantiles of Muon's
fine-tuning trajectory on the largest N, `tau_sweep.calibrate`); at every N
each arm's lr is chosen on the domain's validation play with the first seed,
every seed (batch order; the start is the same) trains at it. Muon and
MiMuon train the non-matrix leaves (embeddings, norms, output head) with
AdamW at round one's 3e-3 times `--grid-scale`, as the grids are scaled:
unscaled, that AdamW part alone wrecks the pretrained start (at N = 8k,
Muon's validation loss was 7.40 at every lr of its grid, against 6.03 for
AdamW at 9e-5 and 6.10 at the start). Reported: test
loss, test - train gap, paired MiMuon - Muon differences with round one's
significance rule, log-log slopes vs N.

Writes results.json (every run and the pretraining), results.csv,
results.md, lm_finetune.png and COMMAND.md.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Sequence

import jax

from experiments import size_study
from experiments import tau_sweep
from experiments import train_lm
from experiments.harness import cli
from experiments.harness import data_text
from experiments.harness import reporting
from experiments.harness.cli import field

HISTORIES = ("henry_iv_part_1", "henry_iv_part_2", "henry_v",
             "henry_vi_part_1", "henry_vi_part_2", "henry_vi_part_3",
             "henry_viii", "john", "richard_ii", "richard_iii")
PRETRAIN_LR = 0.01  # Muon's lr chosen on validation in round one (tau_sweep_lm)


@dataclasses.dataclass(frozen=True)
class LMFinetuneConfig:
  """Configuration of `lm_finetune` (every field is a `--flag`)."""

  out: str = field("runs/lm_finetune", "output directory")
  ft_train_plays: tuple[str, ...] = field(
      ("henry_vi_part_1", "henry_vi_part_2", "henry_vi_part_3",
       "richard_iii"), "fine-tuning text (N = its first N tokens)")
  ft_val_plays: tuple[str, ...] = field(("richard_ii",),
                                        "fine-tuning validation (lr choice)")
  ft_test_plays: tuple[str, ...] = field(("henry_v",),
                                         "fine-tuning test (reported)")
  sizes: tuple[int, ...] = field((8_000, 32_000, 128_000),
                                 "fine-tuning tokens N", minimum=2)
  pretrain_steps: int = field(600, "steps of the pretraining (Muon)",
                              minimum=1)
  steps: int = field(400, "fine-tuning steps (the same for every N)",
                     minimum=1)
  warmup_steps: int = field(20, "linear warmup steps of each run", minimum=0)
  eval_every: int = field(100, "validation loss every k steps (curves)",
                          minimum=1)
  seeds: tuple[int, ...] = field(
      (0, 1, 2), "fine-tuning seeds (batch order); the first picks lrs")
  taus: tuple[float, ...] | None = field(
      None, "MiMuon spacing taus; none: calibrated (orthogonalized fraction"
      " 0.9 and 0.5)", minimum=0)
  calib_steps: int = field(150, "steps of the tau calibration run", minimum=1)
  sweep_gated: bool = field(
      False, "sweep MiMuon's lr on Muon's grid too; default: Muon's lr")
  grid_scale: float = field(
      0.3, "multiplies round one's lr grids (0.3: 9e-4, 3e-3, 9e-3 for AdamW"
      " and Muon; fine-tuning wants smaller steps)", positive=True)
  grid_points: int = field(3, "lrs per grid (the middle ones)", minimum=1)
  model_preset: str = field("tiny", "model size", choices=train_lm.PRESETS)
  seq_len: int = field(64, "tokens per window", minimum=1)
  batch_size: int = field(8, "windows per step", minimum=1)
  eval_batches: int = field(4, "window batches per evaluation (each split)",
                            minimum=1)

  def __post_init__(self):
    domain = [*self.ft_train_plays, *self.ft_val_plays, *self.ft_test_plays]
    if len(set(domain)) != len(domain):
      raise ValueError("--ft-train-plays, --ft-val-plays and --ft-test-plays"
                       " must be disjoint")


def sweep_config(cfg: LMFinetuneConfig, steps: int, grid_scale: float
                 ) -> tau_sweep.TauSweepConfig:
  """The tau_sweep settings of the pretraining and the fine-tuning runs.

  `grid_scale` scales the AdamW lr of Muon's non-matrix leaves too (1.0,
  the pretraining: round one's 3e-3).
  """
  return tau_sweep.TauSweepConfig(
      task="lm", out=cfg.out, steps=steps, warmup_steps=cfg.warmup_steps,
      eval_every=min(cfg.eval_every, steps), seeds=cfg.seeds, taus=cfg.taus,
      calib_steps=cfg.calib_steps, sgd_scales=("none",),
      sweep_gated=cfg.sweep_gated, grid_scale=grid_scale,
      adam_lr=tau_sweep.ADAM_LR["lm"] * grid_scale,
      grid_points=cfg.grid_points, model_preset=cfg.model_preset,
      tokenizer="qwen3", seq_len=cfg.seq_len, batch_size=cfg.batch_size,
      eval_batches=cfg.eval_batches)


def pretrain_plays(cfg: LMFinetuneConfig) -> tuple[str, ...]:
  """Round one's training plays minus the histories and the domain."""
  train, _, _ = data_text.split_plays3(tau_sweep.VAL_PLAYS,
                                       tau_sweep.TEST_PLAYS)
  domain = {*cfg.ft_train_plays, *cfg.ft_val_plays, *cfg.ft_test_plays}
  unknown = sorted(domain - set(data_text.list_plays()))
  if unknown:
    raise ValueError(f"--ft-*-plays: unknown plays {unknown}; known:"
                     f" {data_text.list_plays()}")
  held = {*HISTORIES, *domain}
  return tuple(p for p in train if p not in held)


def pretrain(cfg: LMFinetuneConfig, domain: tuple) -> tuple[Any, dict]:
  """(params, info): Muon on the pretraining plays, seed 0, evaluated on
  the fine-tuning domain (validation and test plays)."""
  pcfg = sweep_config(cfg, cfg.pretrain_steps, 1.0)
  plays = pretrain_plays(cfg)
  task = tau_sweep.lm_task(pcfg, plays=(plays, domain[1], domain[2]))
  arm = tau_sweep.Arm("muon", "muon", "muon")
  t0 = time.perf_counter()
  tx, step_fn = tau_sweep.prepare(pcfg, task, arm, PRETRAIN_LR,
                                  cfg.pretrain_steps)
  params = task.init(0)
  state = tx.init(params)
  for step in range(cfg.pretrain_steps):
    params, state, _ = step_fn(params, state, task.batch(0, step))
  metrics = task.evaluate(params)  # train_loss: pretraining windows
  info = {"plays": list(plays), "tokens": task.info["train_tokens"],
          "optimizer": "muon", "lr": PRETRAIN_LR, "seed": 0,
          "steps": cfg.pretrain_steps, "domain_val_loss": metrics["val_loss"],
          "domain_test_loss": metrics["test_loss"],
          "pretrain_train_loss": metrics["train_loss"],
          "wall_s": time.perf_counter() - t0}
  print(f"pretrained: {info}", flush=True)
  return params, info


def finetune_task(scfg: tau_sweep.TauSweepConfig, domain: tuple, n: int | None,
                  start: Any) -> tau_sweep.Task:
  """The domain task on its first `n` tokens, every seed from `start`."""
  task = tau_sweep.lm_task(scfg, train_size=n, plays=domain)
  # A fresh copy per run: the train step donates its input buffers.
  return dataclasses.replace(
      task, init=lambda seed: jax.tree.map(lambda x: x.copy(), start))


def run(cfg: LMFinetuneConfig, command: str = "") -> dict[str, Any]:
  out = pathlib.Path(cfg.out)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  domain = (cfg.ft_train_plays, cfg.ft_val_plays, cfg.ft_test_plays)
  start, pretraining = pretrain(cfg, domain)
  scfg = sweep_config(cfg, cfg.steps, cfg.grid_scale)
  full = finetune_task(scfg, domain, None, start)
  if max(cfg.sizes) > full.info["train_tokens"]:
    raise ValueError(f"--sizes: {max(cfg.sizes)} > the"
                     f" {full.info['train_tokens']} tokens of"
                     f" --ft-train-plays")
  tasks = {n: finetune_task(scfg, domain, n, start) for n in cfg.sizes}
  results = size_study.study(
      scfg, tasks[max(cfg.sizes)], tasks,
      f"the fine-tuning text at N = {max(cfg.sizes):,}")
  report = {
      "config": dataclasses.asdict(cfg), "task": full.info,
      "pretraining": pretraining,
      "setting": (f"Tiny Qwen3 ({cfg.model_preset}), Qwen3 tokenizer,"
                  f" pretrained by Muon (lr {PRETRAIN_LR:g},"
                  f" {cfg.pretrain_steps} steps) on"
                  f" {len(pretraining['plays'])} plays without the histories"
                  f" (domain validation loss at the start"
                  f" {pretraining['domain_val_loss']:.4f}, test"
                  f" {pretraining['domain_test_loss']:.4f}); fine-tuned on the"
                  f" first N tokens of {list(cfg.ft_train_plays)}, {cfg.steps}"
                  f" steps of {cfg.batch_size} x {cfg.seq_len} tokens at every"
                  f" N; validation {list(cfg.ft_val_plays)}, test"
                  f" {list(cfg.ft_test_plays)}."),
      **results,
      "wall_s": time.perf_counter() - t0, "env": reporting.env_info()}
  size_study.write_outputs(
      out, "lm_finetune", "LM fine-tuning: loss vs fine-tuning tokens N",
      report, command, cfg.seeds,
      [f"pretraining: {len(pretraining['plays'])} plays,"
       f" {pretraining['tokens']:,} tokens, Muon lr {PRETRAIN_LR:g},"
       f" {cfg.pretrain_steps} steps, seed 0 ({pretraining['wall_s']:.0f} s)"])
  print((out / "results.md").read_text())
  return report


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  return cli.study_main(LMFinetuneConfig, __doc__, run, argv)


if __name__ == "__main__":
  main()
