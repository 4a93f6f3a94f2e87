"""YOLO26n on Fashion-MNIST detection: AdamW, MuSGD, Muon and MiMuon, each at its own lr.

  python -m experiments.yolo26_detection --preset cpu --out experiments/results/yolo26_detection
  python -m experiments.yolo26_detection --out runs/yolo26_detection  # the full protocol (accelerator)
  python -m experiments.yolo26_detection --preset smoke --out /tmp/yolo_smoke

The protocol, per training-set size (`--sizes`: the full set and a small N,
a prefix of it; val and test are the same for both):
1. Calibrate tau (unless `--taus`): train `mimuon(tau=0)` (= Muon, which
   records the gate statistic rho of every conv matrix at every step) at the
   middle of Muon's lr grid for `--calib-steps` steps on the full set, seed
   0 (inside the warmup at the defaults: early training), and take the
   quantiles 0.1 and 0.5 of the rho pooled over its second half:
   taus whose orthogonalized fraction on Muon's own trajectory is about 0.9
   and 0.5 (`tau_sweep`'s calibration). The taus serve both sizes.
2. Arms: AdamW (ultralytics' auto small-run choice: lr `round(0.002 * 5 /
   (4 + nc), 6)`, betas (0.9, 0.999)), MuSGD (ultralytics' settings:
   momentum 0.937, muon 0.2 / sgd 1.0, class heads at 3x lr, decay on conv
   kernels only), Muon and MiMuon at the two taus (`mimuon_optax.muon` /
   `mimuon`, conv kernels as (kh*kw*in, out) matrices, AdamW for biases and
   BatchNorm scales at ultralytics' auto AdamW lr, the AdamW arm's grid
   middle, under the same schedule). Every arm: ultralytics' warmup
   and linear lr decay (one compiled step per optimizer: lr and tau are
   step arguments), gradient clipping to norm 10, EMA of the weights
   (`experiments/harness/detection_loop.py`).
3. lr: every arm trains seed 0 at each lr of its grid; the lr with the best
   validation mAP50-95 is kept. When it lies at a grid edge the grid grows
   by one point beyond that edge (x `--grid-factor`), up to
   `--max-extend` times, so the kept lr is bracketed (`choose_lr`).
4. The other seeds train at the kept lr. Reported per arm: test mAP50-95
   (mean +- std over seeds), the test - train gap (mAP on the training
   images, first `--train-eval-images`), the paired differences MiMuon -
   MuSGD and MiMuon - Muon (same seed = same init and batch order; `*` where
   |mean| > 2 std / sqrt(n), `tau_sweep`'s rule), and for MiMuon the
   orthogonalized fraction per layer kind (backbone conv, neck, head box,
   head cls, attention).

Writes to `--out`: results.jsonl (one line per run, appended as runs finish;
a rerun with the same flags reuses them), results.json, results.md,
curves.png (train loss and validation mAP per epoch) and COMMAND.md.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
import optax

import mimuon_optax
from experiments.harness import cli
from experiments.harness import data_detection
from experiments.harness import detection_loop
from experiments.harness import plots
from experiments.harness import reporting
from experiments.harness.cli import field
from experiments.harness.tau_sweep_report import mean_std
from mimuon_optax._paths import path_names
from mimuon_optax.models.yolo26 import loss as yolo_loss
from mimuon_optax.models.yolo26 import optim as yolo_optim

NUM_CLASSES = len(data_detection.CLASS_NAMES)
CALIB_QUANTILES = (0.1, 0.5)  # -> orthogonalized fraction ~0.9 / 0.5
WEIGHT_DECAY = 5e-4  # ultralytics' default, scaled by batch / nbs
MUSGD_MOMENTUM = 0.937
ADAMW_BETAS = (0.9, 0.999)  # ultralytics' auto: momentum 0.9 -> beta1
LAYER_KINDS = ("backbone", "neck", "head_box", "head_cls", "attention")


def auto_adamw_lr(num_classes: int) -> float:
  """ultralytics' `optimizer=auto` lr for short runs."""
  return round(0.002 * 5 / (4 + num_classes), 6)


# Peak lr grids (the middle is the reference setting; `choose_lr` extends).
GRIDS = {
    "adamw": tuple(auto_adamw_lr(NUM_CLASSES) * f for f in (1 / 3, 1, 3)),
    "musgd": (0.0033, 0.01, 0.03),
    "muon": (0.01, 0.03, 0.1),
    "mimuon": (0.01, 0.03, 0.1),
}


