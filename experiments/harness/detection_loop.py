"""YOLO26 training on the Fashion-MNIST detection set: step, schedule, eval.

  model = init_model("n", num_classes=10, seed=0)   # graphdefs, params, stats
  tx = optax.inject_hyperparams(                    # lr: a step argument
      lambda learning_rate: clipped(optax.adamw(learning_rate)))(1e-3)
  step = make_train_step(model, tx, image_size=(160, 160))
  state = TrainState.create(model, tx)
  for epoch in range(epochs):
    o2m = loss.o2m_weight(epoch, epochs)             # an array: no recompile
    for images, targets in epoch_batches(train_set, batch, seed, epoch):
      lr = 1e-3 * lr_factor(int(state.step), steps_per_epoch, epochs)
      state, metrics = step(state, images, targets, o2m,
                            {"learning_rate": lr})
  result = evaluate(make_predict(model), *state.eval_weights(), val_set)
                                                    # {"map50_95", "map50"}

What follows ultralytics 8.4.190's trainer (``engine/trainer.py``) and what
does not:

* The loss is ``E2ELoss`` (``models/yolo26/loss.py``): its total is
  ultralytics' (summed components times the batch size), and its gradient is
  clipped to global norm 10 before the optimizer, as ultralytics' trainer
  does.
* BatchNorm: the model is split into a graphdef, ``nnx.Param`` (what the
  optimizer updates) and ``nnx.BatchStat`` (running mean/var, updated by the
  train-mode forward pass and returned by the step).
* Schedule (`lr_factor`, applied on the host through the step's
  `hparams`): linear warmup of the lr from 0 over
  ``warmup_epochs`` epochs, then ultralytics' linear ``lf(epoch) = (1 -
  epoch / epochs) (1 - lrf) + lrf`` per epoch. Not ported: the momentum
  warmup (0.8 -> 0.937) and the bias lr warmup from 0.1 (the auto optimizer
  sets it to 0; every arm here starts biases at 0 too).
* EMA (`ema=True` in `TrainState.create`, the default): ultralytics'
  ``ModelEMA``, decay ``0.9999 (1 - exp(-updates / 2000))`` over params and
  BatchNorm statistics; evaluation uses the EMA weights, as ultralytics'
  validation does.
* No gradient accumulation to the nominal batch 64: one optimizer step per
  batch (the study scales the weight decay by ``batch / 64`` instead, as
  ultralytics' formula does with ``accumulate = 1``).
* Augmentation: horizontal flips (p = 0.5, ultralytics' ``fliplr``) only;
  no mosaic, HSV or scale jitter (the canvases already vary scale, position,
  colour and clutter).

Evaluation: eval mode (running statistics) -> the one-to-one branch ->
``postprocess`` (NMS-free top ``max_det``) -> ``coco_map`` with ultralytics'
``conf = 0.001``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments.harness import coco_map
from experiments.harness import data_detection
from mimuon_optax.models.yolo26 import loss as yolo_loss
from mimuon_optax.models.yolo26.modeling import YOLO26
from mimuon_optax.models.yolo26.modeling import YOLO26Config
from mimuon_optax.models.yolo26.modeling import postprocess

CLIP_NORM = 10.0  # ultralytics' trainer: clip_grad_norm_(max_norm=10.0)
EMA_DECAY, EMA_TAU = 0.9999, 2000.0  # ultralytics' ModelEMA
NOMINAL_BATCH = 64  # ultralytics' nbs
WARMUP_EPOCHS, LRF = 3.0, 0.01  # ultralytics' defaults
FLIP_P = 0.5  # ultralytics' fliplr
EVAL_CONF, MAX_DET = 0.001, 300  # ultralytics' val


@dataclasses.dataclass(frozen=True)
class DetectionModel:
  """A YOLO26 split for training: one graphdef per mode, params, stats."""

  train_graphdef: Any
  eval_graphdef: Any
  params: Any  # nnx.Param state (pure)
  batch_stats: Any  # nnx.BatchStat state (pure): BatchNorm mean/var
  config: YOLO26Config


def init_model(scale: str, num_classes: int, seed: int) -> DetectionModel:
  """A freshly initialized YOLO26 (ultralytics' init), split for training."""
  model = YOLO26(YOLO26Config.from_scale(scale, num_classes=num_classes),
                 rngs=nnx.Rngs(seed))
  model.eval()
  eval_graphdef, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
  model.train()
  train_graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return DetectionModel(train_graphdef, eval_graphdef, nnx.as_pure(params),
                        nnx.as_pure(stats), model.config)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
  """Everything a step changes (a pytree, so it goes through jit)."""

  params: Any
  batch_stats: Any
  opt_state: Any
  step: jax.Array  # shape=(), int32: optimizer steps taken
  ema_params: Any  # None without EMA
  ema_stats: Any

  @classmethod
  def create(cls, model: DetectionModel, tx: optax.GradientTransformation,
             ema: bool = True) -> TrainState:
    # Copies: the step donates its state, `model` may start other runs.
    copy = lambda t: jax.tree.map(jnp.array, t)
    params = copy(model.params)
    return cls(params, copy(model.batch_stats), tx.init(params),
               jnp.zeros((), jnp.int32),
               copy(model.params) if ema else None,
               copy(model.batch_stats) if ema else None)

  def eval_weights(self) -> tuple[Any, Any]:
    """(params, batch_stats) that evaluation uses: the EMA's if kept."""
    if self.ema_params is None:
      return self.params, self.batch_stats
    return self.ema_params, self.ema_stats


def clipped(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx` after ultralytics' gradient clipping to global norm 10."""
  return optax.chain(optax.clip_by_global_norm(CLIP_NORM), tx)


def ema_decay(updates: jax.Array) -> jax.Array:
  """ultralytics' ModelEMA decay after `updates` optimizer steps."""
  return EMA_DECAY * (1 - jnp.exp(-jnp.asarray(updates, jnp.float32)
                                  / EMA_TAU))


def make_train_step(model: DetectionModel, tx: optax.GradientTransformation,
                    image_size: tuple[int, int]) -> Callable:
  """``step(state, images uint8, targets, o2m, hparams) -> (state, metrics)``.

  Jitted once per shape; `o2m` (the one-to-many weight) and `hparams`
  (``{name: value}`` written into an ``optax.inject_hyperparams`` state
  before the update: this step's lr, tau, ...) are array arguments, so
  schedules, lr grids and taus share one compiled step. The optimizer sees
  gradient of the E2E loss w.r.t. the params only (`tx` should start with
  `clipped`'s clipping, as ultralytics does); the BatchNorm statistics come
  out of the train-mode forward pass.
  """
  graphdef = model.train_graphdef

  def loss_fn(params, stats, images, targets, o2m):
    net = nnx.merge(graphdef, params, stats)
    preds = net(images)
    total, parts = yolo_loss.e2e_loss(preds, targets, o2m,
                                      image_size=image_size)
    return total, (nnx.as_pure(nnx.state(net, nnx.BatchStat)), parts)

  def step(state: TrainState, images_u8, targets, o2m, hparams):
    images = images_u8.astype(jnp.float32) / 255.0
    (total, (stats, parts)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params, state.batch_stats, images,
                               targets, o2m)
    opt_state = state.opt_state
    if hparams:
      opt_state = opt_state._replace(hyperparams={
          **opt_state.hyperparams,
          **{k: jnp.asarray(v, opt_state.hyperparams[k].dtype)
             for k, v in hparams.items()}})
    updates, opt_state = tx.update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    count = state.step + 1
    ema_params, ema_stats = state.ema_params, state.ema_stats
    if ema_params is not None:
      d = ema_decay(count)
      mix = lambda e, x: d * e + (1 - d) * x
      ema_params = jax.tree.map(mix, ema_params, params)
      ema_stats = jax.tree.map(mix, ema_stats, stats)
    metrics = {"loss": total, "grad_norm": optax.global_norm(grads),
               "o2m": parts["one2many"], "o2o": parts["one2one"]}
    return TrainState(params, stats, opt_state, count, ema_params,
                      ema_stats), metrics

  return jax.jit(step, donate_argnums=(0,))


# --- Schedules ---------------------------------------------------------------


def lr_factor(step: int, steps_per_epoch: int, epochs: int,
              warmup_epochs: float = WARMUP_EPOCHS, lrf: float = LRF) -> float:
  """ultralytics' lr multiplier at optimizer step `step` (0-based).

  ``lf(epoch) = (1 - epoch / epochs) (1 - lrf) + lrf`` with ``epoch = step
  // steps_per_epoch``; during the first ``round(warmup_epochs *
  steps_per_epoch)`` steps (at most all but the last epoch) it rises
  linearly from 0 to that value (``np.interp`` as the trainer does).
  """
  if steps_per_epoch < 1 or epochs < 1:
    raise ValueError(f"steps_per_epoch ({steps_per_epoch}) and epochs "
                     f"({epochs}) must be >= 1")
  warmup = warmup_steps(steps_per_epoch, epochs, warmup_epochs)
  epoch = step // steps_per_epoch
  lf = max(1 - epoch / epochs, 0) * (1 - lrf) + lrf
  return lf * (min(step / warmup, 1.0) if warmup else 1.0)


def warmup_steps(steps_per_epoch: int, epochs: int,
                 warmup_epochs: float = WARMUP_EPOCHS) -> int:
  """ultralytics' warmup iterations: leaves at least the last epoch."""
  return round(min(warmup_epochs, max(epochs - 1, 0)) * steps_per_epoch)


# --- Batches -------------------------------------------------------------------


def steps_per_epoch(num_images: int, batch_size: int) -> int:
  """Full batches per epoch (the last partial batch is dropped)."""
  if num_images < batch_size:
    raise ValueError(f"batch_size {batch_size} > the {num_images} training "
                     "images")
  return num_images // batch_size


def epoch_batches(data: data_detection.DetectionSet, batch_size: int,
                  seed: int, epoch: int, flip: bool = True
                  ) -> Iterator[tuple[np.ndarray, yolo_loss.Targets]]:
  """One epoch of (images uint8 (B, H, W, 3), Targets), a pure function of
  (seed, epoch): a seeded permutation, horizontal flips with p = 0.5."""
  rng = np.random.default_rng([seed, epoch, 31])
  order = rng.permutation(len(data))
  flips = rng.random(len(data)) < FLIP_P
  for b in range(steps_per_epoch(len(data), batch_size)):
    idx = order[b * batch_size:(b + 1) * batch_size]
    images = data.images[idx].copy()
    boxes = data.boxes[idx].copy()
    if flip:
      f = flips[idx]
      images[f] = images[f, :, ::-1]
      boxes[f, :, 0] = np.where(data.mask[idx][f], 1.0 - boxes[f, :, 0], 0.0)
    yield images, yolo_loss.Targets(boxes, data.classes[idx], data.mask[idx])


# --- Evaluation ----------------------------------------------------------------


def make_predict(model: DetectionModel, max_det: int = MAX_DET) -> Callable:
  """Jitted ``predict(params, stats, images uint8) -> (B, k, 6)`` detections
  (eval mode, one-to-one branch, NMS-free)."""
  graphdef = model.eval_graphdef

  def predict(params, stats, images_u8):
    net = nnx.merge(graphdef, params, stats)
    out = net(images_u8.astype(jnp.float32) / 255.0)["one2one"]
    return postprocess(out["boxes"], out["scores"], max_det=max_det)
  return jax.jit(predict)


def evaluate(predict: Callable, params: Any, stats: Any,
             data: data_detection.DetectionSet, batch_size: int = 32,
             num_classes: int = len(data_detection.CLASS_NAMES),
             limit: int | None = None) -> dict[str, float]:
  """COCO mAP50-95 / mAP50 of the model on (the first `limit` images of)
  `data`; the last batch is padded to `batch_size` (one compiled shape)."""
  n = len(data) if limit is None else min(limit, len(data))
  detections = []
  for start in range(0, n, batch_size):
    images = data.images[start:start + batch_size]
    k = len(images)
    if k < batch_size:
      images = np.concatenate(
          [images, np.zeros((batch_size - k, *images.shape[1:]), np.uint8)])
    detections.append(np.asarray(predict(params, stats, images))[:k])
  result = coco_map.coco_map(
      data.boxes[:n], data.classes[:n],
      coco_map.split_detections(np.concatenate(detections), EVAL_CONF),
      image_size=data.images.shape[1:3], gt_mask=data.mask[:n],
      num_classes=num_classes)
  return {"map50_95": result.map50_95, "map50": result.map50}
