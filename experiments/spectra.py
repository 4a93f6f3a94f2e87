"""Records the momentum spectra of Qwen3 LMs at two widths (MiMuon's gate input).

  python -m experiments.spectra --out experiments/results/spectra

Trains each `--presets` Qwen3 of train_lm (default: `tiny`, and `width_0_6b`
with Qwen3-0.6B's widths and 2 layers) on Shakespeare bytes with Muon and,
on step 1 and every `--record-every` steps, measures the matrices MiMuon's
gate would look at (the Nesterov momentum beta*M_t + (1-beta)*G_t) with the
library's own `mimuon_optax.spectral_gaps` (precision="host", and again
with "float64" to check that both paths decide alike on real momenta). Muon is MiMuon with tau=0, so
these are the momenta the gate sees before it changes the trajectory.
Offline, each tau_mode's rule is applied to the recorded statistics over a
grid of tau (`experiments/harness/spectra_analysis.py`). Writes spectra.json
(config, environment, every recorded statistic, the analysis), findings.md,
COMMAND.md and spectra.png (`experiments/harness/spectra_plots.py`, which can redraw
it from spectra.json).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import subprocess
import time
from typing import Any, Sequence

import jax
import numpy as np
import optax

import mimuon_optax
from experiments import train_lm
from experiments.harness import cli
from experiments.harness import data_text
from experiments.harness import diagnostics
from experiments.harness import optimizers
from experiments.harness import reporting
from experiments.harness import spectra_analysis
from experiments.harness import spectra_plots
from experiments.harness.cli import field
from experiments.harness.spectra_analysis import BETA
from experiments.harness.spectra_analysis import FIELDS
from experiments.harness.spectra_analysis import TAU_GRIDS
from mimuon_optax import _matrix

# Files of the earlier (merged-gap) version of this study.
STALE = ("spectra.npz", "ablation", "ablation.json", "ablation.md",
         "gaussian_scaling.md", "gaps_hist.png", "orth_frac_vs_tau.png")


@dataclasses.dataclass(frozen=True)
class SpectraConfig:
  """Configuration of `spectra` (every field is a `--flag`)."""

  out: str = field("runs/spectra", "output directory")
  presets: tuple[str, ...] = field(
      ("tiny", "width_0_6b"), "train_lm presets to train",
      choices=train_lm.PRESETS)
  steps: int = field(200, "Muon training steps per model", minimum=1)
  record_every: int = field(10, "measure the momenta every k steps (and step 1)",
                            minimum=1)
  batch_size: int = field(4, "windows per step (the same for every model)",
                          minimum=1)
  seq_len: int = field(64, "tokens per window", minimum=1)
  ns_dtype: str = field(
      "float32", "Newton-Schulz dtype (XLA:CPU has no fast bfloat16 matmul)")
  seed: int = field(0, "seed of the init and of the data order")
  cache_dir: str = field(data_text.DEFAULT_CACHE_DIR, "token cache directory")
  log_every: int = field(20, "print the loss and step time every k steps")
  reanalyse: bool = field(
      False, "no training: redo the analysis, findings.md and spectra.png from"
      " the records in --out/spectra.json")


def _momentum(opt_state: Any) -> Any:
  """The Nesterov momentum `mu` of the one `MomentumState` (matrix leaves;
  AdamW leaves masked)."""
  return optax.tree_utils.tree_get(opt_state, "MomentumState").mu


def _by_name(tree: Any) -> dict[str, Any]:
  return {diagnostics.short_name(p): x
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


KINDS = ("q", "k", "v", "o", "gate", "up", "down")


def _order(name: str) -> tuple:
  """By layer, then q, k, v, o, gate, up, down."""
  *prefix, _ = name.split(".")
  kind = kind_of(name)
  return ([int(w) if w.isdigit() else w for w in prefix],
          KINDS.index(kind) if kind in KINDS else len(KINDS), kind)


def kind_of(name: str) -> str:
  """`layers.3.q_proj` -> `q`; `layers.0.gate_proj` -> `gate`."""
  return name.split(".")[-1].removesuffix("_proj")


def record(preset: str, cfg: SpectraConfig) -> dict[str, Any]:
  """Trains `preset` with Muon; the gate's statistics of every matrix."""
  run_cfg = train_lm.TrainLMConfig(
      preset=preset, optimizer="muon", steps=cfg.steps, seed=cfg.seed,
      batch_size=cfg.batch_size, seq_len=cfg.seq_len, cache_dir=cfg.cache_dir)
  parts = train_lm.build(run_cfg)
  params, loss_fn = parts["params"], parts["loss_fn"]
  tx, _ = optimizers.make_optimizer(run_cfg, "lm", run_cfg.steps, parts["dims"],
                                ns_dtype=cfg.ns_dtype)
  opt_state = tx.init(params)
  views = _by_name(_matrix.matrix_views(_momentum(opt_state), parts["dims"]))
  names = sorted(views, key=_order)

  @jax.jit
  def step_fn(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, grads

  @jax.jit
  def measure(opt_state, grads):
    mu, g = _by_name(_momentum(opt_state)), _by_name(grads)
    stacks = [views[n].to_matrices(BETA * mu[n] + (1 - BETA) * g[n])
              for n in names]
    # The host path (CPU's "auto") for the records, and the in-graph
    # float64 path on the same momenta for the precision check.
    return (mimuon_optax.spectral_gaps(stacks, precision="host"),
            [s.rho for s in mimuon_optax.spectral_gaps(
                stacks, precision="float64")])

  stats = {f: [] for f in FIELDS}
  rho_float64 = []
  steps, losses, step_s = [], [], []
  t0 = time.perf_counter()
  measure_s = 0.0
  for step in range(cfg.steps):
    t = time.perf_counter()
    params, opt_state, loss, grads = step_fn(
        params, opt_state, parts["sampler"].batch(step))
    loss = float(loss)  # waits for the step
    if step:  # step 0 includes the compile
      step_s.append(time.perf_counter() - t)
    done = step + 1
    if done % cfg.log_every == 0:
      print(f"{preset} step {done}: loss {loss:.3f},"
            f" {np.median(step_s):.2f} s/step", flush=True)
    if done != 1 and done % cfg.record_every:
      continue
    t = time.perf_counter()
    per_matrix, rho64 = jax.device_get(measure(opt_state, grads))
    measure_s += time.perf_counter() - t
    rho_float64.append([float(np.ravel(r)[0]) for r in rho64])
    steps.append(done)
    losses.append(loss)
    for f in FIELDS:  # each stack is one matrix (B = 1) in these models
      stats[f].append([float(np.ravel(getattr(s, f))[0]) for s in per_matrix])
  wall_s = time.perf_counter() - t0
  n_params = sum(x.size for x in jax.tree.leaves(params))
  print(f"{preset}: {len(steps)} records x {len(names)} matrices,"
        f" {wall_s:.0f}s ({np.median(step_s):.2f} s/step), loss"
        f" {losses[0]:.3f} -> {losses[-1]:.3f}", flush=True)
  return {
      "preset": preset, "params": int(n_params),
      "hidden_size": parts["model_config"].hidden_size,
      "steps": steps, "losses": losses, "names": names,
      "kinds": [kind_of(n) for n in names],
      "shapes": [[views[n].fan_in, views[n].fan_out] for n in names],
      "stats": stats,  # field -> [record][matrix], precision="host"
      "rho_float64": rho_float64,  # [record][matrix], precision="float64"
      "step_s_median": float(np.median(step_s)), "measure_s": measure_s,
      "wall_s": wall_s,
  }


def _git_state() -> str:
  """HEAD, and whether mimuon_optax/ differed from it when the run began."""
  run = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True,
                                  cwd=pathlib.Path(__file__).parents[1]
                                  ).stdout.strip()
  dirty = run("status", "--porcelain", "--", "mimuon_optax")
  return run("rev-parse", "--short", "HEAD") + (
      " with uncommitted changes to " + ", ".join(
          line.split()[-1] for line in dirty.splitlines()) if dirty else "")


