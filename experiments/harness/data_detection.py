"""A detection data set drawn from Fashion-MNIST: cluttered canvases, exact boxes.

Nothing is shipped or downloaded: each canvas is drawn from the Fashion-MNIST
IDX files of Debian's `dataset-fashion-mnist` package (read by
`data_images`), deterministically from a seed.

One canvas (`image_size` square, RGB):
  background  a linear gradient between two random colours at a random angle
  distractors 0..`max_distractors` things that are not objects, drawn under
              the items: solid rectangles, solid ellipses, and "tile" patches
              (a Fashion-MNIST item of the same split cut into 7x7 tiles and
              shuffled: clothing texture without a garment's outline)
  items       `min_items`..`max_items` Fashion-MNIST items (10 classes), each
              resized (bilinear) to a random side in [`min_scale`,
              `max_scale`] px and painted in one colour that contrasts with
              what lies under it, the item's grey level as the alpha. Boxes
              never intersect (a draw that would is retried, up to
              `_PLACE_TRIES` times, then the item is left out), so every item
              is fully visible.
  noise       Gaussian pixel noise of a random std in [0, `noise_std`] over
              the whole canvas, last.

A box is exact: the tight box around the nonzero pixels of the resized
item (not its padded 28x28 cell), in pixel edges, stored normalized as
(cx, cy, w, h) in [0, 1].

Splits: train and val draw their items from Fashion-MNIST's train split,
from disjoint index pools (`val_items` indices held out for val by a seeded
permutation); test draws from Fashion-MNIST's test split. So no item (and no
distractor made from an item) appears in two splits. Image i of a split is a
pure function of (seed, split, i), so a smaller `num_train` gives a prefix of
the larger set (`DetectionConfig.small` is nested in `full`).

  config = DetectionConfig.full()           # or .small(300)
  sets = load_splits(config)                # {"train", "val", "test"}, cached
  sets["train"].images   # (N, H, W, 3) uint8
  sets["train"].boxes    # (N, 6, 4) float32, normalized cxcywh, 0 where ~mask
  sets["train"].classes  # (N, 6) int32, 0 where ~mask
  sets["train"].mask     # (N, 6) bool
  write_yolo(sets, "/tmp/fashion_det")      # ultralytics' YOLO layout
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import tempfile
from typing import Mapping

import numpy as np
from PIL import Image

from experiments.harness import cli
from experiments.harness import data_images
from experiments.harness import data_text
from mimuon_optax.models.yolo26 import loss as yolo_loss

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SPLITS = ("train", "val", "test")
CACHE_ENV = "MIMUON_DATA_CACHE"
# Bump when the drawing changes, so no stale cache is ever read.
_FORMAT_VERSION = 1
_SPLIT_CODE = {"train": 1, "val": 2, "test": 3}
_SOURCE = {"train": ("x_train", "y_train"), "val": ("x_train", "y_train"),
           "test": ("x_test", "y_test")}
_PLACE_TRIES = 30
_MIN_CONTRAST = 64.0  # luminance difference (0..255) of an item to its ground


@dataclasses.dataclass(frozen=True)
class DetectionConfig:
  """Everything that decides the data set's bytes (the cache key)."""

  image_size: int = 160  # canvas side in pixels
  num_train: int = 4000  # images per split
  num_val: int = 500
  num_test: int = 1000
  val_items: int = 10000  # Fashion-MNIST train items held out for val
  min_items: int = 1  # items drawn per image (uniform); max_items is M
  max_items: int = 6
  min_scale: int = 16  # side of the resized 28x28 item cell, in pixels
  max_scale: int = 64
  max_distractors: int = 3  # per image, uniform in [0, max_distractors]
  noise_std: float = 10.0  # the pixel noise std is uniform in [0, noise_std]
  seed: int = 0

  @classmethod
  def full(cls, **overrides) -> DetectionConfig:
    """The default sizes (4000 / 500 / 1000 images)."""
    return cls(**overrides)

  @classmethod
  def small(cls, num_train: int = 300, **overrides) -> DetectionConfig:
    """A few hundred training images; val and test as in `full`."""
    return cls(num_train=num_train, **overrides)

  def __post_init__(self):
    def need(ok: bool, field: str, rule: str):
      if not ok:
        raise ValueError(f"DetectionConfig.{field} must be {rule}, got "
                         f"{getattr(self, field)!r}")
    need(self.image_size >= 16, "image_size", ">= 16")
    for field in ("num_train", "num_val", "num_test"):
      need(getattr(self, field) >= 0, field, ">= 0")
    need(0 < self.val_items < 60000, "val_items", "in (0, 60000)")
    need(self.min_items >= 1, "min_items", ">= 1")
    need(self.max_items >= self.min_items, "max_items", ">= min_items")
    need(self.min_scale >= 8, "min_scale", ">= 8")
    need(self.min_scale <= self.max_scale <= self.image_size, "max_scale",
         "in [min_scale, image_size]")
    need(self.max_distractors >= 0, "max_distractors", ">= 0")
    need(self.noise_std >= 0, "noise_std", ">= 0")

  def num_images(self, split: str) -> int:
    """`num_train`, `num_val` or `num_test`."""
    return getattr(self, f"num_{_check_split(split)}")


