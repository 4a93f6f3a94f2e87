"""COCO box mAP (mAP50-95 and mAP50) with faster-coco-eval, from arrays.

The COCO dicts are built in memory (no JSON files) and scored by
`faster_coco_eval.COCOeval_faster` with iouType "bbox": IoU thresholds
0.50:0.05:0.95, 101 recall points, area range "all", at most `max_dets`
detections per image (COCO's 100), averaged over the classes that have
ground truth (COCO's convention: a class without any is left out).

  result = coco_map(data.boxes, data.classes, predictions,
                    image_size=data.images.shape[1:3], gt_mask=data.mask)
  result.map50_95, result.map50, result.per_class   # per_class: (10,), NaN
                                                    # where a class has no gt
  predictions[i] = (boxes_xyxy (K, 4) pixels, scores (K,), classes (K,))
  predictions = split_detections(postprocess(...))  # from (B, K, 6) rows

A predicted box with x1 < x0 or y1 < y0 (an untrained head's raw distances
can be negative) overlaps nothing: a false positive at its score, as in
ultralytics' validator. Non-finite boxes or scores and class ids outside
[0, num_classes) are errors naming the image and detection.

ultralytics' validator (`ultralytics.utils.metrics.ap_per_class`) matches
the same way but integrates the 101-point precision envelope with
`np.trapezoid` where COCO takes the mean of the 101 samples, so its numbers
differ a little from these (by up to about 1/101 of an AP).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from faster_coco_eval import COCO
from faster_coco_eval import COCOeval_faster

from experiments.harness.data_detection import cxcywh_to_xyxy
from mimuon_optax.models.yolo26 import loss as yolo_loss


class MapResult(NamedTuple):
  """COCO box AP of a set of detections."""

  map50_95: float  # COCO AP at IoU 0.50:0.95 (mean over 10 thresholds)
  map50: float  # COCO AP at IoU 0.50
  per_class: np.ndarray  # (num_classes,) AP50-95, NaN for classes without gt


def _pad(gt_boxes, gt_classes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Lists of per-image (K_i, 4) boxes and (K_i,) classes -> padded + mask."""
  if len(gt_boxes) != len(gt_classes):
    raise ValueError(f"gt_boxes has {len(gt_boxes)} images, gt_classes "
                     f"{len(gt_classes)}")
  width = max([len(b) for b in gt_boxes] + [1])
  boxes = np.zeros((len(gt_boxes), width, 4))
  classes = np.zeros((len(gt_boxes), width), np.int64)
  mask = np.zeros((len(gt_boxes), width), bool)
  for i, (b, c) in enumerate(zip(gt_boxes, gt_classes)):
    b = np.asarray(b, np.float64).reshape(-1, 4)
    c = np.asarray(c).reshape(-1)
    if len(b) != len(c):
      raise ValueError(f"gt_boxes[{i}] has {len(b)} boxes, gt_classes[{i}] "
                       f"{len(c)} classes")
    boxes[i, :len(b)], classes[i, :len(b)], mask[i, :len(b)] = b, c, True
  return boxes, classes, mask


def _check_prediction(i: int, boxes, scores, classes, num_classes: int):
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  scores, classes = np.asarray(scores).reshape(-1), np.asarray(classes).reshape(-1)
  name = f"predictions[{i}]"
  if not len(boxes) == len(scores) == len(classes):
    raise ValueError(f"{name}: {len(boxes)} boxes, {len(scores)} scores and "
                     f"{len(classes)} classes must be as many")
  problems = {
      "boxes not finite": ~np.isfinite(boxes).all(1),
      "scores not finite": ~np.isfinite(scores),
      f"classes outside [0, {num_classes})":
          (classes < 0) | (classes >= num_classes) | (classes != np.rint(classes)),
  }
  for what, where in problems.items():
    if where.any():
      k = int(np.argmax(where))
      raise ValueError(f"{name}: {what}, first at detection {k}: box "
                       f"{boxes[k].tolist()}, score {scores[k]}, class "
                       f"{classes[k]}")
  # An inverted box (x1 < x0 or y1 < y0) is a real output of a YOLO26 head
  # early in training (reg_max = 1: its ltrb distances are raw, unbounded
  # conv outputs). It overlaps nothing, as in ultralytics' `box_iou` (its
  # clamped intersection is 0): collapsed to a zero-area box at (x0, y0),
  # it stays a false positive at its score.
  inverted = (boxes[:, 2:] < boxes[:, :2]).any(1)
  boxes[inverted, 2:] = boxes[inverted, :2]
  return boxes, scores, classes.astype(np.int64)


def _xywh(xyxy: np.ndarray) -> list[float]:
  return [float(xyxy[0]), float(xyxy[1]), float(xyxy[2] - xyxy[0]),
          float(xyxy[3] - xyxy[1])]