@dataclasses.dataclass(frozen=True)
class DetectionStudyConfig:
  """Configuration of `yolo26_detection` (every field is a `--flag`)."""

  out: str = field("runs/yolo26_detection", "output directory")
  preset: str | None = field(None, "defaults for a setup: cpu (the protocol"
                             " reduced for a CPU), smoke (a tiny pipeline"
                             " check)", choices=("cpu", "smoke", None))
  scale: str = field("n", "YOLO26 scale", choices=("n", "s", "m", "l", "x"))
  image_size: int = field(160, "canvas side (a multiple of 32)", minimum=32)
  sizes: tuple[int, ...] = field((4000, 300), "training-set sizes N (the"
                                 " largest is the full set)", minimum=1)
  num_val: int = field(500, "validation images", minimum=1)
  num_test: int = field(1000, "test images", minimum=1)
  data_seed: int = field(0, "seed of the data set")
  epochs: tuple[int, ...] = field((20, 100), "epochs per size (one value"
                                  " for all, or one per --sizes)", minimum=1)
  batch_size: int = field(16, "images per step", minimum=1)
  seeds: tuple[int, ...] = field((0, 1, 2),
                                 "seeds (init, batches); the first picks lrs")
  arms: tuple[str, ...] = field(
      ("adamw", "musgd", "muon", "mimuon-0.9", "mimuon-0.5"),
      "arms; mimuon-F: MiMuon at the tau of orthogonalized fraction ~F")
  taus: tuple[float, ...] | None = field(
      None, "MiMuon spacing taus for the mimuon arms, in order; none:"
      " calibrated", minimum=0)
  calib_steps: int = field(200, "steps of the tau calibration run",
                           minimum=1)
  grid_scale: float = field(1.0, "multiplies every lr grid", positive=True)
  grid_points: int = field(3, "lrs per grid at the start (the middle ones)",
                           minimum=1)
  grid_factor: float = field(3.0, "ratio of neighbouring lrs when a grid"
                             " grows", positive=True)
  max_extend: int = field(2, "grid points added beyond an edge at most",
                          minimum=0)
  eval_every: int = field(5, "validation mAP every k epochs (curves)",
                          minimum=1)
  train_eval_images: int = field(500, "training images in the train mAP",
                                 minimum=1)
  eval_batch: int = field(32, "images per evaluation batch", minimum=1)
  ema: bool = field(True, "evaluate an EMA of the weights (ultralytics')")
  time_steps: int = field(0, "> 0: only time this many steps of each arm's"
                          " optimizer (seed 0, first lr of its grid) and"
                          " write step_times.json (sizes the study)",
                          minimum=0)

  def __post_init__(self):
    if self.image_size % 32:
      raise ValueError(f"image_size must be a multiple of 32, got "
                       f"{self.image_size}")
    if len(self.epochs) not in (1, len(self.sizes)):
      raise ValueError(f"epochs must have 1 or {len(self.sizes)} values (one"
                       f" per size), got {self.epochs}")
    for arm in self.arms:
      arm_spec(arm)
    if self.taus is not None and len(self.taus) != len(mimuon_arms(self)):
      raise ValueError(f"taus: {len(self.taus)} values for "
                       f"{len(mimuon_arms(self))} mimuon arms")


PRESETS = {
    # The protocol reduced to what two CPU cores train in about an hour:
    # 64x64 canvases (items 16-25 px), batch 8, N = 800 and 200 at ~300
    # steps each (3 and 12 epochs), 300 val / 600 test images, a 100-step
    # tau calibration, each lr grid grown by up to three points (short runs
    # favour larger lrs than the grids, centred on the defaults). The
    # default protocol (160 px, N = 4000 and 300, batch 16, 20 and 100
    # epochs) needs an accelerator: ~5000 steps a run.
    "cpu": dict(image_size=64, sizes=(800, 200), num_val=300, num_test=600,
                epochs=(3, 12), batch_size=8, calib_steps=100, max_extend=3,
                eval_every=2, train_eval_images=300, eval_batch=50),
    # < 60 s of training on a quiet CPU (compiles aside): the pipeline only.
    "smoke": dict(image_size=64, sizes=(16, 8), num_val=8, num_test=8,
                  epochs=(1,), batch_size=4, seeds=(0, 1),
                  arms=("musgd", "muon", "mimuon-0.5"), calib_steps=2,
                  grid_points=1, max_extend=0, eval_every=1,
                  train_eval_images=8, eval_batch=8),
}


