"""The MiMuon gate: the minimum gap between distinct nonzero singular values."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp

from mimuon_optax import _distributed

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


def small_side_gram(x_BxMxN: jax.Array) -> jax.Array:
  """float32 ``X X^T`` or ``X^T X``, whichever is smaller: ``(B, K, K)``."""
  x = x_BxMxN.astype(jnp.float32)
  if x.shape[-2] > x.shape[-1]:
    x = jnp.swapaxes(x, -1, -2)
  return jnp.matmul(x, jnp.swapaxes(x, -1, -2),
                    precision=jax.lax.Precision.HIGHEST)


def singular_values(x_BxMxN: jax.Array) -> jax.Array:
  """Singular values, ascending, from float32 eigvalsh of the small-side Gram.

  Returns shape ``(B, min(M, N))``.
  """
  eigvals_BxK = jnp.linalg.eigvalsh(small_side_gram(x_BxMxN))
  return jnp.sqrt(jnp.maximum(eigvals_BxK, 0.0))


def _gap_stats(s_BxK, rank_tol, dup_tol) -> GapStats:
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
  return _gap_stats(singular_values(x_BxMxN), rank_tol, dup_tol)


def spectral_gaps(
    stacks: Sequence[jax.Array],
    *,
    rank_tol: chex.Numeric = RANK_TOL,
    dup_tol: chex.Numeric = DUP_TOL,
    mesh: jax.sharding.Mesh | None = None,
    mesh_axes: _distributed.MeshAxes = None,
) -> list[GapStats]:
  """:func:`spectral_gap` of many stacks ``(B_i, M_i, N_i)`` in ONE eigvalsh.

  Grams are zero-padded to the largest small side K: ``diag(G, 0)`` has the
  eigenvalues of G plus zeros, and zeros fall below the rank floor, so the
  statistics are unchanged. One batched call is what accelerators want, and
  on CPU it avoids running several LAPACK eigvalsh kernels concurrently,
  which deadlocks jaxlib 0.10's CPU thread pool on a 2-core machine.

  With a ``mesh``, equal-shape stacks are concatenated, zero-padded and split
  over the devices of ``mesh_axes`` (default: all) as whole matrices
  (:func:`~mimuon_optax._distributed.shard_stacks`); each device forms the
  Grams of its own matrices and runs one eigvalsh on them, so no Gram is
  ever all-reduced. Zero padding matrices have gap +inf and are dropped.
  The statistics come back replicated over the mesh.
  """
  if not stacks:
    return []
  if mesh is None:
    return _padded_gaps(stacks, rank_tol, dup_tol, jnp.linalg.eigvalsh)
  # On CPU every simulated device runs its program on one shared thread pool.
  # jaxlib's batched LAPACK eigvalsh fans its batch out onto that pool and
  # blocks until done; if the pool's threads are parked in another device's
  # collective, that never happens (deadlock). One matrix at a time runs
  # inline. Accelerators keep the batched call.
  eigvalsh = jnp.linalg.eigvalsh
  if _distributed.on_cpu(mesh):
    eigvalsh = lambda g_BxKxK: jax.lax.map(jnp.linalg.eigvalsh, g_BxKxK)
  local = lambda xs: _padded_gaps(xs, rank_tol, dup_tol, eigvalsh)
  stats = _distributed.grouped_shard_stacks(local, stacks, mesh, mesh_axes)
  return _distributed.replicate(stats, mesh)  # B floats each: gather them.


def _padded_gaps(stacks, rank_tol, dup_tol, eigvalsh) -> list[GapStats]:
  grams = [small_side_gram(x) for x in stacks]
  k_max = max(g.shape[-1] for g in grams)
  padded = jnp.concatenate([
      jnp.pad(g, ((0, 0), (0, k_max - g.shape[-1]), (0, k_max - g.shape[-1])))
      for g in grams])
  s_BxK = jnp.sqrt(jnp.maximum(eigvalsh(padded), 0.0))
  stats = _gap_stats(s_BxK, rank_tol, dup_tol)
  out, start = [], 0
  for g in grams:
    stop = start + g.shape[0]
    out.append(GapStats(*(field[start:stop] for field in stats)))
    start = stop
  return out
