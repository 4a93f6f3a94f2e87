"""Fashion-MNIST detection canvases and COCO mAP.

experiments.harness.data_detection (exact boxes, splits, seeds, cache,
ultralytics' YOLO layout) and experiments.harness.coco_map (COCO mAP on
planted predictions).
"""

import dataclasses
import hashlib
import re
import types

import cv2
import numpy as np
import pytest
import torch
from ultralytics.data import YOLODataset
from ultralytics.data import utils as ul_data_utils
from ultralytics.engine.validator import BaseValidator
from ultralytics.utils import metrics as ul_metrics

from experiments.harness import coco_map as cm
from experiments.harness import data_detection as dd

# Tiny canvases: a handful of 48x48 images per split, real Fashion-MNIST.
TINY = dd.DetectionConfig(image_size=48, num_train=10, num_val=4, num_test=4,
                          min_scale=12, max_scale=28, val_items=1000)
THRESHOLDS = np.linspace(0.5, 0.95, 10)


@pytest.fixture(scope="module")
def tiny():
  return {s: dd.make_split(TINY, s) for s in dd.SPLITS}


def _write_idx(path, array):
  """An uncompressed IDX file (data_images reads .gz or plain)."""
  path.write_bytes(bytes([0, 0, 8, array.ndim])
                   + np.asarray(array.shape, ">u4").tobytes()
                   + np.ascontiguousarray(array, np.uint8).tobytes())


def _synthetic_fashion(folder, items_train, items_test):
  """IDX files whose items are the given (K, 28, 28) arrays, labels k % 10."""
  for prefix, items in (("train", items_train), ("t10k", items_test)):
    _write_idx(folder / f"{prefix}-images-idx3-ubyte", items)
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(len(items)) % 10)
  return folder


def _perfect(data):
  xyxy = data.boxes_xyxy()
  return [(xyxy[i][m], np.linspace(1, 0.5, m.sum()), data.classes[i][m])
          for i, m in enumerate(data.mask)]


def _iou(a, b):
  """IoU of two pixel xyxy boxes, float64."""
  w = min(a[2], b[2]) - max(a[0], b[0])
  h = min(a[3], b[3]) - max(a[1], b[1])
  inter = max(w, 0) * max(h, 0)
  area = lambda x: (x[2] - x[0]) * (x[3] - x[1])
  return inter / (area(a) + area(b) - inter)


# --- The data set --------------------------------------------------------------
def test_padded_arrays_and_tight_boxes_of_real_items(tiny):
  data = tiny["train"]
  n, m, size = TINY.num_train, TINY.max_items, TINY.image_size
  assert data.images.shape == (n, size, size, 3) and data.images.dtype == np.uint8
  assert data.boxes.shape == (n, m, 4) and data.boxes.dtype == np.float32
  assert data.classes.dtype == np.int32 and data.mask.dtype == bool
  assert (data.mask.sum(1) >= 1).all()
  assert not data.boxes[~data.mask].any() and (data.item_ids[~data.mask] == -1).all()
  x_train = dd.data_images.read_idx(dd._source_files(None)["x_train"])
  y_train = dd.data_images.read_idx(dd._source_files(None)["y_train"])
  np.testing.assert_array_equal(data.classes[data.mask],
                                y_train[data.item_ids[data.mask]])
  xyxy = data.boxes_xyxy()
  tighter_than_cell = 0
  for i, j in zip(*np.nonzero(data.mask)):
    x0, y0, x1, y1 = xyxy[i, j]
    assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
    # Edges are whole pixels, and (w, h) is the nonzero extent of the item
    # resized to some side in [min_scale, max_scale], not the side itself.
    np.testing.assert_allclose(xyxy[i, j], np.round(xyxy[i, j]), atol=1e-4)
    wh = (round(x1 - x0), round(y1 - y0))
    extents = {}
    for side in range(TINY.min_scale, TINY.max_scale + 1):
      resized = dd._resize(x_train[data.item_ids[i, j]], side)
      rows, cols = np.nonzero(resized.any(1))[0], np.nonzero(resized.any(0))[0]
      extents[(cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1)] = side
    assert wh in extents, (i, j, wh)
    tighter_than_cell += min(wh) < extents[wh]
    # Boxes of one image never intersect, so each item is fully visible.
    for k in range(j):
      assert _iou(np.round(xyxy[i, j]), np.round(xyxy[i, k])) == 0
  assert tighter_than_cell > 0