def arm_spec(name: str) -> tuple[str, float | None]:
  """(optimizer, target orthogonalized fraction or None) of an arm name."""
  if name in ("adamw", "musgd", "muon"):
    return name, None
  if name.startswith("mimuon-"):
    try:
      fraction = float(name.split("-", 1)[1])
    except ValueError:
      fraction = math.nan
    if 0 < fraction < 1:
      return "mimuon", fraction
  raise ValueError(f"arms: unknown arm {name!r}; known: adamw, musgd, muon,"
                   " mimuon-F with F in (0, 1)")


def mimuon_arms(cfg: DetectionStudyConfig) -> list[str]:
  return [a for a in cfg.arms if arm_spec(a)[0] == "mimuon"]


# ----------------------------------------------------------------------------
# Optimizers: every arm built here
# ----------------------------------------------------------------------------


def scaled_weight_decay(batch_size: int) -> float:
  """ultralytics' `weight_decay * batch * accumulate / nbs`, accumulate 1."""
  return WEIGHT_DECAY * batch_size / detection_loop.NOMINAL_BATCH


def make_optimizer(optimizer: str, params: Any, *, batch_size: int
                   ) -> optax.GradientTransformation:
  """One arm's optimizer, after ultralytics' clipping to norm 10.

  Its numeric settings live in an ``optax.inject_hyperparams`` state, set at
  every step from `hyperparams` (so one compiled step serves every lr,
  schedule and tau): ``learning_rate`` (the matrix lr for muon/mimuon),
  ``adam_learning_rate`` (Muon/MiMuon's AdamW lr of biases and BatchNorm
  scales) and ``tau`` (MiMuon's spacing threshold).

  Args:
    optimizer: "adamw", "musgd", "muon" or "mimuon".
    params: the model's params (for the dimension numbers and groups).
    batch_size: scales the weight decay as ultralytics does.
  """
  wd = scaled_weight_decay(batch_size)
  if optimizer == "adamw":
    # ultralytics: decay on the "weight" group (conv kernels), not on
    # biases or BatchNorm scales.
    decay_mask = jax.tree.map(
        lambda g: g.startswith("muon"), yolo_optim.yolo26_param_groups(params))

    def factory(learning_rate):
      return detection_loop.clipped(optax.adamw(
          learning_rate, b1=ADAMW_BETAS[0], b2=ADAMW_BETAS[1],
          weight_decay=wd, mask=decay_mask))
  elif optimizer == "musgd":
    def factory(learning_rate):
      return detection_loop.clipped(
          yolo_optim.yolo26_musgd(learning_rate, MUSGD_MOMENTUM, wd))
  elif optimizer in ("muon", "mimuon"):
    shared = dict(
        weight_decay=wd, adam_b1=ADAMW_BETAS[0], adam_b2=ADAMW_BETAS[1],
        weight_dimension_numbers=yolo_optim.yolo26_weight_dimension_numbers(
            params))

    def factory(learning_rate, adam_learning_rate, tau=0.0):
      if optimizer == "muon":
        tx = mimuon_optax.muon(learning_rate,
                               adam_learning_rate=adam_learning_rate, **shared)
      else:
        tx = mimuon_optax.mimuon(learning_rate, tau=tau,
                                 adam_learning_rate=adam_learning_rate,
                                 **shared)
      return detection_loop.clipped(tx)
  else:
    raise ValueError(f"optimizer must be adamw, musgd, muon or mimuon, got "
                     f"{optimizer!r}")
  # Python floats: inject_hyperparams keeps them as arrays in its state.
  return optax.inject_hyperparams(factory)(
      **{k: float(v) for k, v in hyperparams(optimizer, 0., 0., 0.).items()})


def hyperparams(optimizer: str, lr: float, factor: float, tau: float
                ) -> dict[str, np.ndarray]:
  """The step's `hparams`: the peak `lr` times the schedule's `factor`
  (Muon/MiMuon's AdamW leaves at ultralytics' auto AdamW lr times the same
  factor), and MiMuon's `tau`."""
  out = {"learning_rate": lr * factor}
  if optimizer in ("muon", "mimuon"):
    out["adam_learning_rate"] = auto_adamw_lr(NUM_CLASSES) * factor
  if optimizer == "mimuon":
    out["tau"] = tau
  return {k: np.float32(v) for k, v in out.items()}


