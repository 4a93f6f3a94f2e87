"""Which gap statistic is size-free? kappa / s_max vs rho vs an alternative.

  python -m experiments.gate_scaling                      # -> runs/gate_scaling/
  python -m experiments.gate_scaling --out experiments/results/gate_scaling

For random matrices of four families at widths k = 16 .. 1024 (Gaussian
k x 3k and k x k, rank k/8 plus 5% noise, and a planted power-law spectrum
s_i = 1/i with random singular vectors), computes in float64 numpy SVD:

- ``rel``  = kappa / s_max (the old default statistic);
- ``rho``  = kappa sqrt(r) / median gap (the library's ``tau_mode="spacing"``);
- ``rho_mean`` = kappa sqrt(r) / mean gap (an alternative: the mean gap is
  (s_max - s_min) / (r - 1), which outliers at the top of the spectrum
  inflate);
- ``k_med`` = kappa / median gap (rho without the sqrt(r) factor).

kappa is the min gap between consecutive singular values above numpy's
float32 rank floor. For each statistic: its median per (family, k), the
max/min ratio of those medians over k, and the fraction >= the library
default tau (``rho``). The instrument is checked first: the library's own
``spectral_gap`` on the same float32 matrices is compared with the numpy
float64 reference (max |rho_lib - rho_ref| / rho_ref is reported).
Writes results.json, results.md, scaling.png and COMMAND.md.
"""

from __future__ import annotations

import dataclasses
import pathlib
import platform
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import mimuon_optax
from experiments.harness import cli
from experiments.harness import reporting
from experiments.harness.cli import field
from mimuon_optax._mix import DEFAULT_TAU

FAMILIES = ("gauss", "square", "lowrank", "powerlaw")
STATS = ("rel", "rho", "rho_mean", "k_med")
KS = (16, 32, 64, 128, 256, 512, 1024)
EPS32 = float(np.finfo(np.float32).eps)


