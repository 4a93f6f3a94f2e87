"""The experiments' optimizers: AdamW, Muon and MiMuon, their learning rates.

  tx, schedule = make_optimizer(cfg, "lm", steps, weight_dimension_numbers)

`cfg` has the `OptimizerConfig` fields (every experiment config inherits
them); `DEFAULT_LRS` are the demo's rates per task.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import optax

import mimuon_optax
from experiments.harness.cli import field
from mimuon_optax import _mix

OPTIMIZERS = ("adamw", "muon", "mimuon")


# Peak learning rates of the demo and the training scripts: single-seed
# sweeps on the byte-level tiny LM and the CNN (in git history before
# 2026-11-26; "Learning rates" in experiments/README.md). `lr` is the matrix
# learning rate for Muon/MiMuon and `adam_lr` the AdamW learning rate of their
# non-matrix leaves (embeddings, norms, biases, heads). MiMuon uses Muon's
# rates (the paper's one eta). The evidence studies do not use these: they
# choose their own on a validation split (tau_sweep).
DEFAULT_LRS = {
    "lm": {"adamw": (3e-3, None), "muon": (0.01, 3e-3),
           "mimuon": (0.01, 3e-3)},
    "vision": {"adamw": (1e-2, None), "muon": (0.03, 3e-3),
               "mimuon": (0.03, 3e-3)},
}


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimizer fields shared by every experiment config."""

  optimizer: str = field("mimuon", "optimizer", choices=OPTIMIZERS)
  lr: float | None = field(
      None, "peak learning rate (the matrix lr for muon/mimuon); none: the"
      " tuned default for the task (optimizers.DEFAULT_LRS)", positive=True)
  adam_lr: float | None = field(
      None, "AdamW lr of the non-matrix leaves of muon/mimuon; none: the"
      " tuned default", positive=True)
  weight_decay: float = field(
      0.0, "decoupled weight decay (matrices for muon/mimuon, every leaf for"
      " adamw)", minimum=0)
  warmup_steps: int = field(20, "linear warmup steps before the cosine decay",
                            minimum=0)
  tau: float = field(mimuon_optax.DEFAULT_TAU,
                     "MiMuon gate threshold (library default)", minimum=0)
  tau_mode: str = field(
      "spacing", "MiMuon gate statistic: spacing (rho = kappa sqrt(r) /"
      " median gap, the library default), relative (kappa / s_max) or"
      " absolute (kappa)", choices=_mix.TAU_MODES)
  sgd_scale: str = field(
      "none", "MiMuon SGD-branch scale: none (paper) or rms_match",
      choices=_mix.SGD_SCALES)
  gap_every: int = field(1, "MiMuon: re-measure the spectrum every k steps",
                         minimum=1)
  lagged_gate: bool = field(False, "MiMuon: decide on the previous step's"
                            " spectrum (lagged_gate=True)")


def lr_schedule(peak: float, steps: int, warmup_steps: int,
                final_fraction: float = 0.1) -> optax.Schedule:
  """Linear warmup to `peak`, cosine decay to `final_fraction * peak`."""
  warmup_steps = min(warmup_steps, max(steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      0.0 if warmup_steps else peak, peak, warmup_steps, max(steps, 1),
      end_value=peak * final_fraction)


# The AdamW branch of muon/mimuon in every experiment here: the same b1/b2 as
# the plain AdamW runs, no Nesterov (the library's defaults follow optax's
# contrib.muon instead: b2=0.999, Nesterov AdamW).
ADAMW_LEAVES = dict(adam_b1=0.9, adam_b2=0.95, adam_eps=1e-8,
                    adam_nesterov=False)


def resolve_lrs(cfg: Any, task: str) -> Any:
  """`cfg` with `lr` (and `adam_lr` for muon/mimuon) set to the rates used."""
  default_lr, default_adam_lr = DEFAULT_LRS[task][cfg.optimizer]
  return dataclasses.replace(
      cfg, lr=default_lr if cfg.lr is None else cfg.lr,
      adam_lr=(None if cfg.optimizer == "adamw" else
               default_adam_lr if cfg.adam_lr is None else cfg.adam_lr))


def make_optimizer(cfg: Any, task: str, steps: int, weight_dimension_numbers=None,
                   *, mesh: jax.sharding.Mesh | None = None,
                   mesh_axes: str | tuple[str, ...] | None = None,
                   ns_dtype: str = "bfloat16",
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(transform, matrix lr schedule) for `cfg.optimizer`.

  `cfg` has the `OptimizerConfig` fields. AdamW uses b1=0.9, b2=0.95 like the
  AdamW branch of Muon/MiMuon, so the three differ only in the matrix rule.
  `mesh`/`mesh_axes` go to `muon`/`mimuon` (whole-matrix Newton-Schulz and
  gap test spread over the mesh); AdamW is elementwise and needs neither.
  `ns_dtype` is the Newton-Schulz dtype of `muon`/`mimuon`.
  """
  if cfg.optimizer not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got"
                     f" {cfg.optimizer!r}")
  cfg = resolve_lrs(cfg, task)
  lr, adam_lr = cfg.lr, cfg.adam_lr
  schedule = lr_schedule(lr, steps, cfg.warmup_steps)
  if cfg.optimizer == "adamw":
    return optax.adamw(schedule, b1=0.9, b2=0.95,
                       weight_decay=cfg.weight_decay), schedule
  shared = dict(
      learning_rate=schedule, weight_decay=cfg.weight_decay,
      adam_learning_rate=lr_schedule(adam_lr, steps, cfg.warmup_steps),
      weight_dimension_numbers=weight_dimension_numbers, mesh=mesh,
      mesh_axes=mesh_axes, ns_dtype=ns_dtype, **ADAMW_LEAVES)
  if cfg.optimizer == "muon":
    return mimuon_optax.muon(**shared), schedule
  return mimuon_optax.mimuon(
      tau=cfg.tau, tau_mode=cfg.tau_mode, sgd_scale=cfg.sgd_scale,
      gap_every=cfg.gap_every, lagged_gate=cfg.lagged_gate, **shared), schedule
