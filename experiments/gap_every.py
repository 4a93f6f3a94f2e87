"""How often do MiMuon's amortized and lagged gates decide differently?

  python -m experiments.gap_every          # tiny Qwen3, 300 steps -> runs/gap_every
  python -m experiments.gap_every --out experiments/results/gap_every

`mimuon(gap_every=k)` re-measures each matrix every k steps, staggered:
matrix j (of its group of equal-shape matrices) on the steps t with
t % k == phase[j] (`mimuon_optax._matrix.stagger_phases`), so each step
measures ~1/k of them; in between, each decision is re-taken from the
matrix's last statistics. For every tau in `--taus` this trains the tiny
Qwen3 LM twice from the same init on the same batches:

1. the exact gate (`gap_every=1`), logging every step, which gives each
   matrix's decision d[t] at every step t. On this trajectory the amortized
   gate would have decided d[t_j], t_j the last step <= t of matrix j's
   phase (before its first turn: the initial +inf gap, a Muon step), so the
   fraction of (step, matrix) pairs where the two differ is its
   disagreement, for every k in `--ks`; the step-to-step flip rate of d is
   shown beside it. The lagged gate (`lagged_gate=True`) would have decided
   d[t - 1] (before the first step: the zero matrix, a Muon step), so its
   disagreement is the flip rate plus the first step;
2. the amortized gate (`gap_every=--k-train`) and the lagged gate for real,
   for their own trajectories' val loss, orthogonalized fraction and step
   time.

Writes results.md, results.json, COMMAND.md and one folder per run.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Sequence

import jax
import numpy as np
import optax

import mimuon_optax
from experiments import train_lm
from experiments.harness import cli
from experiments.harness import diagnostics
from experiments.harness import reporting
from experiments.harness.cli import field
from mimuon_optax import _matrix


@dataclasses.dataclass(frozen=True)
class GapEveryConfig:
  """Configuration of `gap_every` (every field is a `--flag`)."""

  out: str = field("runs/gap_every", "output directory")
  taus: tuple[float, ...] = field(
      (0.3, 0.5), "MiMuon thresholds (tau_mode='spacing'): the default, and"
      " one where more gates sit near tau", minimum=0)
  ks: tuple[int, ...] = field((2, 5, 10, 20, 50), "amortization periods",
                              minimum=1)
  k_train: int = field(10, "the gap_every of the real amortized run",
                       minimum=1)
  steps: int = field(300, "training steps", minimum=1)
  eval_every: int = field(100, "evaluate every k steps", minimum=1)
  seed: int = field(0, "init and data seed")
  model_preset: str = field("tiny", "model size", choices=train_lm.PRESETS)
  seq_len: int = field(128, "tokens per window", minimum=1)
  batch_size: int = field(16, "windows per step", minimum=1)
  cache_dir: str = field("runs/token_cache", "token cache directory")


def decisions(records: list[dict]) -> tuple[np.ndarray, list[str]]:
  """(steps, matrices) 0/1 gate decisions from per-step `orth_frac` logs."""
  names = sorted(records[0]["orth_frac"])
  if [r["step"] for r in records] != list(range(1, len(records) + 1)):
    raise ValueError("need a record for every step (--log-every 1)")
  d = np.array([[r["orth_frac"][n] for n in names] for r in records])
  if not np.all((d == 0) | (d == 1)):
    raise ValueError("orth_frac is not 0/1: records span more than one step")
  return d.astype(bool), names


def disagreement(d: np.ndarray, k: int, phases: np.ndarray) -> float:
  """Fraction of (t, matrix j) where the staggered gate differs from d.

  Step t is 0-based; matrix j was last measured at t - (t - phases[j]) % k,
  or never (its initial +inf gap: orthogonalized) before its first turn.
  """
  t = np.arange(d.shape[0])[:, None]
  last = t - (t - phases[None, :]) % k
  cols = np.broadcast_to(np.arange(d.shape[1]), last.shape)
  held = np.where(last >= 0, d[np.maximum(last, 0), cols], True)
  return float(np.mean(d != held))


def phases_by_name(cfg: GapEveryConfig, names: list[str], k: int
                   ) -> np.ndarray:
  """stagger_phases of the model's matrices, in the order of `names`."""
  parts = train_lm.build(train_lm.TrainLMConfig(
      preset=cfg.model_preset, seed=cfg.seed, seq_len=cfg.seq_len,
      batch_size=cfg.batch_size, cache_dir=cfg.cache_dir))
  params, dims = parts["params"], parts["dims"]
  labels = mimuon_optax.default_param_labels(params, dims)
  matrices = jax.tree.map(lambda p, l: p if l == "muon" else optax.MaskedNode(),
                          params, labels)
  phases = _matrix.stagger_phases(matrices, dims, k)
  flat = diagnostics.per_matrix_values(phases)
  return np.array([flat[n] for n in names])


def lagged_disagreement(d: np.ndarray) -> float:
  """Fraction of (t, matrix) where the lagged gate's d[t - 1] differs from
  d[t]; before step 0 the lagged gate measures the zero matrix (Muon)."""
  held = np.concatenate([np.ones_like(d[:1]), d[:-1]])
  return float(np.mean(d != held))


def flip_rate(d: np.ndarray) -> float:
  """Fraction of (t >= 1, matrix) with d[t] != d[t - 1]."""
  return float(np.mean(d[1:] != d[:-1]))


