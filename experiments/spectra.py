"""Singular-value spectra and min gaps of real momenta, and the gate vs tau.

  python -m experiments.spectra                 # record + analyse (both tasks)
  python -m experiments.spectra --ablate        # + short MiMuon trainings

Trains the tiny Qwen3 LM (Shakespeare bytes) and the small CNN
(Fashion-MNIST) with Muon and, every `--record-every` steps, takes the
momentum that MiMuon's gate would look at (the Nesterov look-ahead
beta * M_t + (1 - beta) * G_t) of every matrix and records its singular
values and `mimuon_optax.spectral_gap` (the gate's own gap test). Muon is
MiMuon with tau=0, so these are the spectra MiMuon sees before its gate
changes the trajectory. Offline, the gate definition is applied to the
recorded gaps for a grid of tau (relative and absolute): the fraction of
(step, matrix) pairs that would be orthogonalized. A Gaussian matrix of each
shape gives the random-matrix baseline of the relative gap.

`--ablate` then trains MiMuon for a few (tau, tau_mode, sgd_scale) settings
next to Muon and AdamW, to see what the gate choices do to the loss.

Writes spectra.npz (raw), spectra.json (quantiles, orth. fraction vs tau),
spectra.png, gaps_hist.png, orth_frac_vs_tau.png, findings.md, COMMAND.md
(and ablation.md/json).
"""

from __future__ import annotations

import dataclasses
import pathlib
import shlex
import sys
import time
from typing import Any, Sequence

if __package__ in (None, ""):  # `python experiments/spectra.py`
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  import experiments  # noqa: F401  (sets OPENBLAS_NUM_THREADS first)

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mimuon_optax
from experiments import common
from experiments import data_images
from experiments import train_lm
from experiments import train_vision
from experiments.common import field

TASKS = ("lm", "vision")
TAU_GRID_REL = np.logspace(-7, 0, 71)
TAU_GRID_ABS = np.logspace(-9, 0, 91)


@dataclasses.dataclass(frozen=True)
class SpectraConfig:
  """Configuration of `spectra` (every field is a `--flag`)."""

  out: str = field("experiments/results/spectra", "output directory")
  tasks: tuple[str, ...] = field(TASKS, f"subset of {TASKS}")
  lm_steps: int = field(300, "LM training steps")
  vision_steps: int = field(300, "CNN training steps")
  record_every: int = field(10, "record the momenta every k steps (and step 1)")
  seed: int = field(0, "seed")
  baseline_samples: int = field(20, "Gaussian matrices per shape for the baseline")
  ablate: bool = field(False, "also train MiMuon variants (see module doc)")
  ablate_lm_steps: int = field(150, "LM steps per ablation run")
  ablate_vision_steps: int = field(300, "CNN steps per ablation run")
  ablate_taus: tuple[float, ...] = field(
      (1e-3, 1e-4), "relative taus of the ablation (sgd_scale none and"
      " rms_match each)")
  progress: bool = field(False, "tqdm bars in the ablation runs")
  gaussian_only: bool = field(
      False, "only tabulate the Gaussian baseline's relative min gap vs the"
      " matrix size k (k x 3k matrices) -> gaussian_scaling.md; no training")
  gaussian_ks: tuple[int, ...] = field(
      (16, 32, 64, 128, 256, 512, 1024), "k of --gaussian-only")


def _to_matrices(x: jax.Array, dims: mimuon_optax.MuonDimensionNumbers
                 ) -> jax.Array:
  """Leaf -> (batch, fan_in, fan_out), per resolved dimension numbers."""
  red = (dims.reduction_axis,) if isinstance(dims.reduction_axis, int) else tuple(dims.reduction_axis)
  outp = (dims.output_axis,) if isinstance(dims.output_axis, int) else tuple(dims.output_axis)
  batch = tuple(a for a in range(x.ndim) if a not in red + outp)
  fan_in = int(np.prod([x.shape[a] for a in red]))
  fan_out = int(np.prod([x.shape[a] for a in outp]))
  return x.transpose(batch + red + outp).reshape(-1, fan_in, fan_out)