def sample(family: str, k: int, rng: np.random.Generator) -> np.ndarray:
  """One float32 matrix of ``family`` with small side k."""
  m, n = (k, k) if family == "square" else (k, 3 * k)
  if family in ("gauss", "square"):
    x = rng.standard_normal((m, n))
  elif family == "lowrank":
    q = max(1, k // 8)
    a = rng.standard_normal((m, q)) @ rng.standard_normal((q, n))
    noise = rng.standard_normal((m, n))
    x = a / np.linalg.norm(a) + 0.05 * noise / np.linalg.norm(noise)
  else:
    u, _ = np.linalg.qr(rng.standard_normal((m, m)))
    v, _ = np.linalg.qr(rng.standard_normal((n, m)))
    x = (u / np.arange(1, m + 1)) @ v.T
  return x.astype(np.float32)


def reference(x32: np.ndarray) -> dict[str, float]:
  """The four statistics of a float32 matrix, from float64 numpy SVD."""
  s = np.sort(np.linalg.svd(x32.astype(np.float64), compute_uv=False))
  nonzero = s[s > max(x32.shape) * EPS32 * s[-1]]
  gaps = np.diff(nonzero)
  kappa, r = gaps.min(), nonzero.size
  return {"rel": kappa / s[-1], "rho": kappa * np.sqrt(r) / np.median(gaps),
          "rho_mean": kappa * np.sqrt(r) / gaps.mean(),
          "k_med": kappa / np.median(gaps)}


def samples_for(k: int, scale: float) -> int:
  return max(4, int(scale * (40 if k <= 256 else 16 if k <= 512 else 12)))


def run(samples_scale: float, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  lib_rho = jax.jit(lambda x: mimuon_optax.spectral_gap(x[None]).rho[0])
  out: dict = {"families": {}, "instrument_max_rel_err_rho": 0.0,
               "instrument_decisions_differ": 0, "instrument_samples": 0}
  for family in FAMILIES:
    per_k = {}
    for k in KS:
      values = {s: [] for s in STATS}
      for _ in range(samples_for(k, samples_scale)):
        x = sample(family, k, rng)
        ref = reference(x)
        for s in STATS:
          values[s].append(ref[s])
        rho = float(lib_rho(jnp.asarray(x)))
        out["instrument_max_rel_err_rho"] = max(
            out["instrument_max_rel_err_rho"], abs(rho - ref["rho"]) / ref["rho"])
        out["instrument_samples"] += 1
        out["instrument_decisions_differ"] += int(
            (rho >= DEFAULT_TAU) != (ref["rho"] >= DEFAULT_TAU))
      per_k[k] = {
          "samples": len(values["rho"]),
          "median": {s: float(np.median(v)) for s, v in values.items()},
          "frac_rho_ge_default": float(np.mean(
              np.asarray(values["rho"]) >= DEFAULT_TAU)),
          "rho_quantiles": {q: float(np.quantile(values["rho"], float(q)))
                            for q in ("0.1", "0.25", "0.5")},
      }
    out["families"][family] = per_k
    print(f"{family}: done", flush=True)
  # Spread of the medians over k, and the exponent of rel for Gaussians.
  out["median_ratio"] = {
      family: {s: {
          "16-1024": _ratio([per_k[k]["median"][s] for k in KS]),
          "64-1024": _ratio([per_k[k]["median"][s] for k in KS if k >= 64])}
          for s in STATS} for family, per_k in out["families"].items()}
  g = out["families"]["gauss"]
  out["rel_exponent_gauss"] = float(np.polyfit(
      np.log(KS), np.log([g[k]["median"]["rel"] for k in KS]), 1)[0])
  return out


def _ratio(values) -> float:
  return float(max(values) / min(values))


def markdown(res: dict, command: str, wall_s: float) -> str:
  lines = [
      "# Gap statistics vs matrix width", "",
      f"`{command}` ({wall_s:.0f} s, {platform.processor() or 'CPU'},"
      f" jax {jax.__version__}). Float64 numpy SVD of float32 matrices.", "",
      "Instrument check: the library's `spectral_gap` (float64 Gram,"
      " values-only eigensolver) vs numpy float64 SVD on the same matrices:"
      f" max relative error of rho {res['instrument_max_rel_err_rho']:.1e};"
      f" decisions at the default tau that differ:"
      f" {res['instrument_decisions_differ']} of {res['instrument_samples']}.",
      "", "## Median of each statistic per width k", ""]
  for s in STATS:
    lines += [f"**{s}**", "", "| family | " + " | ".join(
        f"k={k}" for k in KS) + " | max/min (16-1024) | max/min (64-1024) |",
              "|---|" + "---|" * (len(KS) + 2)]
    for family, per_k in res["families"].items():
      ratio = res["median_ratio"][family][s]
      lines.append(f"| {family} | " + " | ".join(
          f"{per_k[k]['median'][s]:.3g}" for k in KS) +
                   f" | {ratio['16-1024']:.3g} | {ratio['64-1024']:.3g} |")
    lines.append("")
  lines += [f"Median rel_gap of Gaussian k x 3k falls like k^"
            f"{res['rel_exponent_gauss']:.2f}.", "",
            f"## Fraction orthogonalized at the default (rho >= {DEFAULT_TAU})",
            "", "| family | " + " | ".join(f"k={k}" for k in KS) + " |",
            "|---|" + "---|" * len(KS)]
  for family, per_k in res["families"].items():
    lines.append(f"| {family} | " + " | ".join(
        f"{per_k[k]['frac_rho_ge_default']:.2f}" for k in KS) + " |")
  lines += ["", "Samples per (family, k): " + ", ".join(
      f"k={k}: {res['families']['gauss'][k]['samples']}" for k in KS), ""]
  return "\n".join(lines)


def plot(res: dict, path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  styles = {"gauss": ("C0", "o", "-"), "square": ("C1", "s", "--"),
            "lowrank": ("C2", "^", "-."), "powerlaw": ("C3", "D", ":")}
  for ax, stat in zip(axes, ("rel", "rho")):
    for family, per_k in res["families"].items():
      color, marker, ls = styles[family]
      ax.loglog(KS, [per_k[k]["median"][stat] for k in KS], color=color,
                marker=marker, ls=ls, label=family)
    ax.set_xlabel("matrix width k (small side)")
    ax.set_ylabel(f"median {stat}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
  axes[0].set_title("kappa / s_max: a matrix-size ruler", fontsize=10)
  axes[1].set_title("rho = kappa sqrt(r) / median gap (tau_mode='spacing')",
                    fontsize=10)
  axes[1].axhline(DEFAULT_TAU, color="k", lw=1, ls="--",
                  label=f"default tau {DEFAULT_TAU}")
  axes[1].legend(fontsize=8)
  fig.suptitle("Min singular-value gap statistics of random matrices vs width"
               " (float64 SVD)", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


@dataclasses.dataclass(frozen=True)
class GateScalingConfig:
  """Configuration of `gate_scaling` (every field is a `--flag`)."""

  out: str = field("runs/gate_scaling", "output folder")
  samples_scale: float = field(1.0, "multiply the samples per (family, k)",
                               positive=True)
  seed: int = field(0, "seed of the random matrices")


def run_and_write(cfg: GateScalingConfig, command: str) -> dict:
  """`run`, then results.json, results.md, scaling.png and COMMAND.md."""
  out = pathlib.Path(cfg.out)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  res = run(cfg.samples_scale, cfg.seed)
  wall = time.perf_counter() - t0
  reporting.write_json(out / "results.json", res)
  md = markdown(res, command, wall)
  (out / "results.md").write_text(md)
  reporting.write_command_md(out, "gate_scaling: which gap statistic is"
                             " size-free", command, [cfg.seed], wall)
  plot(res, out / "scaling.png")
  print(md)
  print(f"plot: {(out / 'scaling.png').resolve()}")
  return res


def main(argv: Sequence[str] | None = None) -> dict:
  return cli.study_main(GateScalingConfig, __doc__, run_and_write, argv)


if __name__ == "__main__":
  main()
