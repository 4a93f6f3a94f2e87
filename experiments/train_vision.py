"""Train a small CNN (or MLP) on Fashion-MNIST or sklearn digits.

  python -m experiments.train_vision --dataset digits --optimizer mimuon

A stand-in for the MiMuon paper's YOLO26m experiment at CPU scale: conv
kernels (H, W, C_in, C_out) go through Muon/MiMuon as
`MuonDimensionNumbers((0, 1, 2), 3)` (one (9*C_in, C_out) matrix each), the
hidden dense kernel as a plain matrix, and the biases and the classifier head
through AdamW. Logs like train_lm, with test loss/accuracy and train-eval
loss/accuracy (on up to --eval-train-size fixed training examples); gap =
test_loss - train_eval_loss.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import mimuon_optax
from experiments.harness import cli
from experiments.harness import data_images
from experiments.harness import diagnostics
from experiments.harness import loop
from experiments.harness import optimizers
from experiments.harness.cli import field

MODELS = ("cnn", "mlp")
CONV_DIMS = mimuon_optax.MuonDimensionNumbers(reduction_axis=(0, 1, 2),
                                              output_axis=3)
DENSE_DIMS = mimuon_optax.MuonDimensionNumbers(reduction_axis=0, output_axis=1)


@dataclasses.dataclass(frozen=True)
class TrainVisionConfig(loop.LoopConfig, optimizers.OptimizerConfig):
  """Configuration of `train_vision` (every field is a `--flag`)."""

  out: str = field("runs/train_vision", "output directory")
  dataset: str = field("fashion", "dataset", choices=data_images.DATASETS)
  data_dir: str | None = field(
      None, "folder of the Fashion-MNIST IDX files; none:"
      f" {data_images.DEFAULT_FASHION_DIR}")
  model: str = field("cnn", "model", choices=MODELS)
  width: int = field(16, "CNN: channels of the first conv (the second has 2x)")
  hidden: int = field(128, "units of the hidden dense layer(s)")
  train_size: int | None = field(
      None, "train on the first N examples of a seeded permutation; none: all")
  batch_size: int = field(128, "examples per step (drawn with replacement)",
                          minimum=1)
  eval_train_size: int = field(
      5000, "fixed training examples for the train-eval loss/accuracy")
  eval_every: int = field(100, "evaluate every k steps (and at the end)",
                          minimum=1)


class CNN(nnx.Module):
  """conv3x3 -> relu -> maxpool2 -> conv3x3 -> relu -> maxpool2 -> dense -> head."""

  def __init__(self, image_shape, num_classes: int, width: int, hidden: int,
               *, rngs: nnx.Rngs):
    height, wide, channels = image_shape
    self.conv1 = nnx.Conv(channels, width, (3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(width, 2 * width, (3, 3), rngs=rngs)
    flat = (height // 4) * (wide // 4) * 2 * width
    self.fc = nnx.Linear(flat, hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    x = nnx.max_pool(jax.nn.relu(self.conv1(x_BxHxWxC)), (2, 2), (2, 2))
    x = nnx.max_pool(jax.nn.relu(self.conv2(x)), (2, 2), (2, 2))
    x = jax.nn.relu(self.fc(x.reshape(x.shape[0], -1)))
    return self.head(x)


class MLP(nnx.Module):
  """flatten -> dense -> relu -> dense -> relu -> head."""

  def __init__(self, image_shape, num_classes: int, hidden: int, *,
               rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(int(np.prod(image_shape)), hidden, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    x = x_BxHxWxC.reshape(x_BxHxWxC.shape[0], -1)
    x = jax.nn.relu(self.fc1(x))
    x = jax.nn.relu(self.fc2(x))
    return self.head(x)


def vision_dimension_numbers(params: Any) -> Any:
  """Conv kernels -> CONV_DIMS, other 2-D kernels except the head ->
  DENSE_DIMS, everything else (biases, head) -> None (AdamW)."""
  def rule(path, leaf):
    name = diagnostics.short_name(path)
    if name.startswith("head") or leaf.ndim < 2:
      return None
    if name.startswith("conv"):
      return CONV_DIMS
    return DENSE_DIMS
  return jax.tree_util.tree_map_with_path(rule, params)


def init_model(cfg: Any, data: data_images.ImageData, seed: int):
  """(graphdef, params) of `cfg.model` for `data`'s image shape."""
  rngs = nnx.Rngs(seed)
  if cfg.model == "cnn":
    model = CNN(data.image_shape, data.num_classes, cfg.width, cfg.hidden,
                rngs=rngs)
  elif cfg.model == "mlp":
    model = MLP(data.image_shape, data.num_classes, cfg.hidden, rngs=rngs)
  else:
    raise ValueError(f"model must be one of {MODELS}, got {cfg.model!r}")
  graphdef, state = nnx.split(model, nnx.Param)
  return graphdef, nnx.as_pure(state)