def test_box_is_exactly_where_the_item_is_painted(tmp_path):
  # Solid 28x28 items (every pixel 255), no noise, no distractors: an item is
  # a square of one colour, its box exactly that square.
  solid = np.full((40, 28, 28), 255)
  source = _synthetic_fashion(tmp_path, solid, solid[:10])
  config = dataclasses.replace(TINY, noise_std=0.0, max_distractors=0,
                               val_items=10)
  data = dd.make_split(config, "train", data_dir=source)
  xyxy = np.rint(data.boxes_xyxy()).astype(int)
  for i, j in zip(*np.nonzero(data.mask)):
    x0, y0, x1, y1 = xyxy[i, j]
    image = data.images[i].astype(int)
    inside = image[y0:y1, x0:x1].reshape(-1, 3)
    assert (inside == inside[0]).all()
    # Every pixel of the 1-px ring around the box (inside the canvas) differs.
    ring = np.zeros(image.shape[:2], bool)
    ring[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = True
    ring[y0:y1, x0:x1] = False
    assert (image[ring] != inside[0]).any(1).all()


def test_same_seed_same_bytes_other_seed_other_images(tiny):
  again = dd.make_split(TINY, "val")
  for field in dataclasses.fields(dd.DetectionSet):
    a, b = getattr(tiny["val"], field.name), getattr(again, field.name)
    assert np.array_equal(a, b), field.name
  other = dd.make_split(dataclasses.replace(TINY, seed=1), "val")
  assert not np.array_equal(other.images, tiny["val"].images)
  # Image i depends on (seed, split, i) only: the small set is a prefix.
  small = dd.make_split(dataclasses.replace(TINY, num_train=3), "train")
  assert np.array_equal(small.images, tiny["train"].images[:3])
  assert np.array_equal(small.boxes, tiny["train"].boxes[:3])


def test_no_item_is_in_two_splits(tmp_path):
  # 60 train items, 15 held out for val: without the split pools, 40 train
  # images (~130 items) would certainly reuse val's.
  rng = np.random.default_rng(0)
  items = rng.integers(0, 256, (60 + 20, 28, 28))
  source = _synthetic_fashion(tmp_path, items[:60], items[60:])
  config = dataclasses.replace(TINY, num_train=40, num_val=10, num_test=10,
                               val_items=15)
  sets = {s: dd.make_split(config, s, data_dir=source) for s in dd.SPLITS}
  ids = {s: set(d.item_ids[d.mask].tolist()) for s, d in sets.items()}
  assert ids["train"].isdisjoint(ids["val"])
  assert len(ids["val"]) > 5 and len(ids["train"]) > 20
  assert max(ids["test"]) < 20  # indices into the test file
  # Different files: no test item's pixels equal a train item's.
  test_pixels = {items[60 + k].tobytes() for k in ids["test"]}
  assert test_pixels.isdisjoint(items[k].tobytes() for k in ids["train"] | ids["val"])


def test_cache_is_keyed_by_parameters_and_outside_the_checkout(
    tmp_path, monkeypatch, tiny):
  path = dd.cache_path(TINY, "val", tmp_path)
  assert path.is_relative_to(tmp_path) and not path.exists()
  first = dd.load_split(TINY, "val", tmp_path)
  assert path.exists() and np.array_equal(first.images, tiny["val"].images)
  digest = hashlib.sha1(path.read_bytes()).hexdigest()
  again = dd.load_split(TINY, "val", tmp_path)  # read back, not redrawn
  assert np.array_equal(again.boxes, first.boxes)
  assert np.array_equal(again.mask, first.mask)
  assert hashlib.sha1(path.read_bytes()).hexdigest() == digest
  # Val/test do not depend on num_train (small and full share them); every
  # drawing parameter and the split size change the key.
  assert dd.cache_path(dataclasses.replace(TINY, num_train=1), "val", tmp_path) == path
  for change in ({"seed": 1}, {"noise_std": 3.0}, {"num_val": 5}, {"max_scale": 27}):
    assert dd.cache_path(dataclasses.replace(TINY, **change), "val", tmp_path) != path
  monkeypatch.setenv(dd.CACHE_ENV, str(tmp_path / "env"))
  assert dd.cache_path(TINY, "val").is_relative_to(tmp_path / "env")


def test_ultralytics_reads_the_yolo_layout_back(tmp_path, monkeypatch, tiny):
  # check_det_dataset would fetch a font for its plots: no network in tests.
  monkeypatch.setattr(ul_data_utils, "check_font", lambda *a, **k: None)
  yaml_path = dd.write_yolo(tiny, tmp_path / "fashion_det")
  data = ul_data_utils.check_det_dataset(str(yaml_path))
  assert data["nc"] == 10 and data["names"] == dict(enumerate(dd.CLASS_NAMES))
  for split in dd.SPLITS:
    ours = tiny[split]
    dataset = YOLODataset(img_path=data[split], data=data, task="detect",
                          imgsz=TINY.image_size, augment=False, prefix=split)
    labels = sorted(dataset.labels, key=lambda lb: lb["im_file"])
    assert len(labels) == len(ours)
    for i, label in enumerate(labels):
      m = ours.mask[i]
      np.testing.assert_array_equal(label["cls"][:, 0], ours.classes[i][m])
      np.testing.assert_allclose(label["bboxes"], ours.boxes[i][m], atol=1e-6)
      bgr = cv2.imread(label["im_file"])
      np.testing.assert_array_equal(bgr[..., ::-1], ours.images[i])


@pytest.mark.parametrize("field,value", [("max_scale", 100), ("min_items", 0),
                                         ("val_items", 60000), ("min_scale", 4)])
def test_bad_config_names_the_field(field, value):
  with pytest.raises(ValueError, match=f"DetectionConfig.{field}"):
    dd.DetectionConfig(image_size=48, **{field: value})


@pytest.mark.parametrize("slot,box,cls,what", [
    ((1, 2), [0.5, 0.5, 0.2, 0.2], 10, "classes[1, 2]"),
    ((0, 1), [0.95, 0.5, 0.2, 0.2], 3, "boxes[0, 1]"),
    ((1, 0), [0.5, 0.5, 0.0, 0.2], 3, "boxes[1, 0]"),
    ((0, 0), [0.5, np.nan, 0.2, 0.2], 3, "boxes[0, 0]"),
])
def test_bad_ground_truth_names_the_item(slot, box, cls, what):
  # The metric checks its ground truth with the loss' check_targets (the
  # data set checks what it draws the same way).
  boxes = np.full((2, 3, 4), 0.25, np.float32)
  classes = np.zeros((2, 3), np.int32)
  mask = np.ones((2, 3), bool)
  boxes[slot], classes[slot] = box, cls
  preds = [(np.zeros((0, 4)), [], [])] * 2
  with pytest.raises(ValueError, match=rf"ground truth.*{re.escape(what)}"):
    cm.coco_map(boxes, classes, preds, image_size=48, gt_mask=mask)
  mask[slot] = False  # a padded slot is not checked
  assert cm.coco_map(boxes, classes, preds, image_size=48,
                     gt_mask=mask).map50_95 == 0.0


# --- COCO mAP --------------------------------------------------------------
def test_perfect_predictions_score_one_and_lists_equal_padded(tiny):
  data = tiny["train"]
  result = cm.coco_map(data.boxes, data.classes, _perfect(data),
                       image_size=TINY.image_size, gt_mask=data.mask)
  assert result.map50_95 == 1.0 and result.map50 == 1.0
  present = np.isin(np.arange(10), data.classes[data.mask])
  assert (result.per_class[present] == 1.0).all()
  assert np.isnan(result.per_class[~present]).all()
  as_lists = cm.coco_map([b[m] for b, m in zip(data.boxes, data.mask)],
                         [c[m] for c, m in zip(data.classes, data.mask)],
                         _perfect(data), image_size=TINY.image_size)
  assert as_lists.map50_95 == 1.0


@pytest.mark.parametrize("target_iou", [0.525, 0.725, 0.925])
def test_shifted_boxes_pass_a_known_fraction_of_thresholds(tiny, target_iou):
  # A box shifted right by a fraction f of its width has IoU (1-f)/(1+f)
  # with its gt; thresholds below it count, above it do not.
  data = tiny["train"]
  f = (1 - target_iou) / (1 + target_iou)
  shifted = []
  for boxes, scores, classes in _perfect(data):
    dx = f * (boxes[:, 2] - boxes[:, 0])
    shifted.append((boxes + np.stack([dx, 0 * dx, dx, 0 * dx], 1), scores, classes))
  ious = [_iou(s, g) for (s_boxes, _, _), (g_boxes, _, _)
          in zip(shifted, _perfect(data)) for s, g in zip(s_boxes, g_boxes)]
  np.testing.assert_allclose(ious, target_iou, atol=1e-9)
  expected = np.mean(target_iou >= THRESHOLDS)  # 0.1, 0.5, 0.9
  result = cm.coco_map(data.boxes, data.classes, shifted,
                       image_size=TINY.image_size, gt_mask=data.mask)
  assert result.map50_95 == pytest.approx(expected, abs=1e-12)
  assert result.map50 == 1.0


def test_empty_and_wrong_class_predictions_score_zero(tiny):
  data = tiny["val"]
  empty = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))] * len(data)
  wrong = [(b, s, (c + 1) % 10) for b, s, c in _perfect(data)]
  for predictions in (empty, wrong):
    result = cm.coco_map(data.boxes, data.classes, predictions,
                         image_size=TINY.image_size, gt_mask=data.mask)
    assert result.map50_95 == 0.0 and result.map50 == 0.0


