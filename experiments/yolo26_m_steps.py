"""YOLO26m (21.9M params, random init) trained with mimuon() on the CPU, and a real image end to end.

  python -m experiments.yolo26_m_steps --out experiments/results/yolo26_m_steps

Part 1, training: the full `YOLO26Config.from_scale("m")` at `--image-size`
with batch `--batch-size`, `--steps` optimizer steps of `mimuon()` (the
library's default spacing tau, conv kernels as (kh*kw*in, out) matrices via
`yolo26_weight_dimension_numbers`, AdamW for biases and BatchNorm scales;
the study's optimizer and step: `yolo26_detection.make_optimizer`,
`detection_loop.make_train_step` with BatchNorm statistics, clipping to 10,
EMA). The batches cycle over `--train-images` Fashion-MNIST detection
canvases, so a falling loss is visible in a few steps. Reported: the loss of
every step, s/step (median from step 2 on; the first includes the compile),
the compile time and the peak resident memory of the process (RSS, as
`qwen3_0_6b` does).

Part 2, a real image: ultralytics' `assets/bus.jpg` (found in the installed
ultralytics package without importing it, or `--image`), letterboxed as
ultralytics' ``LetterBox`` does (long side to `--bus-size`, padded with grey
114 to a multiple of 32), through the trained model in eval mode and
`postprocess` (NMS-free one-to-one head): shapes, finiteness and time. No
accuracy claim: the weights are 20 steps from random on another data set.

Writes metrics.jsonl (one line per step), summary.json, results.md and
COMMAND.md.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import resource
import time
from typing import Any, Sequence

import jax
import numpy as np
from PIL import Image

import mimuon_optax
from experiments import yolo26_detection as study
from experiments.harness import cli
from experiments.harness import data_detection
from experiments.harness import detection_loop
from experiments.harness import reporting
from experiments.harness.cli import field
from mimuon_optax.models.yolo26 import loss as yolo_loss
from mimuon_optax.models.yolo26.modeling import STRIDES

LETTERBOX_GREY = 114  # ultralytics' LetterBox padding value


@dataclasses.dataclass(frozen=True)
class YOLO26MStepsConfig:
  """Configuration of `yolo26_m_steps` (every field is a `--flag`)."""

  out: str = field("runs/yolo26_m_steps", "output directory")
  scale: str = field("m", "YOLO26 scale", choices=("n", "s", "m", "l", "x"))
  image_size: int = field(160, "training canvas side (a multiple of 32)",
                          minimum=32)
  batch_size: int = field(2, "images per step", minimum=1)
  steps: int = field(20, "optimizer steps", minimum=1)
  train_images: int = field(8, "canvases the batches cycle over", minimum=1)
  lr: float = field(0.02, "mimuon matrix lr (constant)", positive=True)
  tau: float = field(mimuon_optax.DEFAULT_TAU, "MiMuon spacing tau",
                     minimum=0)
  seed: int = field(0, "model init and batch order")
  image: str | None = field(None, "the real image; none: ultralytics'"
                            " assets/bus.jpg")
  bus_size: int = field(640, "letterbox long side for the real image"
                        " (ultralytics' imgsz)", minimum=32)

  def __post_init__(self):
    if self.image_size % STRIDES[-1]:
      raise ValueError(f"image_size must be a multiple of {STRIDES[-1]}, got"
                       f" {self.image_size}")


def peak_rss_gib() -> float:
  """Peak resident memory of this process so far (Linux: ru_maxrss in KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def bus_jpg() -> pathlib.Path:
  """ultralytics' assets/bus.jpg in the installed package (not imported)."""
  spec = importlib.util.find_spec("ultralytics")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("ultralytics is not installed: pass --image")
  path = pathlib.Path(list(spec.submodule_search_locations)[0],
                      "assets", "bus.jpg")
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist: pass --image")
  return path


def letterbox(image_HxWx3: np.ndarray, size: int, stride: int = STRIDES[-1]
              ) -> tuple[np.ndarray, float, tuple[int, int]]:
  """ultralytics' ``LetterBox(auto=True)``: long side to `size` (aspect kept,
  bilinear), then grey padding split evenly to the next multiple of
  `stride` on each axis.

  Returns:
    (uint8 (H', W', 3) with H', W' multiples of `stride`, the scale, the
    (top, left) padding).
  """
  if image_HxWx3.ndim != 3 or image_HxWx3.shape[-1] != 3:
    raise ValueError(f"image must be (H, W, 3) RGB, got {image_HxWx3.shape}")
  h, w = image_HxWx3.shape[:2]
  scale = size / max(h, w)
  nh, nw = round(h * scale), round(w * scale)
  resized = np.asarray(Image.fromarray(image_HxWx3).resize(
      (nw, nh), Image.BILINEAR))
  ph, pw = -nh % stride, -nw % stride
  top, left = ph // 2, pw // 2
  out = np.pad(resized, ((top, ph - top), (left, pw - left), (0, 0)),
               constant_values=LETTERBOX_GREY)
  return out, scale, (top, left)


def real_image(cfg: YOLO26MStepsConfig, model: Any, state: Any
               ) -> dict[str, Any]:
  """The real image through eval mode and `postprocess`: shapes, time."""
  path = pathlib.Path(cfg.image) if cfg.image else bus_jpg()
  rgb = np.asarray(Image.open(path).convert("RGB"))
  boxed, scale, pad = letterbox(rgb, cfg.bus_size)
  predict = detection_loop.make_predict(model)
  params, stats = state.eval_weights()
  t0 = time.perf_counter()
  dets = jax.block_until_ready(predict(params, stats, boxed[None]))
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  dets = np.asarray(jax.block_until_ready(predict(params, stats,
                                                  boxed[None])))
  again = time.perf_counter() - t0
  anchors = sum((boxed.shape[0] // s) * (boxed.shape[1] // s)
                for s in STRIDES)
  return {"image": str(path), "original_hw": list(rgb.shape[:2]),
          "letterboxed_hw": list(boxed.shape[:2]), "scale": scale,
          "pad_top_left": list(pad), "anchors": anchors,
          "detections_shape": list(dets.shape),
          "finite": bool(np.isfinite(dets).all()),
          "max_score": float(dets[0, :, 4].max()),
          "boxes_inside": bool(
              (dets[0, :, :4] >= -1).all()
              and (dets[0, :, [0, 2]] <= boxed.shape[1] + 1).all()
              and (dets[0, :, [1, 3]] <= boxed.shape[0] + 1).all()),
          "first_call_s": first, "eval_s": again}


def run(cfg: YOLO26MStepsConfig, command: str = "") -> dict[str, Any]:
  out = pathlib.Path(cfg.out)
  out.mkdir(parents=True, exist_ok=True)
  t_start = time.perf_counter()
  data = data_detection.load_split(data_detection.DetectionConfig(
      image_size=cfg.image_size, num_train=cfg.train_images,
      max_scale=data_detection.item_scale(cfg.image_size)), "train")
  model = detection_loop.init_model(cfg.scale, study.NUM_CLASSES, cfg.seed)
  num_params = sum(x.size for x in jax.tree.leaves(model.params))
  tx = study.make_optimizer("mimuon", model.params,
                            batch_size=cfg.batch_size)
  step_fn = detection_loop.make_train_step(model, tx, (cfg.image_size,
                                                       cfg.image_size))
  state = detection_loop.TrainState.create(model, tx)
  hparams = study.hyperparams("mimuon", cfg.lr, 1.0, cfg.tau)
  o2m = yolo_loss.o2m_weight(0, 1)
  metrics_path = out / "metrics.jsonl"
  metrics_path.unlink(missing_ok=True)
  records, step = [], 0
  epoch = 0
  while step < cfg.steps:
    for images, targets in detection_loop.epoch_batches(
        data, cfg.batch_size, cfg.seed, epoch):
      t0 = time.perf_counter()
      state, metrics = step_fn(state, images, targets, o2m, hparams)
      loss = float(metrics["loss"])
      step += 1
      record = {"step": step, "loss": loss,
                "step_s": time.perf_counter() - t0,
                "peak_rss_gib": peak_rss_gib()}
      records.append(record)
      reporting.append_jsonl(metrics_path, record)
      print(f"step {step} loss {loss:.4f} {record['step_s']:.2f}s",
            flush=True)
      if step == cfg.steps:
        break
    epoch += 1
  losses = [r["loss"] for r in records]
  times = [r["step_s"] for r in records[1:]] or [records[0]["step_s"]]
  k = max(1, len(losses) // 4)
  summary = {
      "scale": cfg.scale, "params": int(num_params),
      "image_size": cfg.image_size, "batch_size": cfg.batch_size,
      "steps": cfg.steps, "first_loss": losses[0], "last_loss": losses[-1],
      "first_quarter_mean": float(np.mean(losses[:k])),
      "last_quarter_mean": float(np.mean(losses[-k:])),
      "finite": bool(np.isfinite(losses).all()),
      "s_per_step": float(np.median(times)),
      "first_step_s": records[0]["step_s"],
      "orth_fraction": study.orth_fraction_by_kind(state.opt_state, step),
  }
  summary["loss_fell"] = bool(summary["last_quarter_mean"]
                              < summary["first_quarter_mean"])
  summary["real_image"] = real_image(cfg, model, state)
  summary["peak_rss_gib"] = peak_rss_gib()
  summary["wall_s"] = time.perf_counter() - t_start
  summary["env"] = reporting.env_info()
  reporting.write_json(out / "summary.json", summary)
  bus = summary["real_image"]
  lines = [
      f"# YOLO26{cfg.scale} ({num_params:,} params) with mimuon() on the"
      " CPU", "",
      reporting.markdown_table(
          ["steps", "image", "batch", "loss first -> last (quarter means)",
           "s/step", "first step (compile) s", "peak RSS GiB"],
          [[cfg.steps, cfg.image_size, cfg.batch_size,
            f"{summary['first_quarter_mean']:.3f} ->"
            f" {summary['last_quarter_mean']:.3f}",
            f"{summary['s_per_step']:.2f}", f"{summary['first_step_s']:.1f}",
            f"{summary['peak_rss_gib']:.2f}"]]), "",
      f"Real image {pathlib.Path(bus['image']).name}: {bus['original_hw']}"
      f" -> letterboxed {bus['letterboxed_hw']}, {bus['anchors']} anchors,"
      f" detections {bus['detections_shape']}, finite {bus['finite']},"
      f" eval {bus['eval_s']:.2f} s (first call with compile"
      f" {bus['first_call_s']:.1f} s). Random weights: no accuracy claim.",
      ""]
  (out / "results.md").write_text("\n".join(lines))
  reporting.write_command_md(out, f"YOLO26{cfg.scale} steps on the CPU",
                             command, [cfg.seed], summary["wall_s"])
  return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  return cli.study_main(YOLO26MStepsConfig, __doc__, run, argv)


if __name__ == "__main__":
  main()
