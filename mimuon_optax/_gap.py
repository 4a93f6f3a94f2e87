"""The MiMuon gate: the minimum gap between distinct nonzero singular values."""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

# Defaults, relative to the largest singular value s_max of each matrix.
# The spectrum comes from float32 eigvalsh of the small-side Gram. Measured on
# CPU (tests/test_gap.py re-checks at 256): exact zeros come out as
# s <= 7e-4 * s_max (1024 x 3072) and exactly repeated values differ by
# <= 6e-7 * s_max**2 in s**2. RANK_TOL and DUP_TOL sit ~7x and ~15x above.
# The smallest resolvable gap is therefore dup_tol * s_max**2 / (s_i + s_j):
# 5e-6 * s_max at the top of the spectrum, 1e-3 * s_max at the rank floor.
RANK_TOL = 5e-3
DUP_TOL = 1e-5


class GapStats(NamedTuple):
  """Per-matrix spectrum summary used by the gate."""

  min_gap: jax.Array  # shape=(B,), f32; +inf if < 2 distinct nonzero values.
  rel_gap: jax.Array  # shape=(B,), f32; min_gap / s_max (+inf likewise).
  s_max: jax.Array  # shape=(B,), f32; largest singular value.


def singular_values(x_BxMxN: jax.Array) -> jax.Array:
  """Singular values, ascending, from float32 eigvalsh of the small-side Gram.

  Returns shape ``(B, min(M, N))``.
  """
  x = x_BxMxN.astype(jnp.float32)
  if x.shape[-2] > x.shape[-1]:
    x = jnp.swapaxes(x, -1, -2)
  gram_BxKxK = jnp.matmul(x, jnp.swapaxes(x, -1, -2),
                          precision=jax.lax.Precision.HIGHEST)
  eigvals_BxK = jnp.linalg.eigvalsh(gram_BxKxK)
  return jnp.sqrt(jnp.maximum(eigvals_BxK, 0.0))


def spectral_gap(
    x_BxMxN: jax.Array,
    *,
    rank_tol: chex.Numeric = RANK_TOL,
    dup_tol: chex.Numeric = DUP_TOL,
) -> GapStats:
  r"""Minimum gap between distinct nonzero singular values of each matrix.

  With singular values :math:`s_1 \le \dots \le s_k` and
  :math:`s_{\max} = s_k`:

  - :math:`s_i` is nonzero iff :math:`s_i > \text{rank\_tol}\cdot s_{\max}`;
  - :math:`s_i < s_{i+1}` are distinct iff
    :math:`s_{i+1}^2 - s_i^2 > \text{dup\_tol}\cdot s_{\max}^2` (the test is
    on eigenvalues of the Gram, where float32 noise is uniform); values closer
    than that merge into one cluster (single linkage), so a repeated singular
    value contributes no gap;
  - the min gap is :math:`\min (s_{i+1} - s_i)` over consecutive nonzero,
    distinct pairs, and :math:`+\infty` when there are fewer than two
    distinct nonzero values (rank <= 1, all values equal, or a zero matrix).

  Args:
    x_BxMxN: a batch of matrices.
    rank_tol: relative threshold below which a singular value counts as zero.
    dup_tol: relative threshold on squared singular values for distinctness.

  Returns:
    ``GapStats`` with one entry per matrix. NaN/Inf inputs give NaN stats.
  """
  s_BxK = singular_values(x_BxMxN)
  s_max_B = s_BxK[..., -1]
  lo_BxK1, hi_BxK1 = s_BxK[..., :-1], s_BxK[..., 1:]
  nonzero = lo_BxK1 > rank_tol * s_max_B[..., None]
  distinct = (hi_BxK1**2 - lo_BxK1**2) > dup_tol * (s_max_B**2)[..., None]
  gaps = jnp.where(nonzero & distinct, hi_BxK1 - lo_BxK1, jnp.inf)
  min_gap_B = jnp.min(gaps, axis=-1, initial=jnp.inf)
  # NaN inputs: keep the NaN visible instead of reporting +inf.
  min_gap_B = jnp.where(jnp.isnan(s_max_B), jnp.nan, min_gap_B)
  rel_gap_B = jnp.where(jnp.isinf(min_gap_B), min_gap_B,
                        min_gap_B / jnp.where(s_max_B > 0, s_max_B, 1.0))
  return GapStats(min_gap_B, rel_gap_B, s_max_B)