def test_a_false_positive_ranked_first_halves_precision():
  # One gt, one wrong box scored above the right one: precision 1/2 at
  # every recall point, so AP = 0.5 at every threshold.
  gt = [np.array([[0.5, 0.5, 0.25, 0.25]])]
  right = [37.5, 37.5, 62.5, 62.5]
  for fp_score, expected in ((0.9, 0.5), (0.1, 1.0)):
    pred = [(np.array([[0.0, 0.0, 10.0, 10.0], right]), [fp_score, 0.5], [3, 3])]
    result = cm.coco_map(gt, [[3]], pred, image_size=100)
    assert result.map50_95 == pytest.approx(expected, abs=1e-12)


def test_inverted_boxes_are_false_positives_that_overlap_nothing():
  # An untrained YOLO26 head gives boxes with x1 < x0 (raw ltrb distances
  # below 0). Placed over the gt, inverted, and scored above the right box,
  # it is a false positive (precision 1/2 everywhere), as in ultralytics'
  # box_iou, whose clamped intersection with it is 0; scored below, AP 1.
  gt = [np.array([[0.5, 0.5, 0.25, 0.25]])]
  right = [37.5, 37.5, 62.5, 62.5]
  for inverted in ([62.5, 37.5, 37.5, 62.5], [37.5, 62.5, 62.5, 37.5],
                   [62.5, 62.5, 37.5, 37.5]):
    for score, expected in ((0.9, 0.5), (0.1, 1.0)):
      pred = [(np.array([inverted, right]), [score, 0.5], [3, 3])]
      result = cm.coco_map(gt, [[3]], pred, image_size=100)
      assert result.map50_95 == pytest.approx(expected, abs=1e-12)
  only = [(np.array([[62.5, 62.5, 37.5, 37.5]]), [0.9], [3])]
  assert cm.coco_map(gt, [[3]], only, image_size=100).map50_95 == 0.0