def grid(cfg: DetectionStudyConfig, optimizer: str) -> tuple[float, ...]:
  values = GRIDS[optimizer]
  k = min(cfg.grid_points, len(values))
  start = (len(values) - k) // 2
  return tuple(float(f"{v * cfg.grid_scale:.4g}")
               for v in values[start:start + k])


def choose_lr(score: Callable[[float], float], lrs: Sequence[float], *,
              factor: float = 3.0, max_extend: int = 2
              ) -> tuple[float, dict[float, float], bool]:
  """The lr with the highest `score`, bracketed by the grid where possible.

  Scores every lr of `lrs`; while the best lies at an edge of the scored
  lrs (and `max_extend` is not used up), scores one more lr beyond that
  edge (`factor` times further out). A non-finite score (divergence) ranks
  last; a tie goes to the smaller lr.

  Args:
    score: lr -> validation metric, higher is better (one training run).
    lrs: the starting grid (any order).
    factor: ratio of a new lr to the edge it extends.
    max_extend: lrs added at most.

  Returns:
    (kept lr, {lr: score} of every lr tried, whether the kept lr has a
    scored neighbour on both sides).
  """
  if not lrs:
    raise ValueError("lrs must not be empty")
  if factor <= 1:
    raise ValueError(f"factor must be > 1, got {factor}")
  scores = {float(lr): score(float(lr)) for lr in sorted(set(lrs))}
  rank = lambda lr: (scores[lr] if math.isfinite(scores[lr]) else -math.inf,
                     -lr)
  for _ in range(max_extend + 1):
    tried = sorted(scores)
    best = max(tried, key=rank)
    bracketed = tried[0] < best < tried[-1]
    if bracketed or len(scores) >= len(set(lrs)) + max_extend:
      break
    if best == tried[-1] and math.isfinite(scores[best]):
      new = float(f"{best * factor:.4g}")
    else:  # at the low edge, or every lr diverged: go down
      new = float(f"{tried[0] / factor:.4g}")
    scores[new] = score(new)
  tried = sorted(scores)
  best = max(tried, key=rank)
  return best, scores, tried[0] < best < tried[-1]


# ----------------------------------------------------------------------------
# Layer kinds and the gate's diagnostics
# ----------------------------------------------------------------------------


def layer_kind(names: Sequence[str]) -> str:
  """backbone / neck / head_box / head_cls / attention of a param path
  (``model/<row>/...``; rows 0-10 backbone, 11-22 neck, 23 Detect)."""
  row = next((int(n) for n in names if n.isdigit()), None)
  if row is None:
    raise ValueError(f"{'/'.join(names)}: no layer index in the path")
  if "attn" in names:
    return "attention"
  if row <= 10:
    return "backbone"
  if row < 23:
    return "neck"
  if any(n in yolo_optim.CLASS_HEADS for n in names):
    return "head_cls"
  return "head_box"


def orth_fraction_by_kind(opt_state: Any, steps: int) -> dict[str, float]:
  """Mean over the matrices of each layer kind of the fraction of steps at
  which the gate orthogonalized (`mimuon_optax.mix_diagnostics`)."""
  counts = mimuon_optax.mix_diagnostics(opt_state).orth_count
  by_kind: dict[str, list[float]] = {}
  for path, count in jax.tree_util.tree_flatten_with_path(
      jax.device_get(counts))[0]:
    by_kind.setdefault(layer_kind(path_names(path)), []).extend(
        np.ravel(count) / steps)
  out = {k: float(np.mean(by_kind[k])) for k in LAYER_KINDS if k in by_kind}
  out["all"] = float(np.mean(np.concatenate(
      [np.asarray(v) for v in by_kind.values()])))
  return out


# ----------------------------------------------------------------------------
# Training one run
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Task:
  """The data and model of one study (shared by every run)."""

  sets: dict[str, data_detection.DetectionSet]  # train (full), val, test
  model: Any  # detection_loop.DetectionModel of seed 0 (graphdefs)
  predict: Callable
  compiled: dict = dataclasses.field(default_factory=dict)


