"""Shared test helpers: float64 references built with numpy."""

import os

# jaxlib's CPU LAPACK (the MiMuon gap test's eigensolver) is scipy's OpenBLAS;
# its threads fight XLA's on small machines (100x slower, and hangs seen on
# 2 cores). Must be set before numpy/scipy/jax load; notebook kernels started
# by nbmake inherit it.
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest


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


@pytest.fixture
def rng():
  return np.random.default_rng(0)