def _train(cfg: GapEveryConfig, name: str, tau: float, gap_every: int,
           lagged_gate: bool = False) -> list[dict]:
  run_cfg = train_lm.TrainLMConfig(
      out=str(pathlib.Path(cfg.out) / name), preset=cfg.model_preset,
      optimizer="mimuon", tau=tau, gap_every=gap_every,
      lagged_gate=lagged_gate, steps=cfg.steps,
      seed=cfg.seed, seq_len=cfg.seq_len, batch_size=cfg.batch_size,
      log_every=1, eval_every=cfg.eval_every, checkpoint=False,
      progress=False, plot=False, cache_dir=cfg.cache_dir)
  train_lm.run(run_cfg)
  return reporting.read_jsonl(pathlib.Path(run_cfg.out) / "metrics.jsonl")


def _step_ms(records: list[dict]) -> float:
  """Median wall ms per step, the first 10 (at most half) left out."""
  wall = np.array([r["wall_s"] for r in records])
  return float(np.median(np.diff(wall[min(10, len(wall) // 2):])) * 1e3)


def run(cfg: GapEveryConfig) -> dict[str, Any]:
  results = {}
  for tau in cfg.taus:
    exact = _train(cfg, f"tau{tau:g}_every1", tau, 1)
    amortized = _train(cfg, f"tau{tau:g}_every{cfg.k_train}", tau, cfg.k_train)
    lagged = _train(cfg, f"tau{tau:g}_lagged", tau, 1, lagged_gate=True)
    d, names = decisions(exact)
    d_amortized, _ = decisions(amortized)
    d_lagged, _ = decisions(lagged)
    phases = {k: phases_by_name(cfg, names, k) for k in {*cfg.ks, cfg.k_train}}
    results[f"{tau:g}"] = {
        "matrices": len(names),
        "orth_frac_exact": float(d.mean()),
        "flip_rate": flip_rate(d),
        "disagreement": {k: disagreement(d, k, phases[k]) for k in cfg.ks},
        "disagreement_lagged": lagged_disagreement(d),
        "val_loss_exact": exact[-1]["val_loss"],
        f"val_loss_every{cfg.k_train}": amortized[-1]["val_loss"],
        f"orth_frac_every{cfg.k_train}": float(d_amortized.mean()),
        # The amortized run holds each decision for k steps (tau is fixed).
        "amortized_self_disagreement": disagreement(
            d_amortized, cfg.k_train, phases[cfg.k_train]),
        "step_ms_exact": _step_ms(exact),
        f"step_ms_every{cfg.k_train}": _step_ms(amortized),
        "val_loss_lagged": lagged[-1]["val_loss"],
        "orth_frac_lagged": float(d_lagged.mean()),
        "step_ms_lagged": _step_ms(lagged),
    }
  return results


def markdown(cfg: GapEveryConfig, results: dict[str, Any]) -> str:
  k = cfg.k_train
  lines = [
      "On the exact gate's own trajectory: the fraction of (step, matrix)"
      " decisions that `gap_every=k`, or `lagged_gate=True`, would take"
      " differently.", "",
      reporting.markdown_table(
          ["tau", "matrices", "orthogonalized (exact)", "step-to-step flips"]
          + [f"k={k_}" for k_ in cfg.ks] + ["lagged"],
          [[tau, r["matrices"], r["orth_frac_exact"], r["flip_rate"]]
           + [r["disagreement"][k_] for k_ in cfg.ks]
           + [r["disagreement_lagged"]]
           for tau, r in results.items()]),
      "", f"Trained for real with `gap_every={k}` (its own trajectory):", "",
      reporting.markdown_table(
          ["tau", "val loss (gap_every=1)", f"val loss (gap_every={k})",
           f"orthogonalized (gap_every={k})", "ms/step (gap_every=1)",
           f"ms/step (gap_every={k})"],
          [[tau, r["val_loss_exact"], r[f"val_loss_every{k}"],
            r[f"orth_frac_every{k}"], r["step_ms_exact"],
            r[f"step_ms_every{k}"]] for tau, r in results.items()]),
      "", "Trained for real with `lagged_gate=True` (its own trajectory):",
      "",
      reporting.markdown_table(
          ["tau", "val loss (exact)", "val loss (lagged)",
           "orthogonalized (lagged)", "ms/step (exact)", "ms/step (lagged)"],
          [[tau, r["val_loss_exact"], r["val_loss_lagged"],
            r["orth_frac_lagged"], r["step_ms_exact"], r["step_ms_lagged"]]
           for tau, r in results.items()]),
  ]
  return "\n".join(lines) + "\n"


def run_and_write(cfg: GapEveryConfig, command: str) -> dict[str, Any]:
  """`run`, then results.md, results.json and COMMAND.md in `cfg.out`."""
  out = pathlib.Path(cfg.out)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  results = run(cfg)
  wall_s = time.perf_counter() - t0
  table = markdown(cfg, results)
  (out / "results.md").write_text("# gap_every: amortized and lagged vs"
                                  " exact gate\n\n"
                                  + table)
  reporting.write_json(out / "results.json", {"config": cli.config_dict(cfg),
                                              "results": results})
  reporting.write_command_md(out, "gap_every: amortized vs exact MiMuon gate",
                             command, [cfg.seed], wall_s)
  print(table)
  return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  return cli.study_main(GapEveryConfig, __doc__, run_and_write, argv)


if __name__ == "__main__":
  main()