def make_task(cfg: DetectionStudyConfig) -> Task:
  data_cfg = data_detection.DetectionConfig(
      image_size=cfg.image_size, num_train=max(cfg.sizes),
      num_val=cfg.num_val, num_test=cfg.num_test, seed=cfg.data_seed,
      max_scale=data_detection.item_scale(cfg.image_size))
  sets = data_detection.load_splits(data_cfg)
  model = detection_loop.init_model(cfg.scale, NUM_CLASSES, 0)
  return Task(sets, model, detection_loop.make_predict(model))


def epochs_for(cfg: DetectionStudyConfig, size: int) -> int:
  return (cfg.epochs[0] if len(cfg.epochs) == 1
          else cfg.epochs[list(cfg.sizes).index(size)])


def train_run(cfg: DetectionStudyConfig, task: Task, optimizer: str,
              lr: float, seed: int, size: int, *, tau: float = 0.0,
              max_steps: int | None = None, record_rho: int | None = None
              ) -> dict[str, Any]:
  """Trains one (optimizer, lr, seed) on the first `size` training images.

  `max_steps` stops early (the tau calibration); `record_rho` keeps the
  gate statistic of every matrix after that many steps.
  """
  train = _prefix(task.sets["train"], size)
  epochs = epochs_for(cfg, size)
  per_epoch = detection_loop.steps_per_epoch(size, cfg.batch_size)
  model = detection_loop.init_model(cfg.scale, NUM_CLASSES, seed)
  if optimizer not in task.compiled:  # one compile per optimizer
    tx = make_optimizer(optimizer, model.params, batch_size=cfg.batch_size)
    task.compiled[optimizer] = tx, detection_loop.make_train_step(
        task.model, tx, (cfg.image_size, cfg.image_size))
  tx, step_fn = task.compiled[optimizer]
  state = detection_loop.TrainState.create(model, tx, ema=cfg.ema)
  t0 = time.perf_counter()
  curve, rhos, steps = [], [], 0
  for epoch in range(epochs):
    o2m = yolo_loss.o2m_weight(epoch, epochs)
    losses = []
    for images, targets in detection_loop.epoch_batches(
        train, cfg.batch_size, seed, epoch):
      factor = detection_loop.lr_factor(steps, per_epoch, epochs)
      state, metrics = step_fn(state, images, targets, o2m,
                               hyperparams(optimizer, lr, factor, tau))
      losses.append(metrics["loss"])
      steps += 1
      if record_rho is not None and steps > record_rho:
        rho = mimuon_optax.mix_diagnostics(state.opt_state).rho
        rhos.extend(np.concatenate([np.ravel(v) for v in
                                    jax.tree.leaves(jax.device_get(rho))]))
      if max_steps is not None and steps >= max_steps:
        break
    point = {"epoch": epoch + 1, "step": steps,
             "loss": float(np.mean(jax.device_get(losses)))}
    done = max_steps is not None and steps >= max_steps
    if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == epochs or done:
      point["val_map50_95"] = _evaluate(cfg, task, state, "val")["map50_95"]
    curve.append(point)
    if done:
      break
  result: dict[str, Any] = {
      "optimizer": optimizer, "lr": lr, "seed": seed, "size": size,
      "tau": tau, "epochs": epochs, "steps": steps, "curve": curve,
      "train_wall_s": time.perf_counter() - t0}
  result["diverged"] = not math.isfinite(curve[-1]["loss"])
  if record_rho is not None:
    result["rho"] = np.asarray(rhos)
    return result
  for split in ("val", "test", "train"):
    metrics = _evaluate(cfg, task, state, split, train)
    result[f"{split}_map50_95"] = metrics["map50_95"]
    result[f"{split}_map50"] = metrics["map50"]
  result["gap"] = result["test_map50_95"] - result["train_map50_95"]
  if optimizer == "mimuon":
    result["orth_frac"] = orth_fraction_by_kind(state.opt_state, steps)
  result["wall_s"] = time.perf_counter() - t0
  return result


def _prefix(data: data_detection.DetectionSet, n: int
            ) -> data_detection.DetectionSet:
  if n > len(data):
    raise ValueError(f"sizes: {n} > the {len(data)} training images")
  return dataclasses.replace(
      data, **{f: getattr(data, f)[:n] for f in
               ("images", "boxes", "classes", "mask", "item_ids")})