@dataclasses.dataclass(frozen=True)
class DetectionSet:
  """One split as padded arrays (M = `max_items` boxes per image)."""

  split: str
  images: np.ndarray  # (N, H, W, 3) uint8, RGB
  boxes: np.ndarray  # (N, M, 4) float32, normalized (cx, cy, w, h)
  classes: np.ndarray  # (N, M) int32 in [0, 10)
  mask: np.ndarray  # (N, M) bool, True where a box is real
  # (N, M) int32: index in the Fashion-MNIST source split, -1 where ~mask
  item_ids: np.ndarray

  def __len__(self) -> int:
    return len(self.images)

  def boxes_xyxy(self) -> np.ndarray:
    """(N, M, 4) float64 boxes in pixel edges (x0, y0, x1, y1)."""
    return cxcywh_to_xyxy(self.boxes, self.images.shape[1:3])


def cxcywh_to_xyxy(boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """Normalized (cx, cy, w, h) -> pixel (x0, y0, x1, y1), float64."""
  b = np.asarray(boxes, np.float64)
  scale = np.array([hw[1], hw[0]], np.float64)
  centre, size = b[..., :2] * scale, b[..., 2:] * scale
  return np.concatenate([centre - size / 2, centre + size / 2], -1)


def _check_split(split: str) -> str:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  return split


# --- Fashion-MNIST items -----------------------------------------------------
def _source_files(data_dir) -> dict[str, pathlib.Path]:
  """The four IDX files, found by data_images (one reader per data set)."""
  # pylint: disable=protected-access
  folder = pathlib.Path(data_dir or data_images.DEFAULT_FASHION_DIR)
  return {k: data_images._find(folder, v)
          for k, v in data_images._FASHION_FILES.items()}


@functools.lru_cache(maxsize=4)
def _read_idx(path: pathlib.Path) -> np.ndarray:
  """data_images.read_idx, once per file and process (read-only arrays)."""
  array = data_images.read_idx(path)
  array.flags.writeable = False
  return array


def _items(split: str, config: DetectionConfig, data_dir
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(source images (K, 28, 28) uint8, labels (K,), this split's pool)."""
  files = _source_files(data_dir)
  x_key, y_key = _SOURCE[split]
  x, y = _read_idx(files[x_key]), _read_idx(files[y_key])
  if split == "test":
    return x, y, np.arange(len(x))
  order = np.random.default_rng([config.seed, 0]).permutation(len(x))
  if not config.val_items < len(x):
    raise ValueError(f"DetectionConfig.val_items={config.val_items} must be"
                     f" below the {len(x)} Fashion-MNIST train items")
  pool = order[:config.val_items] if split == "val" else order[config.val_items:]
  return x, y, np.sort(pool)


# --- Drawing -------------------------------------------------------------------
def _luminance(rgb: np.ndarray) -> np.ndarray:
  return rgb @ np.array([0.299, 0.587, 0.114])


def _paint(canvas, alpha, colour, x, y) -> None:
  """Alpha-blends one colour into canvas[y:y+h, x:x+w] (float64, in place)."""
  h, w = alpha.shape
  region = canvas[y:y + h, x:x + w]
  region += alpha[..., None] * (colour - region)


def _contrasting_colour(rng, ground: np.ndarray) -> np.ndarray:
  lum = _luminance(ground)
  for _ in range(10):
    colour = rng.uniform(0, 255, 3)
    if abs(_luminance(colour) - lum) >= _MIN_CONTRAST:
      return colour
  return np.full(3, 0.0 if lum > 127.5 else 255.0)


def _resize(item: np.ndarray, side: int) -> np.ndarray:
  return np.asarray(Image.fromarray(item).resize(
      (side, side), Image.Resampling.BILINEAR))


def _background(rng, size: int) -> np.ndarray:
  c0, c1 = rng.uniform(0, 255, (2, 3))
  angle = rng.uniform(0, 2 * np.pi)
  ramp = np.linspace(0.0, 1.0, size)
  t = ramp[None, :] * np.cos(angle) + ramp[:, None] * np.sin(angle)
  t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
  return c0 + t[..., None] * (c1 - c0)


def _distractor(rng, canvas, items: np.ndarray, pool: np.ndarray,
                config: DetectionConfig) -> None:
  size = config.image_size
  kind = rng.integers(3)
  if kind == 2:  # tiles: an item's 16 7x7 tiles, shuffled
    tiles = items[rng.choice(pool)].reshape(4, 7, 4, 7).transpose(0, 2, 1, 3)
    tiles = tiles.reshape(16, 7, 7)[rng.permutation(16)]
    side = int(rng.integers(config.min_scale, config.max_scale + 1))
    patch = tiles.reshape(4, 4, 7, 7).transpose(0, 2, 1, 3).reshape(28, 28)
    alpha = _resize(np.ascontiguousarray(patch), side) / 255.0
  else:  # a solid rectangle or ellipse
    lo, hi = max(3, config.min_scale // 4), max(4, config.max_scale // 2)
    h, w = rng.integers(lo, hi + 1, 2)
    alpha = np.full((h, w), rng.uniform(0.4, 1.0))
    if kind == 1:
      yy, xx = np.mgrid[0:h, 0:w]
      inside = (((yy + 0.5) / h - 0.5) ** 2 + ((xx + 0.5) / w - 0.5) ** 2
                <= 0.25)
      alpha = alpha * inside
  h, w = alpha.shape
  x, y = rng.integers(0, size - w + 1), rng.integers(0, size - h + 1)
  _paint(canvas, alpha, rng.uniform(0, 255, 3), x, y)


def _draw(rng, items: np.ndarray, labels: np.ndarray, pool: np.ndarray,
          config: DetectionConfig):
  """One canvas.

  Returns (image (H, W, 3) uint8, boxes [(x0, y0, x1, y1)] px, classes,
  item ids).
  """
  size = config.image_size
  canvas = _background(rng, size)
  for _ in range(rng.integers(0, config.max_distractors + 1)):
    _distractor(rng, canvas, items, pool, config)
  boxes, classes, ids = [], [], []
  for _ in range(rng.integers(config.min_items, config.max_items + 1)):
    item_id = int(rng.choice(pool))
    for _ in range(_PLACE_TRIES):
      side = int(rng.integers(config.min_scale, config.max_scale + 1))
      alpha = _resize(items[item_id], side)
      x, y = rng.integers(0, size - side + 1, 2)
      rows, cols = np.nonzero(alpha.any(1))[0], np.nonzero(alpha.any(0))[0]
      if not len(rows):  # an all-zero item resized: nothing to detect
        break
      box = (x + cols[0], y + rows[0], x + cols[-1] + 1, y + rows[-1] + 1)
      if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1]
             or b[3] <= box[1] for b in boxes):
        ground = canvas[box[1]:box[3], box[0]:box[2]].reshape(-1, 3).mean(0)
        _paint(canvas, alpha / 255.0, _contrasting_colour(rng, ground), x, y)
        boxes.append(box)
        classes.append(int(labels[item_id]))
        ids.append(item_id)
        break
  canvas += rng.uniform(0, config.noise_std) * rng.standard_normal(
      canvas.shape, np.float32)
  image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
  return image, boxes, classes, ids


def item_scale(image_size: int) -> int:
  """The studies' largest item side on a canvas: 2/5 of it (64 px at the
  default 160), at most 64 and at least the smallest item (16)."""
  return max(DetectionConfig.min_scale, min(64, image_size * 2 // 5))


def make_split(config: DetectionConfig, split: str,
               data_dir: str | os.PathLike | None = None) -> DetectionSet:
  """Draws `config.num_images(split)` canvases (no cache)."""
  n, size, m = config.num_images(split), config.image_size, config.max_items
  items, labels, pool = _items(split, config, data_dir)
  images = np.zeros((n, size, size, 3), np.uint8)
  boxes = np.zeros((n, m, 4), np.float32)
  classes = np.zeros((n, m), np.int32)
  mask = np.zeros((n, m), bool)
  item_ids = np.full((n, m), -1, np.int32)
  for i in range(n):
    rng = np.random.default_rng([config.seed, _SPLIT_CODE[split], i])
    images[i], xyxy, cls, ids = _draw(rng, items, labels, pool, config)
    k = len(xyxy)
    xyxy = np.asarray(xyxy, np.float64).reshape(k, 4)
    boxes[i, :k] = np.concatenate(
        [(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1) / size
    classes[i, :k], mask[i, :k], item_ids[i, :k] = cls, True, ids
  yolo_loss.check_targets(yolo_loss.Targets(boxes, classes, mask),
                          len(CLASS_NAMES))
  return DetectionSet(split, images, boxes, classes, mask, item_ids)


# --- Cache ---------------------------------------------------------------------
def default_cache_dir() -> pathlib.Path:
  """$MIMUON_DATA_CACHE, else data_text's (~/.cache/mimuon_optax)."""
  return pathlib.Path(os.environ.get(CACHE_ENV) or data_text.DEFAULT_CACHE_DIR)


def cache_path(config: DetectionConfig, split: str,
               cache_dir: str | os.PathLike | None = None,
               data_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """The npz of one split, keyed by every parameter that decides its bytes.

  The other splits' sizes are not in the key, so `small` and `full` share
  their val and test files; the source files' path, size and mtime are.
  """
  params = dataclasses.asdict(config)
  for other in SPLITS:
    del params[f"num_{other}"]
  sources = {str(p.resolve()): (p.stat().st_size, p.stat().st_mtime_ns)
             for p in _source_files(data_dir).values()}
  key = json.dumps([_FORMAT_VERSION, split, config.num_images(split), params,
                    sources], sort_keys=True)
  digest = hashlib.sha1(key.encode()).hexdigest()[:16]
  folder = pathlib.Path(cache_dir or default_cache_dir()) / "fashion_detection"
  return folder / f"{split}-{config.num_images(split)}-{digest}.npz"


def load_split(config: DetectionConfig, split: str,
               cache_dir: str | os.PathLike | None = None,
               data_dir: str | os.PathLike | None = None) -> DetectionSet:
  """`make_split`, read from / written to the cache (`cache_path`)."""
  path = cache_path(config, _check_split(split), cache_dir, data_dir)
  fields = [f.name for f in dataclasses.fields(DetectionSet)][1:]
  if path.exists():
    with np.load(path) as npz:
      return DetectionSet(split, *(npz[f] for f in fields))
  data = make_split(config, split, data_dir)
  path.parent.mkdir(parents=True, exist_ok=True)
  # Write then rename: concurrent processes never read a partial file.
  with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz",
                                   delete=False) as f:
    np.savez(f, **{k: getattr(data, k) for k in fields})
  os.replace(f.name, path)
  return data


def load_splits(config: DetectionConfig,
                cache_dir: str | os.PathLike | None = None,
                data_dir: str | os.PathLike | None = None
                ) -> dict[str, DetectionSet]:
  """{"train", "val", "test"}: each `load_split`."""
  return {s: load_split(config, s, cache_dir, data_dir) for s in SPLITS}


# --- ultralytics' YOLO layout ------------------------------------------------
def write_yolo(sets: Mapping[str, DetectionSet],
               out_dir: str | os.PathLike) -> pathlib.Path:
  """Writes the splits in ultralytics' YOLO layout; returns data.yaml's path.

  `images/<split>/NNNNNN.png`, `labels/<split>/NNNNNN.txt` ("cls cx cy w h"
  normalized, one line a box) and `data.yaml` (path, the splits, names).
  `ultralytics.data.utils.check_det_dataset(path)` and `YOLODataset` read it.
  """
  root = pathlib.Path(out_dir).resolve()
  lines = [f"path: {json.dumps(str(root))}"]
  for split, data in sets.items():
    _check_split(split)
    images_dir, labels_dir = root / "images" / split, root / "labels" / split
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    for i in range(len(data)):
      Image.fromarray(data.images[i]).save(images_dir / f"{i:06d}.png")
      rows = [f"{c} " + " ".join(f"{v:.6f}" for v in box)
              for box, c, real in zip(data.boxes[i], data.classes[i],
                                      data.mask[i]) if real]
      (labels_dir / f"{i:06d}.txt").write_text("".join(r + "\n" for r in rows))
    lines.append(f"{split}: images/{split}")
  lines.append("names:")
  lines += [f"  {i}: {json.dumps(name)}" for i, name in enumerate(CLASS_NAMES)]
  yaml_path = root / "data.yaml"
  yaml_path.write_text("\n".join(lines) + "\n")
  return yaml_path


def main(argv: list[str] | None = None) -> pathlib.Path:
  """Writes a config's three splits in the YOLO layout; prints data.yaml.

    python -m experiments.harness.data_detection --out /tmp/fashion_det
    yolo train data=/tmp/fashion_det/data.yaml model=yolo26n.yaml imgsz=160
  """
  import argparse  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(
      description=main.__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--out", required=True, help="folder for data.yaml")
  parser.add_argument("--cache-dir", default=None,
                      help=f"npz cache (default ${CACHE_ENV} or ~/.cache)")
  parser.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX")
  for field in dataclasses.fields(DetectionConfig):
    parser.add_argument("--" + field.name.replace("_", "-"),
                        type=type(field.default), default=field.default)
  args = vars(parser.parse_args(argv))
  cli.check_out(parser, args["out"])  # before generating any data
  out, cache_dir, data_dir = (args.pop(k) for k in ("out", "cache_dir",
                                                    "data_dir"))
  sets = load_splits(DetectionConfig(**args), cache_dir, data_dir)
  path = write_yolo(sets, out)
  print(path)
  return path


if __name__ == "__main__":
  main()