def coco_map(gt_boxes, gt_classes,
             predictions: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
             *, image_size: int | tuple[int, int], gt_mask=None,
             num_classes: int = 10, max_dets: int = 100) -> MapResult:
  """COCO mAP50-95 and mAP50 of per-image detections against ground truth.

  Args:
    gt_boxes: normalized (cx, cy, w, h) ground truth, padded (N, M, 4) with
      `gt_mask`, or a list of N (K_i, 4) arrays.
    gt_classes: (N, M) class ids, or a list of N (K_i,) arrays.
    predictions: N per-image (boxes (K, 4) xyxy in pixels, scores (K,),
      classes (K,)); K may be 0.
    image_size: the canvas side, or (height, width), in pixels.
    gt_mask: (N, M) bool, True where a padded box is real (padded input).
    num_classes: class ids must lie in [0, num_classes).
    max_dets: detections per image kept (highest scores), COCO's maxDets.

  Returns:
    A `MapResult`.
  """
  if gt_mask is None:
    gt_boxes, gt_classes, gt_mask = _pad(gt_boxes, gt_classes)
  gt_classes, gt_mask = np.asarray(gt_classes), np.asarray(gt_mask, bool)
  try:  # the loss' check: one rule for what a box is
    yolo_loss.check_targets(
        yolo_loss.Targets(np.asarray(gt_boxes), gt_classes, gt_mask),
        num_classes)
  except ValueError as error:
    raise ValueError(f"coco_map ground truth (gt_boxes, gt_classes): {error}"
                     ) from error
  if len(predictions) != len(gt_mask):
    raise ValueError(f"predictions has {len(predictions)} images, the ground "
                     f"truth {len(gt_mask)}")
  if not gt_mask.any():
    raise ValueError("no ground-truth boxes: mAP is undefined")
  height, width = ((image_size, image_size) if np.isscalar(image_size)
                   else image_size)
  gt_xyxy = cxcywh_to_xyxy(gt_boxes, (height, width))

  # COCO ids start at 1 (an annotation id 0 is ignored by its matching).
  images = [{"id": i + 1, "height": height, "width": width}
            for i in range(len(gt_mask))]
  categories = [{"id": c + 1, "name": str(c)} for c in range(num_classes)]
  annotations = []
  for i, j in zip(*np.nonzero(gt_mask)):
    xywh = _xywh(gt_xyxy[i, j])
    annotations.append({"id": len(annotations) + 1, "image_id": int(i) + 1,
                        "category_id": int(gt_classes[i, j]) + 1,
                        "bbox": xywh, "area": xywh[2] * xywh[3],
                        "iscrowd": 0})
  detections = []
  for i, prediction in enumerate(predictions):
    boxes, scores, classes = _check_prediction(i, *prediction, num_classes)
    detections += [{"image_id": i + 1, "category_id": int(c) + 1,
                    "bbox": _xywh(b), "score": float(s)}
                   for b, s, c in zip(boxes, scores, classes)]

  coco_gt = COCO({"images": images, "categories": categories,
                  "annotations": annotations})
  coco_dt = coco_gt.loadRes(detections)
  evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox",
                              print_function=lambda *_: None)
  evaluator.params.maxDets = [1, 10, max_dets]
  evaluator.evaluate()
  evaluator.accumulate()
  # precision: (iou thresholds, recall points, classes, area ranges, max dets);
  # -1 marks a class without ground truth.
  precision = np.asarray(evaluator.eval["precision"])[:, :, :, 0, -1]
  present = (precision > -1).all((0, 1))
  per_class = np.where(present, precision.mean((0, 1)), np.nan)
  return MapResult(map50_95=float(precision[:, :, present].mean()),
                   map50=float(precision[0][:, present].mean()),
                   per_class=per_class)


def split_detections(detections_BxKx6, conf: float = 0.001
                     ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """The model's padded detections -> `coco_map`'s per-image triples.

  Args:
    detections_BxKx6: rows ``[x0, y0, x1, y1, score, class]`` in pixels (what
      `mimuon_optax.models.yolo26.modeling.postprocess` returns).
    conf: rows with ``score > conf`` are kept (ultralytics' val: 0.001).

  Returns:
    N tuples (boxes (K_i, 4), scores (K_i,), classes (K_i,) int64).
  """
  detections = np.asarray(detections_BxKx6, np.float64)
  if detections.ndim != 3 or detections.shape[-1] != 6:
    raise ValueError("detections_BxKx6 must have shape (B, K, 6), got "
                     f"{detections.shape}")
  keep = detections[..., 4] > conf
  return [(d[k, :4], d[k, 4], np.rint(d[k, 5]).astype(np.int64))
          for d, k in zip(detections, keep)]
