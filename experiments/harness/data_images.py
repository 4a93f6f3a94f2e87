"""Image classification data: Fashion-MNIST (IDX files) and sklearn digits.

Fashion-MNIST is read from the four IDX files that Debian's
`dataset-fashion-mnist` package installs (`apt-get install
dataset-fashion-mnist` -> /usr/share/datasets/fashion-mnist/; gzipped or
not). `digits` (sklearn's 1797 8x8 images, shipped inside scikit-learn) is the
tiny fallback that needs no download.

  data = load_images("fashion")          # or "digits"
  data.x_train  # (N, H, W, 1) float32, standardized with train mean/std
  data.y_train  # (N,) int32
  small = subset(data, 1000, seed=0)     # the first N of a seeded permutation
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pathlib

import numpy as np

DEFAULT_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_APT = "apt-get install dataset-fashion-mnist"
DATASETS = ("fashion", "digits")
_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


@dataclasses.dataclass(frozen=True)
class ImageData:
  """A train/test split of standardized images (NHWC) and integer labels."""

  name: str
  x_train: np.ndarray  # (N, H, W, C) float32
  y_train: np.ndarray  # (N,) int32
  x_test: np.ndarray  # (M, H, W, C) float32
  y_test: np.ndarray  # (M,) int32
  num_classes: int

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.x_train.shape[1:])


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """An IDX array (big-endian header: magic 0x0000 | dtype | ndim, dims)."""
  path = pathlib.Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rb") as f:
    data = f.read()
  if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise ValueError(f"{path}: not an unsigned-byte IDX file")
  ndim = data[3]
  dims = np.frombuffer(data, ">u4", count=ndim, offset=4).astype(int)
  array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if array.size != np.prod(dims):
    raise ValueError(f"{path}: {array.size} values for shape {tuple(dims)}")
  return array.reshape(dims)


def _find(folder: pathlib.Path, stem: str) -> pathlib.Path:
  for name in (stem + ".gz", stem):
    if (folder / name).exists():
      return folder / name
  raise FileNotFoundError(
      f"Fashion-MNIST file {stem}[.gz] not found in {folder}. Install it with"
      f" `{FASHION_APT}` (Debian/Ubuntu, puts it in {DEFAULT_FASHION_DIR}),"
      " pass --data-dir, or use --dataset digits.")


def _standardize(x_train: np.ndarray, x_test: np.ndarray, scale: float):
  x_train = x_train.astype(np.float32) / scale
  x_test = x_test.astype(np.float32) / scale
  mean, std = x_train.mean(), x_train.std()
  return (x_train - mean) / std, (x_test - mean) / std


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> ImageData:
  """60k/10k 28x28 grayscale images in 10 classes."""
  folder = pathlib.Path(data_dir or DEFAULT_FASHION_DIR)
  arrays = {k: read_idx(_find(folder, v)) for k, v in _FASHION_FILES.items()}
  x_train, x_test = _standardize(arrays["x_train"][..., None],
                                 arrays["x_test"][..., None], 255.0)
  return ImageData("fashion", x_train, arrays["y_train"].astype(np.int32),
                   x_test, arrays["y_test"].astype(np.int32), 10)


def load_digits_data(test_fraction: float = 0.2, seed: int = 0) -> ImageData:
  """sklearn's 1797 8x8 digits, split by a seeded permutation (1438/359)."""
  from sklearn.datasets import load_digits  # optional dependency
  digits = load_digits()
  images = digits.images[..., None]  # (1797, 8, 8, 1), values 0..16
  order = np.random.default_rng(seed).permutation(len(images))
  n_test = int(round(test_fraction * len(images)))
  test, train = order[:n_test], order[n_test:]
  x_train, x_test = _standardize(images[train], images[test], 16.0)
  labels = digits.target.astype(np.int32)
  return ImageData("digits", x_train, labels[train], x_test, labels[test], 10)


def load_images(name: str, data_dir: str | os.PathLike | None = None
                ) -> ImageData:
  if name == "fashion":
    return load_fashion_mnist(data_dir)
  if name == "digits":
    return load_digits_data()
  raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")


def subset(data: ImageData, n: int | None, seed: int = 0) -> ImageData:
  """The first `n` training examples of a seeded permutation (test unchanged).

  Nested: for one seed, `subset(d, 1000)` is contained in `subset(d, 5000)`.
  """
  if n is None or n >= len(data.x_train):
    return data
  keep = np.random.default_rng(seed).permutation(len(data.x_train))[:n]
  return dataclasses.replace(data, x_train=data.x_train[keep],
                             y_train=data.y_train[keep])


def split_validation(data: ImageData, n_val: int, seed: int
                     ) -> tuple[ImageData, tuple[np.ndarray, np.ndarray]]:
  """Holds out `n_val` training examples (a seeded permutation) for choosing
  hyperparameters: (data without them, (x_val, y_val)); test unchanged."""
  if not 0 < n_val < len(data.x_train):
    raise ValueError(f"n_val must be in (0, {len(data.x_train)}), got {n_val}")
  order = np.random.default_rng(seed).permutation(len(data.x_train))
  val, train = order[:n_val], np.sort(order[n_val:])
  return (dataclasses.replace(data, x_train=data.x_train[train],
                              y_train=data.y_train[train]),
          (data.x_train[val], data.y_train[val]))


def batch_indices(num_examples: int, batch_size: int, seed: int,
                  step: int) -> np.ndarray:
  """Indices of the examples in step `step`'s batch: a pure function of
  (seed, step), drawn with replacement."""
  rng = np.random.default_rng([seed, step])
  return rng.integers(0, num_examples, size=batch_size)
