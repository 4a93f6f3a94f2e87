"""Shared test helpers: float64 references built with numpy, and the guard
that fails a test run which wrote into the checkout."""

import fnmatch
import os
import pathlib
import subprocess

import numpy as np
import pytest

# OPENBLAS_NUM_THREADS=1 (scipy's OpenBLAS vs XLA's threads on 2 cores) is
# set by importing mimuon_optax (mimuon_optax/_platform.py); importing it
# here sets it before any test runs jax linalg, and notebook kernels
# started by nbmake inherit it.
import mimuon_optax  # noqa: F401  pylint: disable=unused-import

# ultralytics (the YOLO26 reference of the parity tests) sets numpy's print
# options when first imported (its utils/__init__.py: a {:11.5g} float
# format), which would change the doctests' output in the same xdist
# worker: import it here, once, and restore numpy's own.
_PRINT_OPTIONS = np.get_printoptions()
try:
  import ultralytics.utils  # noqa: F401  pylint: disable=unused-import
except ImportError:  # the test extra is not installed (make test-floor)
  pass
np.set_printoptions(**_PRINT_OPTIONS)


def random_orthogonal(rng, n):
  q, r = np.linalg.qr(rng.standard_normal((n, n)))
  return q * np.sign(np.diag(r))


def matrix_with_singular_values(rng, m, n, s):
  """U diag(s) V^T in float64 with Haar-random U (m x m) and V (n x n)."""
  k = min(m, n)
  s = np.asarray(s, np.float64)
  assert s.shape == (k,)
  sigma = np.zeros((m, n))
  sigma[:k, :k] = np.diag(s)
  return random_orthogonal(rng, m) @ sigma @ random_orthogonal(rng, n).T


def polar_factor(x):
  """U V^T of x in float64 (the exact orthogonalization)."""
  u, _, vt = np.linalg.svd(np.asarray(x, np.float64), full_matrices=False)
  return u @ vt


def pytest_collection_modifyitems(items):
  """Notebooks (nbmake) run in `make test`'s slow step."""
  for item in items:
    if item.path.suffix == '.ipynb':
      item.add_marker(pytest.mark.slow)


@pytest.fixture
def rng():
  return np.random.default_rng(0)


# --- No test writes into the checkout ---------------------------------------
# Every test works in tmp_path. A run (`make test`, or any pytest call) that
# leaves `git status --porcelain --ignored` different from how it found it
# fails, listing the paths, apart from these build and cache folders (any
# path component matching one of them). docs/_build is tests/test_docs.py's
# site, built as `make docs` builds it.
ROOT = pathlib.Path(__file__).resolve().parents[1]
ALLOWED_DIRS = (".venv*", "__pycache__", ".pytest_cache", "*.egg-info",
                ".mypy_cache", ".ruff_cache", ".ipynb_checkpoints")
ALLOWED_TOP = ("build", "dist", "docs/_build")
_SNAPSHOT = pytest.StashKey[dict]()


def _allowed(path: str) -> bool:
  parts = path.rstrip("/").split("/")
  if any(path.rstrip("/") == top or path.startswith(top + "/")
         for top in ALLOWED_TOP):
    return True
  return any(fnmatch.fnmatch(part, pattern)
             for part in parts for pattern in ALLOWED_DIRS)


def checkout_snapshot(root: pathlib.Path) -> dict[str, tuple] | None:
  """What `git status --porcelain --ignored` says of every file of `root`.

  Returns {path: (status, mtime_ns, size)} for each untracked, ignored or
  changed file (one entry per file, inside ignored folders too, so that a
  rewritten runs/demo/results.md counts), build and cache folders left out;
  None when `root` is not a git checkout (an unpacked sdist).
  """
  try:
    proc = subprocess.run(
        ["git", "status", "--porcelain=v1", "-z", "--ignored",
         "--untracked-files=all", "--no-renames"],
        cwd=root, capture_output=True, text=True, timeout=120)
  except FileNotFoundError:
    return None
  if proc.returncode != 0:
    return None
  snapshot = {}
  for entry in proc.stdout.split("\0"):
    if not entry:
      continue
    status, path = entry[:2], entry[3:]
    if _allowed(path):
      continue
    try:
      st = os.lstat(root / path)
      snapshot[path] = (status, st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
      snapshot[path] = (status, None, None)
  return snapshot


def checkout_changes(before: dict, after: dict) -> list[str]:
  """Paths that are new, rewritten or gone between two snapshots."""
  return sorted(p for p in before.keys() | after.keys()
                if before.get(p) != after.get(p))


def pytest_sessionstart(session):
  """Snapshot the checkout (once, in the xdist controller, not per worker)."""
  if hasattr(session.config, "workerinput"):
    return
  snapshot = checkout_snapshot(ROOT)
  if snapshot is not None:
    session.config.stash[_SNAPSHOT] = snapshot


def pytest_sessionfinish(session):
  """Fail the run if the checkout changed while it ran."""
  before = session.config.stash.get(_SNAPSHOT, None)
  if before is None:
    return
  after = checkout_snapshot(ROOT)
  changed = checkout_changes(before, after or {})
  if not changed:
    return
  shown = changed[:50] + ([f"... and {len(changed) - 50} more"]
                          if len(changed) > 50 else [])
  message = (
      f"the test run changed {len(changed)} path(s) in the checkout {ROOT} "
      "(tests must write under tmp_path only; if you edited these files "
      "yourself while the tests ran, run them again):\n  "
      + "\n  ".join(shown))
  reporter = session.config.pluginmanager.get_plugin("terminalreporter")
  if reporter is not None:
    reporter.write_sep("=", "checkout changed by the tests", red=True)
    reporter.write_line(message)
  else:
    print(message)
  session.exitstatus = pytest.ExitCode.TESTS_FAILED
