"""The MiMuon gate's measurement: kappa, the minimum singular-value gap.

kappa is the paper's quantity, taken literally: the smallest difference
between consecutive *nonzero* singular values. Nothing is merged, so an
exactly repeated singular value gives kappa = 0.

How the spectrum is computed (chosen by measurement against float64 numpy
SVD on planted spectra, 64x192 .. 1024x3072 and 3072x1024, levels
0.03..1 s_max; tests/test_gap.py re-checks it):

- ``"float64"``: the small-side Gram in float64 and its eigenvalues with no
  eigenvectors (``lax.linalg.tridiagonal`` + ``eigh_tridiagonal``). Max error
  of any singular value <= 1e-14 s_max; 183 ms for a 1024x3072 matrix on a
  2-core CPU, against 299 ms for float64 ``eigvalsh`` (which also computes
  eigenvectors) and 291 ms for a float32 SVD.
- ``"host"``: the same float64 Gram (BLAS ``syrk``) and values-only LAPACK
  ``syevr``, on the host CPU through a pure callback
  (``_callback.host_callback``). The momenta go
  to the host in their own dtype; float32 statistics come back, so the
  device runs no float64 at all (TPU has none). Same statistics, rank floor
  and resolution as ``"float64"``; the matrices are spread over the host's
  cores (``_platform.host_gate_workers``).
- ``"float32"``: a float32 SVD of the matrix itself (values only). Error up
  to 3-5e-6 s_max at 1024 wide, 6e-7 s_max at 64 wide: blind to the gaps
  of real momenta at width >= 256 (it took the SGD branch on every spiked
  momentum-like matrix at 256x768 and 1024x3072). Kept for comparison; a
  float32 Gram's eigenvalues are not offered: their error of ~1e-6
  s_max**2 in s**2 becomes ~5e-5 s_max in s at level 0.01.
- ``"auto"``: chosen per backend by ``_platform.auto_gate_precision``
  (``"host"`` on CPU and TPU, ``"float64"`` on GPU), with the measurement.

Newton-Schulz's own first Gram is not reused: it is formed in ``ns_dtype``
(bf16 by default, relative error ~4e-3), far coarser than the gaps it would
have to resolve.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from scipy.linalg import blas as scipy_blas
from scipy.linalg import lapack as scipy_lapack

from mimuon_optax import _callback
from mimuon_optax import _context
from mimuon_optax import _distributed
from mimuon_optax import _matrix
from mimuon_optax import _platform

PRECISIONS = ('auto', 'float64', 'host', 'float32')
EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


class GapStats(NamedTuple):
  """Per-matrix spectrum summary; every field has shape ``(B,)``, float32.

  With ``s_1 <= ... <= s_r`` the nonzero singular values (``r`` of them):
  """

  min_gap: jax.Array  # kappa = min(s_{i+1} - s_i); +inf if r < 2.
  rel_gap: jax.Array  # kappa / s_max.
  rho: jax.Array  # kappa * sqrt(r) / median_gap; size-free.
  median_gap: jax.Array  # median(s_{i+1} - s_i); +inf if r < 2.
  s_max: jax.Array  # largest singular value.
  rank: jax.Array  # r, the number of singular values above the rank floor.
  resolution: jax.Array  # gaps <= this (absolute) count as 0.


def resolve_precision(precision: str,
                      mesh: jax.sharding.Mesh | None = None) -> str:
  """``precision`` checked, with ``"auto"`` resolved for ``mesh``."""
  if precision not in PRECISIONS:
    raise ValueError(f'precision must be one of {PRECISIONS}, got'
                     f' {precision!r}')
  if precision == 'auto':
    return _platform.auto_gate_precision(mesh)
  if precision == 'host' and _platform.host_callback_hangs(mesh):
    raise ValueError(
        'precision="host" with several CPU devices in one process can'
        ' deadlock XLA:CPU (see _platform.host_callback_hangs); use'
        ' precision="float64" (or "auto"), or one CPU device per process.')
  return precision


def _real_dtype(x) -> np.dtype:
  return np.dtype(np.complex64 if jnp.iscomplexobj(x) else np.float32)


def _wide(x_BxMxN, xp=jnp) -> tuple[Any, Any]:
  """float32 (complex64), with M <= N, scaled to max |x| in [1/2, 1).

  The scale, a power of two 2^e (``_matrix.pow2_exponent``; exact), makes
  every later step independent of the input's magnitude (no overflow when
  squaring 1e20 entries). Transposing keeps the singular values (of a
  complex matrix too). Returns the scaled matrices and e, shape (B,).
  Inf/NaN inputs become NaN, so that every statistic is NaN. ``xp``:
  ``jax.numpy``, or ``numpy`` on the host, where a real matrix takes three
  passes over its entries (max, min, scaling), the same numbers bit for bit.
  """
  if xp is np and not np.iscomplexobj(x_BxMxN):
    x = x_BxMxN.astype(np.float32, copy=False)
    if x.shape[-2] > x.shape[-1]:
      x = np.swapaxes(x, -1, -2)
    top_B = (np.maximum(x.max(axis=(-2, -1)), -x.min(axis=(-2, -1)))
             if x.size else np.zeros(x.shape[:-2], np.float32))
    finite_B = np.isfinite(top_B)  # NaN or Inf anywhere: NaN or Inf here
    exponent_B = np.frexp(np.where(finite_B & (top_B > 0), top_B,
                                   np.float32(0.5)))[1]
    w = np.ldexp(x, -exponent_B[:, None, None])
    w[~finite_B] = np.nan
    return w, exponent_B
  x = x_BxMxN.astype(_real_dtype(x_BxMxN))
  if x.shape[-2] > x.shape[-1]:
    x = xp.swapaxes(x, -1, -2)
  exponent_B11 = _matrix.pow2_exponent(x, xp)
  finite_B11 = xp.isfinite(xp.max(xp.abs(x), axis=(-2, -1), keepdims=True))
  x = xp.where(finite_B11, _matrix.ldexp(x, -exponent_B11, xp), xp.nan)
  return x, exponent_B11[:, 0, 0]


def _eigvals_only(gram_BxKxK: jax.Array) -> jax.Array:
  """Ascending eigenvalues of symmetric matrices, without eigenvectors.

  Bisection stops at k eps |T|, the error the tridiagonalization already
  makes (resolution_factor's bound); 20% faster than bisecting to eps |T|.
  """
  _, diag_BxK, off_BxK1, _ = jax.lax.linalg.tridiagonal(gram_BxKxK)
  k = gram_BxKxK.shape[-1]
  eps = jnp.finfo(gram_BxKxK.dtype).eps
  norm_B = jnp.max(jnp.abs(diag_BxK), -1) + 2 * jnp.max(jnp.abs(off_BxK1), -1,
                                                        initial=0)
  eig = lambda d, e, t: jsl.eigh_tridiagonal(d, e, eigvals_only=True, tol=t)
  return jnp.sort(jax.vmap(eig)(diag_BxK, off_BxK1, k * eps * norm_B),
                  axis=-1)


def resolution_factor(precision: str, k: int) -> float:
  """Numerical error bound of one gap, in units of s_max.

  float64 Gram: eigenvalue error <= ~k eps64 s_max**2, i.e. an error in s of
  k eps64 s_max**2 / (2 s), largest at the rank floor s = max(m, n) eps32
  s_max >= k eps32 s_max; so 4 eps64 / eps32 (7e-9) bounds every gap. float32
  SVD: 4 sqrt(k) eps32 (1.5e-5 at k = 1024; measured 3-5e-6).
  """
  if precision in ('float64', 'host'):
    return 4 * EPS64 / EPS32
  return 4 * math.sqrt(k) * EPS32


def rounding_factor(m: int, n: int) -> float:
  """Typical singular-value shift from rounding the entries to float32.

  Rounding each entry by <= eps32 / 2 relative is a random-like matrix E
  with ||E||_2 ~ (eps32 / 2) rms(x) (sqrt(m) + sqrt(n)); rms(x) =
  ||X||_F / sqrt(mn). Returned in units of ||X||_F. It bounds how far
  rounding moves one singular value (first order: u^T E v, ~sqrt(m n)
  times smaller), so gaps below it may be rounding rather than spectrum.
  """
  return 0.5 * EPS32 * (math.sqrt(m) + math.sqrt(n)) / math.sqrt(m * n)


def _stats(s_BxK, rank_floor_B, resolution_B, xp=jnp) -> GapStats:
  """The gate's statistics from ascending singular values (any float dtype).

  ``xp`` is ``jax.numpy`` on the device or ``numpy`` on the host
  (``precision="host"``): one definition for every path.
  """
  dtype = s_BxK.dtype
  s_max_B = s_BxK[:, -1]
  nonzero_BxK = s_BxK > rank_floor_B[:, None]
  rank_B = xp.sum(nonzero_BxK, axis=-1)
  # s is ascending, so a pair is nonzero iff its lower value is.
  pair_BxK1 = nonzero_BxK[:, :-1]
  gaps_BxK1 = s_BxK[:, 1:] - s_BxK[:, :-1]
  gaps_BxK1 = xp.where(gaps_BxK1 <= resolution_B[:, None], 0, gaps_BxK1)
  gaps_BxK1 = xp.where(pair_BxK1, gaps_BxK1, xp.inf)
  inf = xp.asarray(xp.inf, dtype)
  if gaps_BxK1.shape[-1] == 0:  # 1 x N or N x 1: never two values.
    kappa_B = median_B = xp.full_like(s_max_B, xp.inf)
  else:
    sorted_BxK1 = xp.sort(gaps_BxK1, axis=-1)
    kappa_B = sorted_BxK1[:, 0]
    n_B = xp.maximum(rank_B - 1, 1)
    at = lambda i_B: xp.take_along_axis(sorted_BxK1, i_B[:, None], -1)[:, 0]
    median_B = 0.5 * (at((n_B - 1) // 2) + at(n_B // 2))
  sqrt_r_B = xp.sqrt(rank_B.astype(dtype))
  few = rank_B < 2
  rho_B = xp.where(kappa_B > 0, kappa_B * sqrt_r_B / median_B, 0)
  rel_B = kappa_B / xp.where(s_max_B > 0, s_max_B, 1)
  nan_B = xp.isnan(s_max_B)
  finish = lambda v: xp.where(nan_B, xp.nan, xp.where(few, inf, v))
  return GapStats(
      min_gap=finish(kappa_B), rel_gap=finish(rel_B), rho=finish(rho_B),
      median_gap=finish(median_B), s_max=s_max_B, rank=rank_B,
      resolution=resolution_B)


def _rank_tol(rank_tol, shape) -> float:
  """numpy ``matrix_rank``'s default for float32 input: max(M, N) * eps."""
  return max(shape[-2:]) * EPS32 if rank_tol is None else float(rank_tol)


def _factors(stacks, rank_tol, precision, xp=np):
  """Per matrix: rank floor, method resolution, rounding (units of s_max)."""
  per_matrix = lambda f: np.concatenate(
      [np.full(x.shape[0], f(x), np.float64) for x in stacks])
  return (per_matrix(lambda x: _rank_tol(rank_tol, x.shape)),
          per_matrix(lambda x: resolution_factor(precision,
                                                 min(x.shape[-2:]))),
          per_matrix(lambda x: rounding_factor(*x.shape[-2:])))


def _finish(s_BxK, fro_B, exponent_B, factors, xp=jnp) -> GapStats:
  """GapStats (float32, in the input's scale) from scaled singular values.

  Computed in ``s_BxK``'s dtype (float64 or float32): the resolution, the
  statistics, then the power-of-two scaling of :func:`_wide` is undone on
  the absolute quantities.
  """
  rank_rel, res_rel, round_rel = (xp.asarray(f, s_BxK.dtype) for f in factors)
  s_max_B = s_BxK[:, -1]
  resolution_B = xp.maximum(res_rel * s_max_B,
                            round_rel * fro_B.astype(s_BxK.dtype))
  stats = _stats(s_BxK, rank_rel * s_max_B, resolution_B, xp)
  stats = GapStats(*(f.astype(np.int32 if f.dtype.kind in 'iu' else
                              np.float32) for f in stats))
  unscale = lambda v: xp.ldexp(v, exponent_B).astype(np.float32)
  return stats._replace(min_gap=unscale(stats.min_gap),
                        median_gap=unscale(stats.median_gap),
                        s_max=unscale(stats.s_max),
                        resolution=unscale(stats.resolution))


def _split(stats: GapStats, stacks) -> list[GapStats]:
  """One GapStats per stack from one over their concatenation."""
  out, start = [], 0
  for x in stacks:
    stop = start + x.shape[0]
    out.append(GapStats(*(field[start:stop] for field in stats)))
    start = stop
  return out


def _padded_stats(stacks, rank_tol, precision, eigvals_only) -> list[GapStats]:
  """One spectrum call for all stacks, zero-padded to one size.

  Zero padding adds zero singular values only, which fall below the rank
  floor, so the statistics are unchanged. One batched call is what
  accelerators want, and on CPU it never runs several LAPACK kernels at
  once (which deadlocked jaxlib's CPU thread pool on 2 cores).
  """
  if precision == 'host':
    return _host_stats(stacks, rank_tol)
  wide, exponents = zip(*(_wide(x) for x in stacks))
  factors = _factors(stacks, rank_tol, precision)
  fro_B = jnp.concatenate([jnp.linalg.norm(w, axis=(-2, -1)) for w in wide])
  exponent_B = jnp.concatenate(exponents)
  k_max = max(w.shape[-2] for w in wide)
  if precision == 'float32':
    n_max = max(w.shape[-1] for w in wide)
    padded = jnp.concatenate([
        jnp.pad(w, ((0, 0), (0, k_max - w.shape[-2]),
                    (0, n_max - w.shape[-1]))) for w in wide])
    s_BxK = jnp.sort(jnp.linalg.svd(padded, compute_uv=False), axis=-1)
    return _split(_finish(s_BxK, fro_B, exponent_B, factors), stacks)
  with _platform.enable_x64():
    grams = []
    for w in wide:
      w = w.astype(jnp.promote_types(w.dtype, jnp.float64))
      g = jnp.matmul(w, jnp.conj(jnp.swapaxes(w, -1, -2)))
      k = w.shape[-2]
      grams.append(jnp.pad(g, ((0, 0), (0, k_max - k), (0, k_max - k))))
    eig_BxK = eigvals_only(jnp.concatenate(grams))
    s_BxK = jnp.sqrt(jnp.maximum(eig_BxK, 0.0))
    return _split(_finish(s_BxK, fro_B, exponent_B, factors), stacks)


# --- precision="host": the spectrum in float64 on the host CPU -------------

def _host_singular_values(w_MxN: np.ndarray) -> np.ndarray:
  """Ascending singular values of one scaled wide matrix, float64, on host.

  The float64 (complex128) Gram by BLAS ``syrk`` (``herk``), its eigenvalues
  by LAPACK ``syevr`` (``heevr``) without eigenvectors (tridiagonalization,
  then root-free QR; 15-20% faster than ``syevd`` at k = 256 on a 2-core
  CPU, same numbers to rounding). A NaN matrix (from Inf/NaN input) gives
  NaN values without calling LAPACK.
  """
  k = w_MxN.shape[0]
  if not np.isfinite(w_MxN).all():
    return np.full(k, np.nan)
  # Both fill and read the lower triangle, in place (overwrite_a).
  if np.iscomplexobj(w_MxN):
    gram = scipy_blas.zherk(1.0, w_MxN.astype(np.complex128), lower=1)
    eig, _, _, _, info = scipy_lapack.zheevr(
        gram, compute_v=0, lower=1, overwrite_a=1)
  else:
    gram = scipy_blas.dsyrk(1.0, w_MxN.astype(np.float64), lower=1)
    eig, _, _, _, info = scipy_lapack.dsyevr(
        gram, compute_v=0, lower=1, overwrite_a=1)
  if info != 0:
    raise RuntimeError(f'precision="host": LAPACK syevr/heevr failed on a'
                       f' {w_MxN.shape} matrix (info={info}).')
  return np.sqrt(np.maximum(np.sort(eig[:k]), 0.0))


def _host_matrix(x_MxN: np.ndarray) -> tuple[Any, Any, Any]:
  """One matrix's scaled singular values, Frobenius norm and exponent.

  The whole host job of one matrix, so that a worker thread does all of it
  and the callback that starts the jobs returns at once: :func:`_wide`'s
  scaling, then :func:`_host_singular_values`.
  """
  w, exponent = _wide(x_MxN[None], np)
  return (_host_singular_values(w[0]), np.linalg.norm(w, axis=(-2, -1))[0],
          exponent[0])


# Seconds a result may take on the host before the step raises instead of
# waiting on: far above any real spectrum (a 8192 x 24576 float64 Gram and
# eigensolve take ~1 min on one core).
HOST_TIMEOUT_S = 900.0


def _host_submit(stacks, rank_tol) -> Callable[[], list[GapStats]]:
  """Starts every matrix's spectrum on the host pool; returns a collector.

  Runs on the host, inside a callback: the matrices arrive in their own
  dtype (``mu_dtype``) and are copied, so the device buffers may go; each
  matrix is one job on :func:`_platform.host_executor`'s threads
  (:func:`_host_matrix`: scaled exactly as on the device, then its float64
  spectrum), so the callback returns after the copy alone. The
  collector waits for the jobs (at most ``HOST_TIMEOUT_S`` each) and returns
  numpy GapStats per stack.
  """
  pool = _platform.host_executor()
  # Copies (the callback's arrays may alias device buffers), then one job a
  # matrix: scaling, float64 Gram and spectrum all run on the threads.
  jobs = [(x.shape, [pool.submit(_host_matrix, m) for m in np.array(x)])
          for x in stacks]

  def collect() -> list[GapStats]:
    out = []
    with np.errstate(divide='ignore', invalid='ignore'):
      for shape, futures in jobs:
        if futures:
          s, fro, exponent = (np.stack(v) for v in zip(
              *(f.result(timeout=HOST_TIMEOUT_S) for f in futures)))
        else:  # An empty stack.
          s, fro, exponent = (np.zeros((0, min(shape[-2:]))), np.zeros(0),
                              np.zeros(0, np.int32))
        factors = _factors([jax.ShapeDtypeStruct(shape, np.float32)],
                           rank_tol, 'host')
        out.append(_finish(s, fro, exponent, factors, np))
    return out

  return collect


def _stats_shapes(stacks) -> list[GapStats]:
  # Shapes only (pure_callback's result_shape_dtypes), not arrays.
  return [GapStats(*(jax.ShapeDtypeStruct(  # type: ignore[arg-type]
      x.shape[:1], jnp.int32 if f == 'rank' else jnp.float32)
      for f in GapStats._fields)) for x in stacks]


def _host_stats(stacks, rank_tol) -> list[GapStats]:
  """:func:`_padded_stats` with ``precision="host"``: one ``pure_callback``.

  The only device-to-host transfer is the stacks themselves, in their own
  dtype; the host returns float32/int32 statistics, so the device part of
  the program has no float64 at all (what a TPU needs). An exception on the
  host surfaces as a Python error from the jitted call.
  """
  return _callback.host_callback(
      lambda *xs: _host_submit(xs, rank_tol)(), _stats_shapes(stacks),
      *stacks)


class _Pending:
  """Host jobs started by one callback and collected by a later one."""

  def __init__(self):
    self._lock = threading.Lock()
    self._next = 0
    self._jobs: dict[int, Callable[[], list[GapStats]]] = {}

  def start(self, rank_tol, *stacks) -> np.ndarray:
    collect = _host_submit(stacks, rank_tol)
    with self._lock:
      self._next = self._next % (2**31 - 1) + 1
      self._jobs[self._next] = collect
      return np.asarray(self._next, np.int32)

  def finish(self, ticket, dependency) -> list[GapStats]:
    del dependency  # Only orders this callback after the device work.
    with self._lock:
      collect = self._jobs.pop(int(ticket))
    return collect()


_PENDING = _Pending()


def start_host_gaps(
    stacks: Sequence[jax.Array], *, rank_tol: float | None = None,
) -> tuple[jax.Array, Callable[[jax.Array], list[GapStats]]]:
  """``precision="host"`` in two halves, so device work can run in between.

  Returns ``(ticket, finish)``: the callback behind ``ticket`` hands the
  matrices to the host's threads and returns at once; ``finish(dependency)``
  collects the statistics (one :class:`GapStats` per stack, as
  :func:`spectral_gaps`) in a second callback, which XLA runs only once
  ``dependency`` (e.g. a scalar of the Newton-Schulz output) is computed.
  Make the device work consume ``ticket`` first (``lax.optimization_barrier``)
  so that it starts after the host jobs: XLA runs a blocking callback and
  the device ops one after the other, so the single-callback path cannot
  overlap them. Same numbers as the single callback, bit for bit.
  """
  ticket = _callback.host_callback(
      functools.partial(_PENDING.start, rank_tol),
      jax.ShapeDtypeStruct((), jnp.int32), *stacks)

  def finish(dependency: jax.Array) -> list[GapStats]:
    return _callback.host_callback(_PENDING.finish, _stats_shapes(stacks),
                                   ticket, dependency)

  return ticket, finish


def singular_values(x_BxMxN: jax.Array, *, precision: str = 'auto'
                    ) -> jax.Array:
  """Singular values, ascending, shape ``(B, min(M, N))``, float32.

  Computed as the gate computes them (see :func:`spectral_gap`).
  """
  precision = resolve_precision(precision)
  if precision == 'host':
    def host(x):
      w, exponent_B = _wide(np.asarray(x), np)
      s_BxK = np.stack(list(_platform.host_executor().map(
          _host_singular_values, w)))
      return np.ldexp(s_BxK, exponent_B[:, None]).astype(np.float32)
    k = min(x_BxMxN.shape[-2:])
    return _callback.host_callback(
        host, jax.ShapeDtypeStruct((x_BxMxN.shape[0], k), jnp.float32),
        x_BxMxN)
  w, exponent_B = _wide(x_BxMxN)
  if precision == 'float32':
    s = jnp.sort(jnp.linalg.svd(w, compute_uv=False), axis=-1)
  else:
    with _platform.enable_x64():
      w = w.astype(jnp.promote_types(w.dtype, jnp.float64))
      eig = _eigvals_only(jnp.matmul(w, jnp.conj(jnp.swapaxes(w, -1, -2))))
      s = jnp.sqrt(jnp.maximum(eig, 0.0)).astype(jnp.float32)
  return jnp.ldexp(s, exponent_B[:, None])


def spectral_gap(
    x_BxMxN: jax.Array,
    *,
    rank_tol: float | None = None,
    precision: str = 'auto',
) -> GapStats:
  r"""kappa, the minimum gap between nonzero singular values, per matrix.

  With singular values :math:`s_1 \le \dots \le s_k` of an ``M x N``
  matrix and :math:`s_{\max} = s_k`:

  - :math:`s_i` is *nonzero* iff :math:`s_i > \text{rank\_tol}\cdot
    s_{\max}`; the default rank floor is numpy ``matrix_rank``'s for float32,
    :math:`\max(M, N)\,\epsilon_{32}` (3.7e-4 at 1024 x 3072);
  - :math:`\kappa = \min (s_{i+1} - s_i)` over consecutive nonzero values,
    :math:`+\infty` when there are fewer than two (rank <= 1, zero matrix).
    Nothing is merged: a repeated singular value gives :math:`\kappa = 0`;
  - a gap at or below the *resolution* counts as exactly 0, so an exact
    repeat gives :math:`\kappa = 0` and an SGD step for every ``tau > 0``.
    The resolution is the larger of the method's error bound
    (:func:`resolution_factor`: :math:`4\epsilon_{64}/\epsilon_{32}\,
    s_{\max} \approx 7\cdot10^{-9} s_{\max}` with ``"float64"`` and ``"host"``,
    :math:`4\sqrt{k}\,\epsilon_{32} s_{\max}`, 1.5e-5 s_max at k = 1024,
    with ``"float32"``) and the norm of the error that rounding the entries
    to float32 typically causes, :math:`\tfrac12\epsilon_{32}(\sqrt{m}+
    \sqrt{n})\|X\|_F/\sqrt{mn}` (:func:`rounding_factor`; 1.5e-9 ||X||_F
    at 1024 x 3072), below which a gap may be rounding rather than spectrum;
  - ``rel_gap`` :math:`= \kappa / s_{\max}`;
  - ``rho`` :math:`= \kappa \sqrt{r} / \mathrm{median}_i (s_{i+1} - s_i)`
    over the same nonzero pairs, with :math:`r` the number of nonzero
    values: kappa in units of the typical spacing, times the
    :math:`\sqrt{r}` by which the minimum of :math:`r` spacings with
    linear level repulsion shrinks. Unlike ``rel_gap`` (whose median falls
    ~500x from 16 x 48 to 1024 x 3072 Gaussian matrices) its median stays
    within 1.4-1.5x across those sizes (``experiments/gate_scaling``).
    0 when :math:`\kappa = 0`.

  The result does not depend on the scale of the input (it is divided by
  its largest entry first). NaN/Inf inputs give NaN statistics. A complex
  matrix's singular values come from its Hermitian Gram :math:`X X^H`.

  Args:
    x_BxMxN: a batch of matrices (any float dtype; computed from float32).
    rank_tol: relative rank floor; None: ``max(M, N) * eps(float32)``.
    precision: ``"auto"``, ``"float64"``, ``"host"`` or ``"float32"``
      (module doc).

  Returns:
    ``GapStats`` with one entry per matrix.

  Example:
    >>> import jax.numpy as jnp
    >>> import mimuon_optax
    >>> st = mimuon_optax.spectral_gap(jnp.diag(jnp.array([3., 2., 2., 1.]))[None])
    >>> float(st.min_gap[0]), float(st.rho[0])  # 2 is repeated
    (0.0, 0.0)
  """
  return spectral_gaps([x_BxMxN], rank_tol=rank_tol, precision=precision)[0]


def spectral_gaps(
    stacks: Sequence[jax.Array],
    *,
    rank_tol: float | None = None,
    precision: str = 'auto',
    mesh: jax.sharding.Mesh | None = None,
    mesh_axes: _distributed.MeshAxes = None,
    context: _context.MatrixContext | None = None,
) -> list[GapStats]:
  """:func:`spectral_gap` of many stacks ``(B_i, M_i, N_i)`` in one call.

  All matrices share one zero-padded spectrum call (zero padding only adds
  zero singular values, below the rank floor).

  With a ``mesh`` (or a ``context`` holding one), equal-shape stacks are
  concatenated, zero-padded and split over the devices of ``mesh_axes``
  (default: all) as whole matrices
  (:func:`~mimuon_optax._distributed.shard_stacks`); each device measures
  its own matrices, so no Gram is ever all-reduced. Zero padding matrices
  have gap +inf and are dropped. The statistics come back replicated.
  """
  context = _context.resolve(context, mesh=mesh, mesh_axes=mesh_axes)
  precision = resolve_precision(precision, context.mesh)
  if not stacks:
    return []
  eigvals_only: Callable[[jax.Array], jax.Array] = _eigvals_only
  if precision != 'host' and _platform.serial_lapack(context.mesh):
    eigvals_only = _platform.one_matrix_at_a_time(_eigvals_only)
  # One padded call for all stacks (group=True joins equal shapes first).
  local = lambda xs: _padded_stats(xs, rank_tol, precision, eigvals_only)
  return context.run(local, stacks, replicate=True, group=True)