@pytest.mark.parametrize("pred,what", [
    ((np.array([[1.0, 1.0, 5.0, np.nan]]), [0.5], [0]), "boxes not finite"),
    ((np.array([[1.0, 1.0, 5.0, 5.0]]), [np.inf], [0]), "scores not finite"),
    ((np.array([[1.0, 1.0, 5.0, 5.0]]), [0.5], [10]), "classes outside"),
    ((np.array([[1.0, 1.0, 5.0, 5.0]]), [0.5, 0.4], [0]), "as many"),
])
def test_bad_predictions_name_the_image(pred, what):
  gt = [np.array([[0.5, 0.5, 0.2, 0.2]])] * 2
  preds = [(np.zeros((0, 4)), [], []), pred]
  with pytest.raises(ValueError, match=rf"predictions\[1\].*{what}"):
    cm.coco_map(gt, [[0], [0]], preds, image_size=48)


def test_roughly_agrees_with_ultralytics_ap_per_class(tiny):
  # Noisy boxes, random scores, false positives. The matching is the same
  # greedy rule; ultralytics integrates the 101-point precision envelope with
  # np.trapezoid, COCO averages the 101 samples, so the two differ a little.
  rng = np.random.default_rng(0)
  sets = [tiny[s] for s in dd.SPLITS]
  boxes = np.concatenate([s.boxes for s in sets])
  classes = np.concatenate([s.classes for s in sets])
  mask = np.concatenate([s.mask for s in sets])
  xyxy = dd.cxcywh_to_xyxy(boxes, (TINY.image_size,) * 2)
  predictions, stats = [], []
  validator = types.SimpleNamespace(iouv=torch.linspace(0.5, 0.95, 10))
  for i in range(len(mask)):
    gt, gt_cls = xyxy[i][mask[i]], classes[i][mask[i]]
    size = gt[:, 2:] - gt[:, :2]
    pred = gt + rng.normal(0, 0.08, gt.shape) * np.tile(size, 2)
    cls = np.where(rng.random(len(gt)) < 0.85, gt_cls, rng.integers(0, 10, len(gt)))
    fp = rng.uniform(0, TINY.image_size / 2, (2, 2))
    pred = np.concatenate([pred, np.concatenate([fp, fp + 10], 1)])
    cls = np.concatenate([cls, rng.integers(0, 10, 2)])
    score = rng.random(len(pred))
    order = np.argsort(-score)
    pred, cls, score = pred[order], cls[order], score[order]
    predictions.append((pred, score, cls))
    iou = ul_metrics.box_iou(torch.tensor(gt), torch.tensor(pred))
    tp = BaseValidator.match_predictions(validator, torch.tensor(cls),
                                         torch.tensor(gt_cls), iou)
    stats.append((tp.numpy(), score, cls, gt_cls))
  tp, conf, pred_cls, target_cls = (np.concatenate(x) for x in zip(*stats))
  ap = ul_metrics.ap_per_class(tp, conf, pred_cls, target_cls)[5]  # (classes, 10)
  result = cm.coco_map(boxes, classes, predictions,
                       image_size=TINY.image_size, gt_mask=mask)
  assert 0.2 < result.map50_95 < 0.9  # a case that is neither trivial nor hopeless
  assert result.map50_95 == pytest.approx(ap.mean(), abs=0.01)
  assert result.map50 == pytest.approx(ap[:, 0].mean(), abs=0.01)