def kind_of(name: str) -> str:
  """`layers.3.q_proj` -> `q_proj`; `conv1` -> `conv1`."""
  return name.split(".")[-1].split("[")[0]


@jax.jit
def _measure(m_BxMxN):
  stats = mimuon_optax.spectral_gap(m_BxMxN)
  return mimuon_optax.singular_values(m_BxMxN), stats.min_gap, stats.rel_gap


def _momentum_state(opt_state):
  found = [x for x in jax.tree.leaves(
      opt_state, is_leaf=lambda x: isinstance(x, mimuon_optax.MomentumState))
           if isinstance(x, mimuon_optax.MomentumState)]
  assert len(found) == 1, found
  return found[0]


def record(task: str, cfg: SpectraConfig) -> dict[str, Any]:
  """Trains with Muon and records spectra of the gate's input."""
  if task == "lm":
    run_cfg = train_lm.TrainLMConfig(optimizer="muon", steps=cfg.lm_steps,
                                     seed=cfg.seed)
    parts = train_lm.build(run_cfg)
    params, dims, loss_fn = parts["params"], parts["dims"], parts["loss_fn"]
    batch_fn = parts["sampler"].batch
    steps, task_key = cfg.lm_steps, "lm"
  else:
    run_cfg = train_vision.TrainVisionConfig(optimizer="muon",
                                             steps=cfg.vision_steps,
                                             seed=cfg.seed)
    data = data_images.load_images(run_cfg.dataset)
    graphdef, params = train_vision.init_model(run_cfg, data, cfg.seed)
    dims = train_vision.vision_dimension_numbers(params)
    loss_fn, _ = train_vision.make_loss_fns(graphdef)

    def batch_fn(step):
      idx = data_images.batch_indices(len(data.x_train), run_cfg.batch_size,
                                      cfg.seed, step)
      return data.x_train[idx], data.y_train[idx]
    steps, task_key = cfg.vision_steps, "vision"
  tx, _ = common.make_optimizer(run_cfg, task_key, steps, dims)
  beta = 0.95  # muon()'s default, used by make_optimizer
  opt_state = tx.init(params)
  # Every matrix leaf has explicit dimension numbers in both tasks' trees.
  is_dims = lambda x: x is None or isinstance(x, mimuon_optax.MuonDimensionNumbers)
  names = {common.short_name(p): d for p, d in
           jax.tree_util.tree_flatten_with_path(dims, is_leaf=is_dims)[0]
           if d is not None}

  @jax.jit
  def step_fn(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, grads

  spectra: dict[str, list] = {n: [] for n in names}
  gaps: dict[str, list] = {n: [] for n in names}
  rel: dict[str, list] = {n: [] for n in names}
  recorded_steps, losses = [], []
  t0 = time.perf_counter()
  for step in range(steps):
    params, opt_state, loss, grads = step_fn(params, opt_state, batch_fn(step))
    done = step + 1
    if done != 1 and done % cfg.record_every:
      continue
    losses.append(float(loss))
    recorded_steps.append(done)
    mu = _momentum_state(opt_state).mu
    flat_mu = {common.short_name(p): x for p, x in
               jax.tree_util.tree_flatten_with_path(mu)[0]}
    flat_g = {common.short_name(p): x for p, x in
              jax.tree_util.tree_flatten_with_path(grads)[0]}
    for name, d in names.items():
      m_hat = beta * flat_mu[name] + (1 - beta) * flat_g[name]
      s, g, r = jax.device_get(_measure(_to_matrices(m_hat, d)))
      spectra[name].append(s)
      gaps[name].append(g)
      rel[name].append(r)
  print(f"{task}: recorded {len(recorded_steps)} steps x {len(names)} matrices"
        f" in {time.perf_counter() - t0:.0f}s; loss {losses[0]:.3f} ->"
        f" {losses[-1]:.3f}", flush=True)
  shapes = {n: tuple(_to_matrices(jnp.zeros(x.shape), names[n]).shape[1:])
            for n, x in ((common.short_name(p), x) for p, x in
                         jax.tree_util.tree_flatten_with_path(params)[0])
            if n in names}
  return {"steps": np.array(recorded_steps), "losses": np.array(losses),
          "shapes": shapes,
          "spectra": {n: np.stack(v) for n, v in spectra.items()},  # (R,B,k)
          "min_gap": {n: np.stack(v) for n, v in gaps.items()},  # (R,B)
          "rel_gap": {n: np.stack(v) for n, v in rel.items()}}


def gaussian_baseline(shape: tuple[int, int], samples: int, seed: int) -> np.ndarray:
  """Relative min gaps of i.i.d. Gaussian matrices of `shape`."""
  x = jax.random.normal(jax.random.key(seed), (samples, *shape))
  return np.asarray(mimuon_optax.spectral_gap(x).rel_gap)


def _by_kind(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  out: dict[str, list] = {}
  for name, v in values.items():
    out.setdefault(kind_of(name), []).append(np.ravel(v))
  return {k: np.concatenate(v) for k, v in out.items()}


def orth_fraction(values: np.ndarray, taus: np.ndarray) -> np.ndarray:
  """Fraction of gaps >= tau for each tau (the gate, NaN never passes)."""
  values = np.asarray(values)[:, None]
  return np.mean(np.where(np.isnan(values), False, values >= taus[None, :]),
                 axis=0)


def analyse(task: str, rec: dict[str, Any], cfg: SpectraConfig) -> dict[str, Any]:
  rel_k, abs_k = _by_kind(rec["rel_gap"]), _by_kind(rec["min_gap"])
  all_rel = np.concatenate(list(rel_k.values()))
  all_abs = np.concatenate(list(abs_k.values()))
  q = [0.05, 0.25, 0.5, 0.75, 0.95]
  kinds = {}
  for kind in rel_k:
    shape = next(rec["shapes"][n] for n in rec["shapes"] if kind_of(n) == kind)
    baseline = gaussian_baseline(shape, cfg.baseline_samples, cfg.seed)
    finite = rel_k[kind][np.isfinite(rel_k[kind])]
    kinds[kind] = {
        "shape": list(shape),
        "count": int(rel_k[kind].size),
        "inf_fraction": float(np.mean(np.isinf(rel_k[kind]))),
        "rel_gap_quantiles": dict(zip(map(str, q), np.quantile(finite, q).tolist()))
        if finite.size else {},
        "abs_gap_quantiles": dict(zip(map(str, q), np.quantile(
            abs_k[kind][np.isfinite(abs_k[kind])], q).tolist()))
        if finite.size else {},
        "gaussian_rel_gap_median": float(np.median(baseline)),
        "orth_frac_rel": orth_fraction(rel_k[kind], TAU_GRID_REL).tolist(),
        "orth_frac_abs": orth_fraction(abs_k[kind], TAU_GRID_ABS).tolist(),
    }
  s_max = np.concatenate([np.ravel(s[..., -1]) for s in rec["spectra"].values()])
  return {
      "task": task,
      "steps": rec["steps"].tolist(),
      "losses": rec["losses"].tolist(),
      "kinds": kinds,
      "s_max_quantiles": dict(zip(map(str, q), np.quantile(s_max, q).tolist())),
      "orth_frac_rel_all": orth_fraction(all_rel, TAU_GRID_REL).tolist(),
      "orth_frac_abs_all": orth_fraction(all_abs, TAU_GRID_ABS).tolist(),
  }


def _frac_at(grid: np.ndarray, fracs: Sequence[float], tau: float) -> float:
  return float(np.interp(np.log10(tau), np.log10(grid), fracs))


def tau_for_fraction(grid: np.ndarray, fracs: Sequence[float], target: float) -> float:
  """Largest tau on the grid whose orth. fraction is >= target."""
  ok = [t for t, f in zip(grid, fracs) if f >= target]
  return float(max(ok)) if ok else float(grid[0])


def plots(recs: dict[str, dict], analyses: dict[str, dict], out: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  tasks = list(recs)
  # 1. Normalized spectra of one layer per kind at three recorded steps.
  fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
  for ax, task in zip(axes[0], tasks):
    rec = recs[task]
    steps = rec["steps"]
    picks = [0, len(steps) // 2, len(steps) - 1]
    seen = set()
    for i, (name, s) in enumerate(rec["spectra"].items()):
      kind = kind_of(name)
      if kind in seen:
        continue
      seen.add(kind)
      color = f"C{len(seen) - 1}"
      for j, p in enumerate(picks):
        sv = s[p, 0][::-1]
        ax.semilogy(np.arange(1, len(sv) + 1) / len(sv), sv / sv[0], color=color,
                    alpha=0.35 + 0.3 * j, lw=1,
                    label=f"{name}" if j == len(picks) - 1 else None)
    ax.set_xlabel("rank / min(m, n)")
    ax.set_ylabel("s / s_max")
    ax.set_ylim(1e-4, 1.5)
    ax.set_title(f"{task}: momentum spectra at steps "
                 f"{', '.join(str(steps[p]) for p in picks)} (light->dark)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out / "spectra.png", dpi=110)
  plt.close(fig)
  # 2. Histograms of the relative min gap per kind.
  fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
  for ax, task in zip(axes[0], tasks):
    rel_k = _by_kind(recs[task]["rel_gap"])
    bins = np.linspace(-7, 0, 57)
    for i, (kind, v) in enumerate(rel_k.items()):
      v = v[np.isfinite(v) & (v > 0)]
      ax.hist(np.log10(v), bins=bins, histtype="step", color=f"C{i}", label=kind)
      ax.axvline(np.log10(analyses[task]["kinds"][kind]["gaussian_rel_gap_median"]),
                 color=f"C{i}", ls=":", lw=1)
    ax.axvline(-3, color="k", ls="--", lw=1, label="tau = 1e-3 (default)")
    ax.set_xlabel("log10(min gap / s_max)  (dotted: Gaussian median)")
    ax.set_ylabel("(step, matrix) count")
    ax.set_title(f"{task}: relative min gap of the momentum", fontsize=9)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out / "gaps_hist.png", dpi=110)
  plt.close(fig)
  # 3. Orthogonalized fraction vs tau.
  fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 4 * len(tasks)), squeeze=False)
  for row, task in zip(axes, tasks):
    an = analyses[task]
    for ax, mode, grid in ((row[0], "rel", TAU_GRID_REL), (row[1], "abs", TAU_GRID_ABS)):
      for i, (kind, k) in enumerate(an["kinds"].items()):
        ax.semilogx(grid, k[f"orth_frac_{mode}"], color=f"C{i}", lw=1, label=kind)
      ax.semilogx(grid, an[f"orth_frac_{mode}_all"], color="k", lw=2, label="all")
      if mode == "rel":
        ax.axvline(1e-3, color="k", ls="--", lw=1)
      ax.set_xlabel(f"tau ({'relative: gap / s_max' if mode == 'rel' else 'absolute gap'})")
      ax.set_ylabel("fraction orthogonalized")
      ax.set_title(f"{task}, tau_mode={'relative' if mode == 'rel' else 'absolute'}",
                   fontsize=9)
      ax.grid(alpha=0.3, which="both")
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out / "orth_frac_vs_tau.png", dpi=110)
  plt.close(fig)


def findings(analyses: dict[str, dict]) -> str:
  lines = ["# spectra: findings (generated)", ""]
  for task, an in analyses.items():
    lines += [f"## {task} (steps {an['steps'][0]}..{an['steps'][-1]}, loss"
              f" {an['losses'][0]:.3f} -> {an['losses'][-1]:.3f})", ""]
    rows = []
    for kind, k in an["kinds"].items():
      qr, qa = k["rel_gap_quantiles"], k["abs_gap_quantiles"]
      rows.append([kind, "x".join(map(str, k["shape"])), k["count"],
                   f"{k['inf_fraction']:.2f}",
                   f"{qr.get('0.05', float('nan')):.2e}",
                   f"{qr.get('0.5', float('nan')):.2e}",
                   f"{qr.get('0.95', float('nan')):.2e}",
                   f"{k['gaussian_rel_gap_median']:.2e}",
                   f"{qa.get('0.5', float('nan')):.2e}",
                   f"{_frac_at(TAU_GRID_REL, k['orth_frac_rel'], 1e-3):.3f}",
                   f"{_frac_at(TAU_GRID_REL, k['orth_frac_rel'], 1e-4):.3f}"])
    lines.append(common.markdown_table(
        ["kind", "matrix", "n", "gap=inf", "rel gap p5", "rel gap p50",
         "rel gap p95", "Gaussian p50", "abs gap p50", "orth@1e-3 rel",
         "orth@1e-4 rel"], rows))
    all_rel = an["orth_frac_rel_all"]
    lines += ["", f"All matrices, relative mode: orthogonalized fraction"
              f" {_frac_at(TAU_GRID_REL, all_rel, 1e-3):.3f} at tau=1e-3,"
              f" {_frac_at(TAU_GRID_REL, all_rel, 1e-4):.3f} at 1e-4,"
              f" {_frac_at(TAU_GRID_REL, all_rel, 1e-5):.3f} at 1e-5; 50% at"
              f" tau={tau_for_fraction(TAU_GRID_REL, all_rel, 0.5):.2e}, 90% at"
              f" tau={tau_for_fraction(TAU_GRID_REL, all_rel, 0.9):.2e}.",
              f"s_max spans {an['s_max_quantiles']['0.05']:.2e} (p5) to"
              f" {an['s_max_quantiles']['0.95']:.2e} (p95), so an absolute tau"
              " means a different relative threshold per matrix and step.", ""]
  return "\n".join(lines)


def ablate(cfg: SpectraConfig, out: pathlib.Path) -> str:
  """Short trainings: AdamW, Muon, and MiMuon at each (tau, sgd_scale)."""
  variants = [("adamw", {}), ("muon", {})]
  for tau in cfg.ablate_taus:
    for scale in ("none", "rms_match"):
      variants.append(("mimuon", dict(tau=tau, tau_mode="relative",
                                      sgd_scale=scale)))
  results, sections = [], []
  data = (data_images.load_images("fashion") if "vision" in cfg.tasks else None)
  for task in cfg.tasks:
    rows = []
    for opt, kw in variants:
      label = opt + "".join(f" {k}={v}" for k, v in kw.items())
      run_out = out / "ablation" / task / label.replace(" ", "_")
      shared = dict(out=str(run_out), optimizer=opt, seed=cfg.seed,
                    checkpoint=False, plot=False, progress=cfg.progress, **kw)
      if task == "lm":
        steps = cfg.ablate_lm_steps
        s = train_lm.run(train_lm.TrainLMConfig(steps=steps,
                                                eval_every=steps, **shared))
        held = s["final"]["val_loss"]
      else:
        steps = cfg.ablate_vision_steps
        s = train_vision.run(train_vision.TrainVisionConfig(
            steps=steps, eval_every=steps, **shared), data)
        held = s["final"]["test_loss"]
      recs = common.read_jsonl(run_out / "metrics.jsonl")
      orth = [r["orth_frac_mean"] for r in recs if "orth_frac_mean" in r]
      r = {"task": task, "label": label, "held_out_loss": held,
           "train_eval_loss": s["final"]["train_eval_loss"],
           "test_acc": s["final"].get("test_acc"),
           "orth_frac": float(np.mean(orth)) if orth else None,
           "wall_s": s["wall_s"]}
      results.append(r)
      print(f"ablation {task} {label}: held-out {held:.4f} orth"
            f" {r['orth_frac']}", flush=True)
      rows.append([label, r["train_eval_loss"], held,
                   "-" if r["test_acc"] is None else r["test_acc"],
                   "-" if r["orth_frac"] is None else f"{r['orth_frac']:.3f}",
                   f"{r['wall_s']:.0f}"])
    sections += [f"## {task}: {steps} steps, seed {cfg.seed}, default lrs", "",
                 common.markdown_table(["run", "train loss", "held-out loss",
                                        "test acc", "orth. frac", "wall s"],
                                       rows), ""]
  text = "\n".join(["# spectra --ablate: MiMuon gate settings", ""] + sections)
  (out / "ablation.md").write_text(text)
  common.write_json(out / "ablation.json", results)
  return text


def gaussian_scaling(cfg: SpectraConfig, out: pathlib.Path, command: str) -> str:
  """Median relative min gap of k x 3k Gaussian matrices, per k."""
  rows = []
  for k in cfg.gaussian_ks:
    samples = max(4, cfg.baseline_samples * 128 // max(k, 128))
    rel = gaussian_baseline((k, 3 * k), samples, cfg.seed)
    rows.append([k, samples, f"{np.median(rel):.2e}", f"{np.quantile(rel, 0.1):.2e}",
                 f"{np.quantile(rel, 0.9):.2e}", f"{np.median(rel) * k ** 1.5:.3f}"])
  text = "\n".join([
      "# Relative min gap of Gaussian k x 3k matrices (the gate's test)", "",
      common.markdown_table(["k", "samples", "median", "p10", "p90",
                             "median * k^1.5"], rows), "",
      f"Command: `{command}`", ""])
  (out / "gaussian_scaling.md").write_text(text)
  return text


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  cfg = common.parse_config(SpectraConfig, __doc__.split("\n\n")[0], argv)
  args = sys.argv[1:] if argv is None else list(argv)
  command = "python -m experiments.spectra " + shlex.join(args)
  out = pathlib.Path(cfg.out)
  out.mkdir(parents=True, exist_ok=True)
  if cfg.gaussian_only:
    print(gaussian_scaling(cfg, out, command))
    return {}
  t0 = time.perf_counter()
  recs = {task: record(task, cfg) for task in cfg.tasks}
  analyses = {task: analyse(task, recs[task], cfg) for task in cfg.tasks}
  raw = {}
  for task, rec in recs.items():
    raw[f"{task}/steps"] = rec["steps"]
    for key in ("spectra", "min_gap", "rel_gap"):
      for name, v in rec[key].items():
        raw[f"{task}/{key}/{name}"] = v.astype(np.float32)
  np.savez_compressed(out / "spectra.npz", **raw)
  common.write_json(out / "spectra.json", {
      "config": common.config_dict(cfg), "command": command,
      "env": common.env_info(), "tau_grid_rel": TAU_GRID_REL.tolist(),
      "tau_grid_abs": TAU_GRID_ABS.tolist(), "analyses": analyses})
  plots(recs, analyses, out)
  text = findings(analyses)
  (out / "findings.md").write_text(text)
  print(text)
  if cfg.ablate:
    print(ablate(cfg, out))
  common.write_command_md(
      out, "spectra: momentum spectra and the MiMuon gate", command,
      [cfg.seed], time.perf_counter() - t0,
      ["trajectory: Muon (= MiMuon with tau=0), default lrs",
       "gate input: Nesterov momentum beta*M_t + (1-beta)*G_t, beta=0.95"])
  return analyses


if __name__ == "__main__":
  main()