def _evaluate(cfg, task, state, split, train=None) -> dict[str, float]:
  data = train if split == "train" else task.sets[split]
  limit = cfg.train_eval_images if split == "train" else None
  return detection_loop.evaluate(task.predict, *state.eval_weights(), data,
                                 cfg.eval_batch, NUM_CLASSES, limit)


def calibrate(cfg: DetectionStudyConfig, task: Task) -> dict[str, Any]:
  """Quantiles of the gate statistic rho along Muon's own trajectory."""
  lrs = grid(cfg, "muon")
  lr = lrs[len(lrs) // 2]
  size = max(cfg.sizes)
  r = train_run(cfg, task, "mimuon", lr, cfg.seeds[0], size, tau=0.0,
                max_steps=cfg.calib_steps, record_rho=cfg.calib_steps // 2)
  rho = r["rho"][np.isfinite(r["rho"])]
  if rho.size == 0:
    raise ValueError("the calibration run measured no finite rho")
  fractions = [arm_spec(a)[1] for a in mimuon_arms(cfg)]
  taus = [float(f"{np.quantile(rho, 1 - f):.3g}") for f in fractions]
  return {"lr": lr, "steps": r["steps"], "samples": int(rho.size),
          "fractions": fractions, "taus": taus,
          "rho_median": float(np.median(rho)), "wall_s": r["train_wall_s"]}


# ----------------------------------------------------------------------------
# The study
# ----------------------------------------------------------------------------


def _run_key(r: dict) -> tuple:
  return (r["size"], r["arm"], float(r["lr"]), int(r["seed"]))


def time_steps(cfg: DetectionStudyConfig, task: Task) -> dict[str, Any]:
  """s/step of each arm's optimizer (the compile timed apart)."""
  train = task.sets["train"]
  rows = {}
  for arm in cfg.arms:
    optimizer, _ = arm_spec(arm)
    model = detection_loop.init_model(cfg.scale, NUM_CLASSES, cfg.seeds[0])
    tx = make_optimizer(optimizer, model.params, batch_size=cfg.batch_size)
    step_fn = detection_loop.make_train_step(
        model, tx, (cfg.image_size, cfg.image_size))
    state = detection_loop.TrainState.create(model, tx, ema=cfg.ema)
    hparams = hyperparams(optimizer, grid(cfg, optimizer)[0], 1.0, 0.3)
    o2m = yolo_loss.o2m_weight(0, 1)
    times = []
    batches = detection_loop.epoch_batches(train, cfg.batch_size,
                                           cfg.seeds[0], 0)
    for _, (images, targets) in zip(range(cfg.time_steps + 1), batches):
      t0 = time.perf_counter()
      state, metrics = step_fn(state, images, targets, o2m, hparams)
      jax.block_until_ready(metrics["loss"])
      times.append(time.perf_counter() - t0)
    rows[arm] = {"first_step_s": times[0],
                 "s_per_step": float(np.median(times[1:])),
                 "steps_timed": len(times) - 1,
                 "loss": float(metrics["loss"])}
    print(f"{arm:<12} first step (compile) {times[0]:.1f}s, then"
          f" {rows[arm]['s_per_step']:.3f} s/step", flush=True)
  return rows


def run(cfg: DetectionStudyConfig, command: str = "") -> dict[str, Any]:
  out = pathlib.Path(cfg.out)
  out.mkdir(parents=True, exist_ok=True)
  t_start = time.perf_counter()
  task = make_task(cfg)
  if cfg.time_steps:
    report = {"config": dataclasses.asdict(cfg),
              "step_times": time_steps(cfg, task),
              "env": reporting.env_info()}
    reporting.write_json(out / "step_times.json", report)
    reporting.write_command_md(out, "YOLO26 step times", command,
                               cfg.seeds[:1], time.perf_counter() - t_start)
    return report
  jsonl = out / "results.jsonl"
  done = {}
  if jsonl.exists():  # a rerun reuses the finished runs
    done = {_run_key(r): r for r in reporting.read_jsonl(jsonl)
            if r.get("config") == dataclasses.asdict(cfg) and "arm" in r}

  calibration = None
  taus = list(cfg.taus) if cfg.taus is not None else None
  if taus is None and mimuon_arms(cfg):
    calibration = calibrate(cfg, task)
    taus = calibration["taus"]
    print(f"calibrated taus {taus} for {mimuon_arms(cfg)}", flush=True)
  tau_of = dict(zip(mimuon_arms(cfg), taus or []))

  runs: list[dict] = []
  chosen: dict[str, dict[str, Any]] = {}

  def one(arm, size, lr, seed, role):
    key = (size, arm, float(lr), seed)
    if key in done:
      r = done[key]
    else:
      optimizer = arm_spec(arm)[0]
      r = train_run(cfg, task, optimizer, lr, seed, size,
                    tau=tau_of.get(arm, 0.0))
      r.update(arm=arm, role=role, config=dataclasses.asdict(cfg))
      reporting.append_jsonl(jsonl, r)
    runs.append(r)
    orth = (f" orth {r['orth_frac']['all']:.2f}" if "orth_frac" in r
            else "")
    print(f"N={size:<5} {arm:<12} lr {lr:<8g} seed {seed} val"
          f" {r['val_map50_95']:.4f} test {r['test_map50_95']:.4f}"
          f" train {r['train_map50_95']:.4f}{orth} ({r['wall_s']:.0f}s)",
          flush=True)
    return r

  for size in cfg.sizes:
    for arm in cfg.arms:
      optimizer = arm_spec(arm)[0]
      lr, scores, bracketed = choose_lr(
          lambda lr: one(arm, size, lr, cfg.seeds[0], "sweep")[
              "val_map50_95"], grid(cfg, optimizer),
          factor=cfg.grid_factor, max_extend=cfg.max_extend)
      chosen[f"{size}/{arm}"] = {"lr": lr, "val_scores": scores,
                                 "bracketed": bracketed}
      for seed in cfg.seeds[1:]:
        one(arm, size, lr, seed, "final")

  rows = summarize(cfg, runs, chosen)
  report = {"config": dataclasses.asdict(cfg), "calibration": calibration,
            "taus": tau_of, "chosen_lr": chosen, "rows": rows,
            "runs": runs, "wall_s": time.perf_counter() - t_start,
            "env": reporting.env_info()}
  reporting.write_json(out / "results.json", report)
  write_markdown(cfg, out, report)
  plot_curves(cfg, runs, chosen, out / "curves.png")
  reporting.write_command_md(
      out, "YOLO26 detection study", command, cfg.seeds, report["wall_s"],
      notes=[f"taus {tau_of}" + (" (calibrated)" if calibration else "")])
  return report


def finals(runs: list[dict], chosen: dict, size: int, arm: str
           ) -> dict[int, dict]:
  """{seed: run} of an arm at its kept lr."""
  lr = chosen[f"{size}/{arm}"]["lr"]
  return {r["seed"]: r for r in runs
          if r["size"] == size and r["arm"] == arm and r["lr"] == lr}


def paired(group: dict[int, dict], base: dict[int, dict], metric: str
           ) -> tuple[float, float, bool] | None:
  """Mean and std over shared seeds of group - base, and `tau_sweep`'s
  significance: |mean| > 2 std / sqrt(n); None with fewer than 2 seeds."""
  diffs = [group[s][metric] - base[s][metric] for s in sorted(group)
           if s in base]
  if len(diffs) < 2:
    return None
  mean, std = mean_std(diffs)
  return mean, std, bool(abs(mean) > 2 * std / math.sqrt(len(diffs)))


def summarize(cfg: DetectionStudyConfig, runs: list[dict], chosen: dict
              ) -> list[dict]:
  rows = []
  for size in cfg.sizes:
    for arm in cfg.arms:
      group = finals(runs, chosen, size, arm)
      row: dict[str, Any] = {"size": size, "arm": arm, "seeds": len(group),
                             **chosen[f"{size}/{arm}"]}
      row.pop("val_scores")
      for m in ("test_map50_95", "test_map50", "train_map50_95", "gap"):
        row[f"{m}_mean"], row[f"{m}_std"] = mean_std(
            [r[m] for r in group.values()])
      if arm_spec(arm)[0] == "mimuon":
        row["orth_frac"] = {k: float(np.mean([r["orth_frac"][k] for r in
                                              group.values()]))
                            for k in (*LAYER_KINDS, "all")
                            if all(k in r["orth_frac"]
                                   for r in group.values())}
        for base in ("musgd", "muon"):
          if base in cfg.arms:
            base_runs = finals(runs, chosen, size, base)
            # gap: > 0 is a smaller gap for MiMuon.
            for metric, key in (("test_map50_95", "d_vs"), ("gap", "d_gap_vs")):
              d = paired(group, base_runs, metric)
              if d is not None:
                row[f"{key}_{base}"] = d
      rows.append(row)
  return rows


def _pm(row: dict, m: str) -> str:
  return f"{row[f'{m}_mean']:.4f} ± {row[f'{m}_std']:.4f}"


def _diff(row: dict, base: str, key: str = "d_vs") -> str:
  d = row.get(f"{key}_{base}")
  if d is None:
    return ""
  return f"{d[0]:+.4f} ± {d[1]:.4f}{' *' if d[2] else ''}"


def write_markdown(cfg: DetectionStudyConfig, out: pathlib.Path,
                   report: dict) -> None:
  rows = report["rows"]
  lines = ["# YOLO26 detection study", "",
           f"YOLO26{cfg.scale} at {cfg.image_size}x{cfg.image_size}, batch"
           f" {cfg.batch_size}, seeds {list(cfg.seeds)}; lr kept on"
           " validation mAP50-95 (seed 0), test reported. Differences are"
           " paired by seed (MiMuon - base, test mAP50-95); `*` where |mean|"
           " > 2 std / sqrt(seeds). gap = test - train mAP50-95; its"
           " paired difference > 0 is a smaller gap for MiMuon.", ""]
  if report["calibration"]:
    c = report["calibration"]
    lines += [f"Tau calibration: Muon (lr {c['lr']:g}) for {c['steps']}"
              f" steps, rho quantiles at 1 - fraction: taus"
              f" {report['taus']}.", ""]
  headers = ["N", "arm", "lr", "bracketed", "test mAP50-95", "test mAP50",
             "train mAP50-95", "gap", "MiMuon - MuSGD", "MiMuon - Muon",
             "gap, MiMuon - Muon"]
  table = [[r["size"], r["arm"], f"{r['lr']:g}", r["bracketed"],
            _pm(r, "test_map50_95"), _pm(r, "test_map50"),
            _pm(r, "train_map50_95"), _pm(r, "gap"), _diff(r, "musgd"),
            _diff(r, "muon"), _diff(r, "muon", "d_gap_vs")] for r in rows]
  lines += [reporting.markdown_table(headers, table), ""]
  gated = [r for r in rows if "orth_frac" in r]
  if gated:
    kinds = [k for k in (*LAYER_KINDS, "all") if k in gated[0]["orth_frac"]]
    lines += ["Orthogonalized fraction per layer kind (mean over matrices,"
              " steps and seeds):", "",
              reporting.markdown_table(
                  ["N", "arm", *kinds],
                  [[r["size"], r["arm"],
                    *(f"{r['orth_frac'].get(k, math.nan):.3f}"
                      for k in kinds)] for r in gated]), ""]
  (out / "results.md").write_text("\n".join(lines))


def plot_curves(cfg: DetectionStudyConfig, runs: list[dict], chosen: dict,
                path: pathlib.Path) -> None:
  """Train loss and validation mAP50-95 per epoch, seed mean per arm, one
  row of panels per size."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(len(cfg.sizes), 2, squeeze=False,
                           figsize=(11, 3.6 * len(cfg.sizes)))
  for row, size in enumerate(cfg.sizes):
    for i, arm in enumerate(cfg.arms):
      group = list(finals(runs, chosen, size, arm).values())
      color, ls, marker = plots.curve_style(i)
      for col, key in enumerate(("loss", "val_map50_95")):
        pts: dict[int, list[float]] = {}
        for r in group:
          for p in r["curve"]:
            if key in p:
              pts.setdefault(p["epoch"], []).append(p[key])
        x = sorted(pts)
        axes[row, col].plot(x, [np.mean(pts[e]) for e in x], color=color,
                            ls=ls, marker=marker, ms=4, label=arm)
    for col, label in enumerate(("train loss", "val mAP50-95")):
      ax = axes[row, col]
      ax.set_xlabel("epoch")
      ax.set_ylabel(label)
      ax.set_title(f"N = {size}")
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8)
  plots.save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  return cli.study_main(DetectionStudyConfig, __doc__, run, argv,
                        presets=PRESETS)


if __name__ == "__main__":
  main()
