"""Muon vs MiMuon across the gate threshold: lr chosen on validation, seeds reported on test.

  python -m experiments.tau_sweep --task lm --out experiments/results/tau_sweep_lm
  python -m experiments.tau_sweep --task vision --out experiments/results/tau_sweep_vision

The protocol, per task:
1. Calibrate tau (unless `--taus`): train `mimuon(tau=0)` (= Muon, which
   records the gate statistic rho of every matrix at every step) at the
   middle of Muon's lr grid for `--calib-steps` steps, seed 0, and take the
   quantiles of the pooled rho at 0.1 / 0.5 / 0.8: taus whose orthogonalized
   fraction on Muon's own trajectory is about 0.9 / 0.5 / 0.2.
2. Arms: AdamW; Muon (tau = 0); MiMuon at each tau with each `--sgd-scales`
   (`none` is the paper's one eta, `rms_match` rescales the SGD step to the
   orthogonalized step's RMS); momentum SGD (tau = inf) with each scale.
3. lr: AdamW, Muon and sgd-none train seed 0 at every lr of their grid;
   the lr with the lowest *validation* loss is kept. The test split is
   evaluated too but never read by the selection. MiMuon and sgd-rms_match
   (whose step has Muon's RMS) use the lr kept for Muon: the paper's one
   eta, which if anything favours Muon (`--sweep-gated` sweeps them too).
4. The other seeds train at the kept lr. Reported per arm: mean +- std over
   seeds of train loss, test loss, test - train gap (and test accuracy for
   vision), the orthogonalized fraction (mean over matrices and steps), and
   the paired test-loss difference to Muon (same seed = same init and batch
   order), marked as exceeding the seed spread when |mean| > 2 std / sqrt(n).

Splits. lm: the tiny Qwen3 on Shakespeare with the real Qwen3 tokenizer,
split by work (`VAL_PLAYS`, `TEST_PLAYS`, the rest trains); the model's
vocabulary is the 21,074 Qwen3 ids that occur in the corpus, renumbered
densely (`data_text.compact_vocab`), so that the output layer fits a CPU.
vision: the CNN on Fashion-MNIST, 54k train / 6k validation (a fixed
permutation of the official 60k, seed 1234) / the official 10k test.

Writes to `--out`: runs.json (every run), results.csv and results.md (per
arm), tau_sweep.png (test loss and gap vs orthogonalized fraction, seed
bars), curves.png (validation loss vs step per arm, seed band) and COMMAND.md
(`experiments/harness/tau_sweep_report.py`).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import mimuon_optax
from experiments import train_lm
from experiments import train_vision
from experiments.harness import cli
from experiments.harness import data_images
from experiments.harness import data_text
from experiments.harness import loop
from experiments.harness import optimizers
from experiments.harness import reporting
from experiments.harness import tau_sweep_report
from experiments.harness.cli import field
from mimuon_optax import training
from mimuon_optax.models.qwen3 import Qwen3ForCausalLM
from mimuon_optax.models.qwen3 import next_token_loss
from mimuon_optax.models.qwen3 import qwen3_weight_dimension_numbers

TASKS = ("lm", "vision")
VAL_PLAYS = ("macbeth", "tempest")
TEST_PLAYS = ("hamlet", "twelfth_night")
VISION_VAL = 6000
VISION_SPLIT_SEED = 1234
CALIB_QUANTILES = (0.1, 0.5, 0.8)  # -> orthogonalized fraction ~0.9/0.5/0.2
# Peak lr grids per arm family (`--grid-scale` multiplies them).
GRIDS = {
    "lm": {"adamw": (3e-3, 1e-2, 3e-2), "muon": (3e-3, 1e-2, 3e-2),
           "sgd_none": (0.3, 1.0, 3.0)},
    "vision": {"adamw": (3e-3, 1e-2, 3e-2), "muon": (0.01, 0.03, 0.1),
               "sgd_none": (0.03, 0.1, 0.3)},
}
ADAM_LR = {"lm": 3e-3, "vision": 3e-3}  # AdamW lr of Muon/MiMuon's other leaves


@dataclasses.dataclass(frozen=True)
class TauSweepConfig:
  """Configuration of `tau_sweep` (every field is a `--flag`)."""

  task: str = field("lm", "task", choices=TASKS)
  out: str = field("runs/tau_sweep", "output directory")
  steps: int = field(600, "training steps per run", minimum=1)
  warmup_steps: int = field(30, "linear warmup steps", minimum=0)
  eval_every: int = field(100, "validation loss every k steps (curves)",
                          minimum=1)
  seeds: tuple[int, ...] = field((0, 1, 2), "seeds; the first picks the lr")
  taus: tuple[float, ...] | None = field(
      None, "MiMuon spacing taus; none: calibrated (see the docstring)",
      minimum=0)
  calib_steps: int = field(150, "steps of the tau calibration run", minimum=1)
  sgd_scales: tuple[str, ...] = field(("none", "rms_match"),
                                      "SGD-branch scales of MiMuon and SGD",
                                      choices=mimuon_optax._mix.SGD_SCALES)
  scales_at: str = field(
      "middle", "MiMuon taus run with every --sgd-scales (middle: only the"
      " middle tau; the others use the first scale)",
      choices=("middle", "all"))
  arms: tuple[str, ...] | None = field(
      None, "only these arm names (e.g. adamw muon sgd-none); none: all")
  sweep_gated: bool = field(
      False, "also sweep the lr of MiMuon and of sgd-rms_match; default:"
      " they use the lr chosen for Muon (the paper's one eta)")
  grid_scale: float = field(1.0, "multiplies every lr grid (tests)",
                            positive=True)
  grid_points: int = field(3, "lrs per grid (the middle ones)", minimum=1)
  adam_lr: float | None = field(
      None, "AdamW lr of Muon/MiMuon's non-matrix leaves (embeddings, norms,"
      " head); none: 3e-3 (round one's)", positive=True)
  # lm
  model_preset: str = field("tiny", "lm: model size", choices=train_lm.PRESETS)
  tokenizer: str = field("qwen3", "lm: tokenizer",
                         choices=data_text.TOKENIZERS)
  seq_len: int = field(64, "lm: tokens per window", minimum=1)
  batch_size: int = field(16, "lm: windows per step; vision: examples / 8",
                          minimum=1)
  eval_batches: int = field(8, "lm: windows batches per evaluation",
                            minimum=1)
  # vision
  data_dir: str | None = field(None, "vision: Fashion-MNIST folder")
  dataset: str = field("fashion", "vision: dataset",
                       choices=data_images.DATASETS)
  width: int = field(16, "vision: CNN channels")
  hidden: int = field(128, "vision: hidden units")
  model: str = field("cnn", "vision: model", choices=train_vision.MODELS)


@dataclasses.dataclass(frozen=True)
class Arm:
  """One optimizer setting of the sweep."""

  name: str
  optimizer: str  # adamw | muon | mimuon
  grid: str  # key of GRIDS[task]
  tau: float = 0.0
  sgd_scale: str = "none"

  @property
  def gated(self) -> bool:
    return self.optimizer == "mimuon"


def make_arms(cfg: TauSweepConfig, taus: Sequence[float]) -> list[Arm]:
  arms = [Arm("adamw", "adamw", "adamw"), Arm("muon", "muon", "muon")]
  for i, tau in enumerate(taus):
    both = cfg.scales_at == "all" or i == len(taus) // 2
    for scale in cfg.sgd_scales if both else cfg.sgd_scales[:1]:
      arms.append(Arm(f"mimuon-{tau:.3g}-{scale}", "mimuon", "muon", tau,
                      scale))
  for scale in cfg.sgd_scales:
    arms.append(Arm(f"sgd-{scale}", "mimuon",
                    "sgd_none" if scale == "none" else "muon", math.inf,
                    scale))
  if cfg.arms is not None:
    known = {a.name for a in arms}
    unknown = sorted(set(cfg.arms) - known)
    if unknown:
      raise ValueError(f"--arms: unknown {unknown}; known: {sorted(known)}")
    arms = [a for a in arms if a.name in cfg.arms]
  return arms


def grid(cfg: TauSweepConfig, arm: Arm) -> tuple[float, ...]:
  values = GRIDS[cfg.task][arm.grid]
  k = min(cfg.grid_points, len(values))
  start = (len(values) - k) // 2
  return tuple(v * cfg.grid_scale for v in values[start:start + k])


# ----------------------------------------------------------------------------
# Tasks: init(seed) -> params, batch(seed, step), evaluate(params) -> dict
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Task:
  init: Callable[[int], Any]
  dims: Any
  loss_fn: Callable[[Any, Any], jax.Array]
  batch: Callable[[int, int], Any]
  evaluate: Callable[[Any], dict[str, float]]
  info: dict[str, Any]


def lm_task(cfg: Any, train_size: int | None = None,
            plays: tuple[Sequence[str], ...] | None = None) -> Task:
  """The LM task; `train_size` trains on the first N tokens of the training
  plays, `plays` = (train, val, test) replaces the by-play split (the
  vocabulary, over the whole corpus, and the model do not change)."""
  tokenizer = data_text.get_tokenizer(cfg.tokenizer)
  train_p, val_p, test_p = plays or data_text.split_plays3(VAL_PLAYS,
                                                           TEST_PLAYS)
  splits = [data_text.load_tokens(p, tokenizer) for p in (train_p, val_p,
                                                          test_p)]
  if cfg.tokenizer == "byte":
    vocab = tokenizer.vocab_size
  else:  # over every work, so that any split gives the same model
    corpus = data_text.load_tokens(data_text.list_plays(), tokenizer)
    splits, vocab = data_text.compact_vocab([*splits, corpus])
  train, val, test = splits[:3]
  if train_size is not None:
    if train_size > len(train):
      raise ValueError(f"train_size {train_size} > the {len(train)} training"
                       " tokens")
    train = train[:train_size]
  model_cfg = train_lm.model_config(cfg.model_preset, vocab, False)

  def split(seed):
    graphdef, state = nnx.split(
        Qwen3ForCausalLM(model_cfg, rngs=nnx.Rngs(seed)), nnx.Param)
    return graphdef, nnx.as_pure(state)

  graphdef, params0 = split(0)
  init = lambda seed: split(seed)[1]

  def loss_fn(params, tokens_BxTp1):
    return next_token_loss(nnx.merge(graphdef, params), tokens_BxTp1)

  def windows(tokens, seed):
    sampler = data_text.WindowSampler(tokens, cfg.seq_len, cfg.batch_size,
                                      seed)
    return [jnp.asarray(sampler.batch(i)) for i in range(cfg.eval_batches)]

  # Fixed evaluation windows (seeds distinct from every training seed).
  eval_sets = {"val": windows(val, 10_001), "test": windows(test, 10_002),
               "train": windows(train, 10_003)}
  eval_loss = jax.jit(loss_fn)

  def evaluate(params):
    return {f"{k}_loss": loop.mean_over_batches(eval_loss, params, b)
            for k, b in eval_sets.items()}

  def batch(seed, step):
    return data_text.WindowSampler(train, cfg.seq_len, cfg.batch_size,
                                   seed).batch(step)

  info = dict(tokenizer=tokenizer.name, vocab_size=int(vocab),
              train_plays=len(train_p), val_plays=list(val_p),
              test_plays=list(test_p), train_tokens=int(len(train)),
              val_tokens=int(len(val)), test_tokens=int(len(test)),
              model={k: v if isinstance(v, (bool, int, float, str)) else str(v)
                     for k, v in dataclasses.asdict(model_cfg).items()})
  return Task(init, qwen3_weight_dimension_numbers(params0), loss_fn, batch,
              evaluate, info)


def vision_splits(cfg: Any) -> tuple[data_images.ImageData,
                                      tuple[np.ndarray, np.ndarray]]:
  """(train/test data, (x_val, y_val)): `VISION_VAL` examples of the
  official training set held out by a fixed permutation."""
  data = data_images.load_images(cfg.dataset, cfg.data_dir)
  n_val = min(VISION_VAL, len(data.x_train) // 10)
  return data_images.split_validation(data, n_val, VISION_SPLIT_SEED)


def vision_task(cfg: Any, splits=None, train_size: int | None = None,
                subset_seed: int = 0) -> Task:
  """The CNN task; `train_size` trains on the first N of a seeded
  permutation of the training split (`data_images.subset`)."""
  data, (x_val, y_val) = splits or vision_splits(cfg)
  data = data_images.subset(data, train_size, subset_seed)
  graphdef, params0 = train_vision.init_model(cfg, data, 0)
  loss_fn, eval_fn = train_vision.make_loss_fns(graphdef)
  x, y = data.x_train, data.y_train
  n_train_eval = min(len(x), 10_000)

  def evaluate(params):
    out = {}
    for k, (xs, ys) in {"val": (x_val, y_val),
                        "test": (data.x_test, data.y_test),
                        "train": (x[:n_train_eval], y[:n_train_eval])}.items():
      out[f"{k}_loss"], out[f"{k}_acc"] = train_vision.evaluate_split(
          eval_fn, params, xs, ys)
    return out

  def batch(seed, step):
    idx = data_images.batch_indices(len(x), 8 * cfg.batch_size, seed, step)
    return x[idx], y[idx]

  info = dict(dataset=data.name, train=int(len(x)), val=int(len(x_val)),
              test=int(len(data.x_test)), model=cfg.model, width=cfg.width,
              hidden=cfg.hidden)
  return Task(lambda seed: train_vision.init_model(cfg, data, seed)[1],
              train_vision.vision_dimension_numbers(params0), loss_fn, batch,
              evaluate, info)


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------


def optimizer(cfg: TauSweepConfig, task: Task, arm: Arm, lr: float,
              steps: int) -> optax.GradientTransformation:
  opt_cfg = optimizers.OptimizerConfig(
      optimizer=arm.optimizer, lr=lr,
      adam_lr=getattr(cfg, "adam_lr", None) or ADAM_LR[cfg.task],
      warmup_steps=min(cfg.warmup_steps, steps - 1), tau=arm.tau,
      sgd_scale=arm.sgd_scale)
  return optimizers.make_optimizer(opt_cfg, cfg.task, steps, task.dims)[0]


def prepare(cfg: TauSweepConfig, task: Task, arm: Arm, lr: float,
            steps: int) -> tuple[optax.GradientTransformation, Callable]:
  """(optimizer, jitted train step) of one (arm, lr): built once, reused by
  every seed (and every N in gen_gap: the shapes do not change)."""
  tx = optimizer(cfg, task, arm, lr, steps)
  return tx, training.make_train_step(tx, task.loss_fn)


def train_one(cfg: TauSweepConfig, task: Task, arm: Arm, lr: float,
              seed: int, prepared=None, record_rho: bool = False,
              steps: int | None = None) -> dict[str, Any]:
  """Trains one (arm, lr, seed); returns final metrics and curves.
  `prepared` is `prepare(cfg, task, arm, lr, steps)`, built if None."""
  steps = steps or cfg.steps
  tx, step_fn = prepared or prepare(cfg, task, arm, lr, steps)
  params = task.init(seed)
  opt_state = tx.init(params)
  t0 = time.perf_counter()
  curve, rhos, losses = [], [], []
  for step in range(steps):
    params, opt_state, loss = step_fn(params, opt_state, task.batch(seed, step))
    losses.append(loss)
    if record_rho and step >= cfg.warmup_steps:
      diag = mimuon_optax.mix_diagnostics(opt_state)
      rhos.extend(np.concatenate([np.ravel(v) for v in
                                  jax.tree.leaves(jax.device_get(diag.rho))]))
    done = step + 1
    if done % cfg.eval_every == 0 or done == steps:
      batch_loss = float(np.mean(jax.device_get(losses)))
      losses = []  # train_loss (from evaluate) is on fixed training examples
      curve.append({"step": done, "batch_loss": batch_loss,
                    **task.evaluate(params)})
  result = {"arm": arm.name, "lr": lr, "seed": seed, "steps": steps,
            **{k: v for k, v in curve[-1].items() if k != "step"},
            "curve": curve, "wall_s": time.perf_counter() - t0}
  result["gap"] = result["test_loss"] - result["train_loss"]
  result["diverged"] = not all(math.isfinite(result[k]) for k in
                               ("val_loss", "test_loss"))
  if arm.gated:
    counts = jax.tree.leaves(jax.device_get(
        mimuon_optax.mix_diagnostics(opt_state).orth_count))
    result["orth_frac"] = float(np.mean(np.concatenate(
        [np.ravel(c) for c in counts])) / steps)
  elif arm.optimizer == "muon":
    result["orth_frac"] = 1.0
  if record_rho:
    result["rho"] = np.asarray(rhos)
  return result


def calibrate(cfg: TauSweepConfig, task: Task) -> dict[str, Any]:
  """Quantiles of the gate statistic rho along Muon's own trajectory."""
  arm = Arm("calibration", "mimuon", "muon", 0.0, "none")
  lrs = grid(cfg, Arm("muon", "muon", "muon"))
  lr = lrs[len(lrs) // 2]
  steps = min(cfg.calib_steps, cfg.steps)
  r = train_one(cfg, task, arm, lr, cfg.seeds[0], record_rho=True,
                steps=steps)
  rho = r["rho"]
  rho = rho[np.isfinite(rho)]
  taus = tuple(float(f"{np.quantile(rho, q):.3g}") for q in CALIB_QUANTILES)
  return {"lr": lr, "steps": steps, "samples": int(rho.size),
          "quantiles": list(CALIB_QUANTILES), "taus": list(taus),
          "rho_median": float(np.median(rho)), "wall_s": r["wall_s"]}


def run(cfg: TauSweepConfig, command: str = "") -> dict[str, Any]:
  out = pathlib.Path(cfg.out)
  out.mkdir(parents=True, exist_ok=True)
  t_start = time.perf_counter()
  task = lm_task(cfg) if cfg.task == "lm" else vision_task(cfg)
  calibration = None
  taus = cfg.taus
  if taus is None:
    calibration = calibrate(cfg, task)
    taus = calibration["taus"]
    print(f"calibrated taus {taus} (rho quantiles {CALIB_QUANTILES})",
          flush=True)
  arms = make_arms(cfg, taus)
  runs, chosen = train_arms(cfg, task, arms)
  wall = time.perf_counter() - t_start
  rows = tau_sweep_report.summarize(cfg, arms, runs, chosen)
  report = {"config": dataclasses.asdict(cfg), "task": task.info,
            "calibration": calibration, "taus": list(taus), "chosen_lr": chosen,
            "rows": rows, "runs": runs, "wall_s": wall, "env": reporting.env_info()}
  tau_sweep_report.write_outputs(cfg, out, report, command)
  return report


def train_arms(cfg: Any, task: Task, arms: Sequence[Arm],
               compiled: dict | None = None
               ) -> tuple[list[dict], dict[str, float]]:
  """Steps 3-4 of the protocol: (runs, {arm: lr kept on validation}).

  `compiled` maps (arm name, lr) to `prepare`'s result; pass the same dict
  to several calls whose tasks share the model (e.g. every N of a study) to
  compile each step once.
  """
  compiled = {} if compiled is None else compiled
  runs: list[dict] = []

  def log(r):
    extra = f" orth {r['orth_frac']:.2f}" if "orth_frac" in r else ""
    print(f"{r['arm']:<22} lr {r['lr']:<8g} seed {r['seed']} val"
          f" {r['val_loss']:.4f} test {r['test_loss']:.4f}{extra}"
          f" ({r['wall_s']:.0f}s)", flush=True)

  chosen = {}
  for arm in arms:
    sweep = []
    if arm.gated and arm.grid == "muon" and not cfg.sweep_gated and (
        "muon" in chosen):
      lrs = (chosen["muon"],)  # the paper's one eta: Muon's tuned lr
    else:
      lrs = grid(cfg, arm)
    for lr in lrs:
      key = (arm.name, lr)  # jitted step, reused by the other seeds
      if key not in compiled:
        compiled[key] = prepare(cfg, task, arm, lr, cfg.steps)
      r = train_one(cfg, task, arm, lr, cfg.seeds[0], compiled[key])
      r["role"] = "sweep"
      runs.append(r)
      sweep.append(r)
      log(r)
    best = min(sweep, key=lambda r: r["val_loss"] if not r["diverged"]
               else math.inf)
    chosen[arm.name] = best["lr"]
    best["role"] = "sweep+final"
    for seed in cfg.seeds[1:]:
      r = train_one(cfg, task, arm, best["lr"], seed,
                    compiled[(arm.name, best["lr"])])
      r["role"] = "final"
      runs.append(r)
      log(r)
  return runs, chosen


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  return cli.study_main(TauSweepConfig, __doc__, run, argv)


if __name__ == "__main__":
  main()