def make_loss_fns(graphdef):
  """(loss_fn(params, (x, y)), eval_fn(params, x, y) -> (loss sum, #correct))."""
  def loss_fn(params, batch):
    x_BxHxWxC, y_B = batch
    return loop.cross_entropy(nnx.merge(graphdef, params)(x_BxHxWxC), y_B)

  @jax.jit
  def eval_fn(params, x_BxHxWxC, y_B):
    logits_BxK = nnx.merge(graphdef, params)(x_BxHxWxC)
    losses = loop.cross_entropy(logits_BxK, y_B) * y_B.shape[0]
    return losses, jnp.sum(jnp.argmax(logits_BxK, -1) == y_B)

  return loss_fn, eval_fn


def evaluate_split(eval_fn, params, x, y, chunk: int = 1000) -> tuple[float, float]:
  """(mean loss, accuracy) over all of (x, y) in chunks."""
  loss_sum, correct = 0.0, 0
  for i in range(0, len(x), chunk):
    l, c = eval_fn(params, x[i:i + chunk], y[i:i + chunk])
    loss_sum, correct = loss_sum + float(l), correct + int(c)
  return loss_sum / len(x), correct / len(x)


def run(cfg: TrainVisionConfig,
        data: data_images.ImageData | None = None) -> dict[str, Any]:
  """Trains per `cfg`; returns the summary written to summary.json."""
  cfg = optimizers.resolve_lrs(cfg, "vision")  # config.json records the rates used
  if data is None:
    data = data_images.load_images(cfg.dataset, cfg.data_dir)
  data = data_images.subset(data, cfg.train_size, cfg.seed)
  graphdef, params = init_model(cfg, data, cfg.seed)
  dims = vision_dimension_numbers(params)
  tx, schedule = optimizers.make_optimizer(cfg, "vision", cfg.steps, dims)
  loss_fn, eval_fn = make_loss_fns(graphdef)
  x_train, y_train = data.x_train, data.y_train
  n_eval = min(cfg.eval_train_size, len(x_train))

  def batch_fn(step):
    idx = data_images.batch_indices(len(x_train), cfg.batch_size, cfg.seed, step)
    return x_train[idx], y_train[idx]

  def evaluate(params):
    test_loss, test_acc = evaluate_split(eval_fn, params, data.x_test,
                                         data.y_test)
    train_loss, train_acc = evaluate_split(eval_fn, params, x_train[:n_eval],
                                           y_train[:n_eval])
    return {"test_loss": test_loss, "test_acc": test_acc,
            "train_eval_loss": train_loss, "train_eval_acc": train_acc}

  result = loop.train(
      cfg, params, tx, loss_fn, batch_fn, evaluate, lr_schedule=schedule,
      items_per_step=cfg.batch_size, items_name="examples",
      eval_keys=("test_loss", "train_eval_loss"))
  return loop.write_summary(cfg, params, result, dataset=data.name,
                            train_examples=int(len(x_train)))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  cfg = cli.parse_config(TrainVisionConfig, __doc__.split("\n\n")[0], argv)
  summary = run(cfg)
  print(loop.final_line(cfg, summary, ("train_loss", "test_loss", "test_acc")))
  print(f"results: {pathlib.Path(cfg.out).resolve()}")
  return summary


if __name__ == "__main__":
  main()