def remove_stale(out: pathlib.Path) -> None:
  """Deletes the outputs of the earlier version of this study from `out`."""
  for name in STALE:
    path = out / name
    if path.is_dir():
      shutil.rmtree(path)
    elif path.exists():
      path.unlink()


def run(cfg: SpectraConfig, command: str) -> dict[str, Any]:
  """Records (or, with `--reanalyse`, re-reads) the spectra; writes
  spectra.json, findings.md, spectra.png and COMMAND.md."""
  out = pathlib.Path(cfg.out)
  out.mkdir(parents=True, exist_ok=True)
  if cfg.reanalyse:  # same records, current analysis code
    result = json.loads((out / "spectra.json").read_text())
    result.update(default_tau=mimuon_optax.DEFAULT_TAU,
                  reanalysed_with=command,
                  tau_grids={m: g.tolist() for m, g in TAU_GRIDS.items()},
                  analysis=spectra_analysis.analyse(result["records"]))
  else:
    t0, git = time.perf_counter(), _git_state()
    recs = {preset: record(preset, cfg) for preset in cfg.presets}
    result = {"command": command, "config": cli.config_dict(cfg),
              "git": git,
              "env": reporting.env_info(),
              "default_tau": mimuon_optax.DEFAULT_TAU,
              "tau_grids": {m: g.tolist() for m, g in TAU_GRIDS.items()},
              "records": recs, "analysis": spectra_analysis.analyse(recs)}
    result["wall_s"] = time.perf_counter() - t0
    remove_stale(out)
  reporting.write_json(out / "spectra.json", result)
  text = spectra_analysis.findings(result)
  (out / "findings.md").write_text(text)
  spectra_plots.plot(result, out / "spectra.png")
  print(text)
  if cfg.reanalyse:
    return result
  reporting.write_command_md(
      out, "spectra: momentum spectra and the MiMuon gate", command,
      [cfg.seed], result["wall_s"],
      ["trajectory: Muon (= MiMuon with tau=0), default lm lrs,"
       f" ns_dtype={cfg.ns_dtype}",
       f"gate input: Nesterov momentum beta*M_t + (1-beta)*G_t, beta={BETA}",
       f"models: {', '.join(cfg.presets)} (experiments/train_lm.py presets)",
       "analysis only (same records): python -m experiments.spectra"
       f" --reanalyse --out {cfg.out}; plot only: python -m"
       f" experiments.harness.spectra_plots --out {cfg.out}"])
  return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  return cli.study_main(SpectraConfig, __doc__, run, argv)


if __name__ == "__main__":
  main()
