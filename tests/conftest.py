"""Shared test helpers: float64 references built with numpy."""

import numpy as np
import pytest

# OPENBLAS_NUM_THREADS=1 (scipy's OpenBLAS vs XLA's threads on 2 cores) is
# set by importing mimuon_optax (mimuon_optax/_platform.py); importing it
# here sets it before any test runs jax linalg, and notebook kernels
# started by nbmake inherit it.
import mimuon_optax  # noqa: F401  pylint: disable=unused-import


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