def test_command_writes_the_yolo_layout(tmp_path, capsys):
  path = dd.main(["--out", str(tmp_path / "yolo"), "--cache-dir",
                  str(tmp_path / "cache"), "--image-size", "32",
                  "--min-scale", "8", "--max-scale", "16", "--num-train", "2",
                  "--num-val", "1", "--num-test", "1", "--noise-std", "2.5"])
  assert capsys.readouterr().out.strip() == str(path)
  assert len(list((tmp_path / "yolo/images/train").glob("*.png"))) == 2
  labels = (tmp_path / "yolo/labels/test/000000.txt").read_text().splitlines()
  assert 1 <= len(labels) <= 6 and all(len(r.split()) == 5 for r in labels)
  assert len(list((tmp_path / "cache").rglob("*.npz"))) == 3


def test_padded_model_detections_split_per_image(tiny):
  # postprocess' (B, K, 6) rows [x0, y0, x1, y1, score, class]: the gt rows
  # with score 0.9 plus rows below the confidence cut.
  data = tiny["val"]
  rows = np.zeros((len(data), 8, 6))
  rows[..., 4] = 0.0005  # below conf=0.001: dropped
  for i, (boxes, _, classes) in enumerate(_perfect(data)):
    rows[i, :len(boxes)] = np.concatenate(
        [boxes, np.full((len(boxes), 1), 0.9), classes[:, None]], 1)
  per_image = cm.split_detections(rows)
  assert [len(b) for b, _, _ in per_image] == data.mask.sum(1).tolist()
  assert cm.coco_map(data.boxes, data.classes, per_image,
                     image_size=TINY.image_size, gt_mask=data.mask).map50_95 == 1.0
  with pytest.raises(ValueError, match="detections_BxKx6"):
    cm.split_detections(rows[..., :5])


def test_item_scale_is_two_fifths_of_the_canvas_within_16_and_64():
  assert [dd.item_scale(s) for s in (32, 64, 96, 160, 320)] == [
      16, 25, 38, 64, 64]
  for size in (32, 64, 160):  # a valid DetectionConfig at every size
    dd.DetectionConfig(image_size=size, max_scale=dd.item_scale(size))
