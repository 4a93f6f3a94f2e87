"""Newton-Schulz orthogonalization: X -> approximately U V^T for X = U S V^T."""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence, Union

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mimuon_optax import _context
from mimuon_optax import _distributed
from mimuon_optax import _matrix
from mimuon_optax import _platform

# Each step maps X -> a X + b (X X^T) X + c (X X^T)^2 X, i.e. the odd
# polynomial p(s) = a s + b s^3 + c s^5 on every singular value s. Inputs are
# first divided by frobenius_scale * ||X||_F, which puts every s in (0, 1].


class NSSchedule(NamedTuple):
  """A Newton-Schulz coefficient schedule."""

  coeffs: np.ndarray | jax.Array  # shape=(steps, 3): (a, b, c) per step.
  frobenius_scale: float  # divide by frobenius_scale * ||X||_F first.


_JORDAN = (3.4445, -4.7750, 2.0315)  # Jordan et al. 2024, every step.
_YOU = (  # Cesista, You et al.; optax.contrib.muon calls it "dion".
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
# Amsel et al. 2025, as shipped by modded-nanogpt and dion: greedy minimax
# odd quintics from l0=1e-3 with safety factor 1.02 (all but the last step)
# and cushion 0.02, used after a Frobenius normalization widened by 2%.
# tools/ns_coefficients.py regenerates both lists (the 5-step one to 2e-15).
_POLAR_EXPRESS_5 = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
_POLAR_EXPRESS_8 = (  # matches pytorch_optimizer's 'polar_express_safer'.
    (8.156554524902461, -22.483292925577953, 15.878769915207466),
    (4.042929935166734, -2.8089174659087113, 0.500017845105131),
    (3.891667802292666, -2.7724841532176883, 0.50606481785034),
    (3.285753657755656, -2.3681294933425376, 0.464490242330031),
    (2.3005307116270943, -1.6111665557258383, 0.3833374427545273),
    (1.863121054638262, -1.2042160621002773, 0.3421879560523403),
    (1.838257215227136, -1.1779263289583484, 0.33965130386593084),
    (1.8750000219074958, -1.2500000427594176, 0.37500002085192163),
)
# Grishina et al. 2025 (CANS): minimax odd quintics chained on [a_k, b_k] ->
# [1 - eps_k, 1 + eps_k], delta-orthogonalization with delta = 0.3, b0 = 1,
# a0 = 5.0197e-4 found by bisection (tools/ns_coefficients.py; the same
# construction reproduces the paper's published 4-step table to 1.6e-15).
# Promises singular values in [0.7, 1.3] for normalized inputs >= 5e-4.
_CANS = (
    (8.492174566755889, -25.194352424993046, 18.697915058107416),
    (4.219444008812061, -3.1341088096001286, 0.5835045573005019),
    (4.102201555039562, -3.0525350044827504, 0.5742015780320154),
    (3.6840917498136343, -2.756204732449484, 0.5404450723953242),
    (2.732954572508748, -2.035483071212106, 0.4591024438056825),
)

NS_PRESETS = ('jordan', 'you', 'polar_express', 'cans')
PRECONDITIONINGS = ('frobenius', 'spectral', 'aol', 'schatten')
NS_METHODS = ('standard', 'gram', 'auto')
# ns_method="auto" runs Gram Newton-Schulz on matrices whose long side is at
# least this many times the short side: the CPU crossover measured by
# `python -m benchmarks.step_time --gram` (benchmarks/RESULTS.md).
GRAM_MIN_ASPECT = 2.0


def _check_ns_steps(ns_steps) -> None:
  if isinstance(ns_steps, jax.core.Tracer):
    raise ValueError('ns_steps must be static: pass it in static_args of'
                     ' optax.inject_hyperparams.')
  value = np.asarray(ns_steps) if not isinstance(ns_steps, str) else None
  if (isinstance(ns_steps, bool) or value is None or value.shape != ()
      or value.dtype.kind not in 'iu' or value < 1):
    raise ValueError(f'ns_steps must be an int >= 1, got {ns_steps!r}')


def ns_schedule(ns_coeffs: Union[str, chex.Array] = 'polar_express',
                ns_steps: int = 5) -> NSSchedule:
  """Resolves a preset name or explicit coefficients to an ``NSSchedule``.

  Args:
    ns_coeffs: ``"jordan"`` (the same (a, b, c) every step, any ``ns_steps``),
      ``"you"`` (5 steps), ``"polar_express"`` (5 or 8 steps), ``"cans"``; or
      an explicit ``(3,)`` array (repeated ``ns_steps`` times) or ``(n, 3)``
      array (its n steps; ``ns_steps`` is ignored).
    ns_steps: number of steps for presets and ``(3,)`` coefficients.

  Returns:
    The schedule.

  Raises:
    ValueError: for an unknown preset, a step count the preset does not
      provide, ``ns_steps < 1`` (or not an int), or coefficients of the wrong
      shape or with no rows (shape ``(0, 3)``). The checks run at
      construction; ``ns_steps`` must be static (``static_args`` under
      ``optax.inject_hyperparams``).
  """
  _check_ns_steps(ns_steps)
  ns_steps = int(ns_steps)
  if isinstance(ns_coeffs, str):
    tables: dict[str, dict[int, tuple]] = {
        'jordan': {ns_steps: (_JORDAN,) * ns_steps},
        'you': {5: _YOU},
        'polar_express': {5: _POLAR_EXPRESS_5, 8: _POLAR_EXPRESS_8},
        'cans': {5: _CANS},
    }
    if ns_coeffs not in tables:
      raise ValueError(
          f'Unknown ns_coeffs preset {ns_coeffs!r}; expected one of'
          f' {NS_PRESETS} or an array of shape (3,) or (n, 3).')
    if ns_steps not in tables[ns_coeffs]:
      raise ValueError(
          f'ns_coeffs={ns_coeffs!r} has schedules for ns_steps in'
          f' {sorted(tables[ns_coeffs])}, got ns_steps={ns_steps}.')
    scale = 1.02 if ns_coeffs == 'polar_express' else 1.0
    return NSSchedule(np.asarray(tables[ns_coeffs][ns_steps]), scale)
  coeffs = ns_coeffs if isinstance(ns_coeffs, jax.Array) else np.asarray(
      ns_coeffs, np.float64)
  if coeffs.ndim == 1 and coeffs.shape == (3,):
    coeffs = jnp.broadcast_to(coeffs, (ns_steps, 3)) if isinstance(
        coeffs, jax.Array) else np.broadcast_to(coeffs, (ns_steps, 3))
  if coeffs.ndim != 2 or coeffs.shape[-1] != 3 or coeffs.shape[0] < 1:
    raise ValueError(
        f'ns_coeffs must have shape (3,) or (n, 3) with n >= 1, got'
        f' {coeffs.shape}.')
  return NSSchedule(coeffs, 1.0)


def _ct(x: jax.Array) -> jax.Array:
  """Conjugate transpose of the last two axes (the transpose for reals)."""
  x = jnp.swapaxes(x, -1, -2)
  return jnp.conj(x) if jnp.iscomplexobj(x) else x


def _matmul_precision(dtype) -> jax.lax.Precision:
  # float32 matmuls at HIGHEST precision, so TPUs and GPUs do not silently
  # use bf16/tf32 passes.
  return (jax.lax.Precision.HIGHEST if jnp.finfo(dtype).bits >= 32
          else jax.lax.Precision.DEFAULT)


def _matmul(dtype) -> Callable[[jax.Array, jax.Array], jax.Array]:
  precision = _matmul_precision(dtype)
  return lambda p, q: jnp.matmul(p, q, precision=precision)


def _spectral_norm(gram_BxKxK: jax.Array) -> jax.Array:
  """sqrt of the largest eigenvalue of each Gram matrix, shape (B, 1, 1)."""
  top_B = jnp.linalg.eigvalsh(gram_BxKxK)[..., -1]
  return jnp.sqrt(jnp.maximum(top_B, 0.0))[:, None, None]


def _precondition(x_BxKxN: jax.Array, preconditioning: str, scale: float,
                  eps: chex.Numeric) -> tuple[jax.Array, jax.Array | None]:
  """Scales a wide stack so its singular values lie in [0, 1/scale].

  Returns the scaled stack and, when it was needed anyway, its Gram matrix
  X X^H (the first Newton-Schulz step reuses it). Each norm is multiplied by
  ``scale`` (the schedule's safety factor) and then ``eps`` is added, so a
  zero matrix (or a zero row, for AOL) maps to zero.
  """
  if preconditioning == 'frobenius':
    norm_B11 = jnp.linalg.norm(x_BxKxN, axis=(-2, -1), keepdims=True)
    return x_BxKxN / (norm_B11 * scale + eps), None
  mm = _matmul(jnp.float32)
  gram = mm(x_BxKxN, _ct(x_BxKxN))
  if preconditioning == 'aol':
    # Row scaling D^{-1/2} with D_ii = sum_j |(X X^H)_ij|: every singular
    # value of D^{-1/2} X is <= 1 (Schur test; Prach & Lampert 2022, AOL).
    row_BxKx1 = jnp.sqrt(jnp.sum(jnp.abs(gram), axis=-1, keepdims=True))
    inv_BxKx1 = 1.0 / (row_BxKx1 * scale + eps)
    return (x_BxKxN * inv_BxKx1,
            gram * inv_BxKx1 * jnp.swapaxes(inv_BxKx1, -1, -2))
  if preconditioning == 'schatten':
    # ||X||_{S4} = (sum s^4)^(1/4) = sqrt(||X X^H||_F) >= s_max.
    norm_B11 = jnp.sqrt(jnp.linalg.norm(gram, axis=(-2, -1), keepdims=True))
  else:  # spectral
    norm_B11 = _spectral_norm(gram)
  inv_B11 = 1.0 / (norm_B11 * scale + eps)
  return x_BxKxN * inv_B11, gram * inv_B11**2


def _standard_iteration(x, gram, coeffs, mm):
  """X <- a X + (b G + c G^2) X with G = X X^H, one row of coeffs a step."""
  for i, (a, b, c) in enumerate(coeffs):
    g = gram if i == 0 and gram is not None else mm(x, _ct(x))
    x = a * x + mm(b * g + c * mm(g, g), x)
  return x


def _gram_carry_dtype(work_dtype) -> jnp.dtype:
  """dtype of Gram Newton-Schulz's k x k part: float32 below 32 bits."""
  work_dtype = jnp.dtype(work_dtype)
  if jnp.issubdtype(work_dtype, jnp.complexfloating):
    return work_dtype
  return jnp.dtype(jnp.float32) if jnp.finfo(work_dtype).bits < 32 else (
      work_dtype)


def _gram_iteration(x, gram, coeffs, restarts):
  """The same map as :func:`_standard_iteration`, iterated on the k x k Gram.

  Step t multiplies X by h_t(R) = a I + b R + c R^2 with R = X X^H, so
  X_t = Q_t X_0 with Q_t = h_t(R_t) Q_{t-1} and R_{t+1} = h_t R_t h_t: only
  k x k products until the final Q X_0. Before each step in ``restarts``,
  X is formed (X <- Q X) and R recomputed from it, which drops the rounding
  error that Q and R accumulate (Q's error is amplified by later steps).

  Below 32 bits (bfloat16, float16 ``x``) R, h, Q and ``coeffs`` are
  float32 (the k x k products are the cheap part) and only the k x n
  products take ``x``'s dtype, accumulating in float32: X X^H, and Q X with
  Q split into a high and a low part in ``x``'s dtype (two products). Q
  spans p(s)/s over the spectrum (990 for polar_express/5 without a
  restart, 30 after one before step 2), so Q rounded to bfloat16 once would
  add 2^-9 of its largest entries to every output direction. ``gram`` is
  X X^H of the unrounded X, in the carry dtype.
  """
  carry = _gram_carry_dtype(x.dtype)
  mm = _matmul(carry)
  precision = _matmul_precision(x.dtype)
  mm_x_dtype = lambda p, q: jnp.matmul(
      p.astype(x.dtype), q, precision=precision, preferred_element_type=carry)

  def q_times(q, x):
    out = mm_x_dtype(q, x)
    if carry == x.dtype:
      return out
    return out + mm_x_dtype(q - q.astype(x.dtype).astype(carry), x)

  r = gram
  eye = jnp.eye(x.shape[-2], dtype=carry)
  q = None  # None stands for the identity.
  steps = len(coeffs)
  for i, (a, b, c) in enumerate(coeffs):
    if i in restarts and q is not None:
      x, q = q_times(q, x).astype(x.dtype), None
      r = mm_x_dtype(x, _ct(x))
    h = a * eye + b * r + c * mm(r, r)
    q = h if q is None else mm(q, h)
    if i + 1 < steps and i + 1 not in restarts:
      r = mm(h, mm(r, h))
  return x if q is None else q_times(q, x)


def uses_gram(shape: tuple[int, ...], ns_method: str) -> bool:
  """Whether ``ns_method`` runs Gram Newton-Schulz on a matrix of ``shape``.

  ``"auto"`` picks it where the long side is at least
  :data:`GRAM_MIN_ASPECT` times the short side (measured CPU crossover).
  """
  if ns_method == 'standard':
    return False
  if ns_method == 'gram':
    return True
  k, n = sorted(shape[-2:])
  return n >= GRAM_MIN_ASPECT * k


def check_options(preconditioning: str, ns_method: str, gram_restarts) -> None:
  """ValueError naming the argument for an unknown option."""
  if preconditioning not in PRECONDITIONINGS:
    raise ValueError(f'preconditioning must be one of {PRECONDITIONINGS},'
                     f' got {preconditioning!r}')
  if ns_method not in NS_METHODS:
    raise ValueError(f'ns_method must be one of {NS_METHODS}, got'
                     f' {ns_method!r}')
  if gram_restarts is not None and not all(
      isinstance(i, int) and not isinstance(i, bool) and i >= 1
      for i in gram_restarts):
    raise ValueError('gram_restarts must be a sequence of step indices >= 1,'
                     f' got {gram_restarts!r}')


def default_gram_restarts(steps: int) -> tuple[int, ...]:
  """Where Gram Newton-Schulz restarts by default: before steps 2, 4, ...

  Before every second step from step 2, leaving at least the last three
  steps unbroken: 5 and 6 steps restart once (before 2), 7 and 8 steps
  twice (before 2 and 4), 3 and 4 steps never. Measured per input in
  tests/test_gram_ns.py (float64 SVD; square, wide and tall, cond 1 and
  1e3, spiked, rank-deficient, scales 1e-30..1e30): with these restarts
  Gram NS leaves the schedule's band by at most what standard NS does on
  the same input plus 1e-4 in float32 and 1e-2 in bfloat16 (worst measured:
  1e-5 and 1.6e-3; also for jordan at 3, 4, 6, 8, 10 steps, you, cans, and
  float16: 2.7e-5, 3.0e-3, 1.4e-3). Without a restart the float32 k x k
  iteration drifts (polar_express/5 leaves the band by 0.010, /8 by
  0.044); polar_express/8 with only the restart before step 2 leaves it by
  1.8e-4 in float32 (6.5e-4 on a 64x192 input). The same restarts serve
  every dtype: a bfloat16 iteration keeps its k x k part in float32.
  """
  return tuple(range(2, steps - 2, 2))


def newton_schulz(
    x_BxMxN: jax.Array,
    schedule: NSSchedule,
    *,
    ns_dtype: chex.ArrayDType = jnp.bfloat16,
    eps: chex.Numeric = 1e-7,
    preconditioning: str = 'frobenius',
    ns_method: str = 'standard',
    gram_restarts: Sequence[int] | None = None,
) -> jax.Array:
  r"""Orthogonalizes a batch of matrices; returns the input dtype.

  Tall matrices are transposed so that the Gram matrix :math:`X X^H` is the
  small side. The normalization runs in float32, the iteration in
  ``ns_dtype`` (float32 matmuls at HIGHEST precision, so TPUs and GPUs do not
  silently use bf16/tf32 passes); Gram Newton-Schulz below 32 bits runs only
  its k x n products in ``ns_dtype`` and its k x k part in float32. Complex
  matrices iterate in complex64 (there is no bfloat16 complex type) with the
  conjugate transpose, giving :math:`\approx U V^H`. A zero matrix maps to
  zero. The result does not depend on the input's scale (entries from 1e-38
  to 3e38, float32 or bfloat16): the input is first divided by a power of
  two near its largest entry, and ``eps`` acts on that scaled matrix
  (relative to ``max |x|``).

  Args:
    x_BxMxN: a batch of real or complex matrices.
    schedule: from :func:`ns_schedule`.
    ns_dtype: dtype of the iteration for real inputs.
    eps: added to every normalizing norm (relative to ``max |x|``).
    preconditioning: how the input is scaled before the iteration (each norm
      times the schedule's ``frobenius_scale``): ``"frobenius"``
      :math:`X / \|X\|_F`; ``"spectral"`` :math:`X / \|X\|_2` (a float32
      eigensolve of :math:`X X^H`); ``"schatten"`` :math:`X /
      \|X\|_{S_4}`, :math:`\|X\|_{S_4} = \|X X^H\|_F^{1/2}`; ``"aol"``
      :math:`D^{-1/2} X` with :math:`D_{ii} = \sum_j |(X X^H)_{ij}|` (a row
      scaling of the short side, which changes the polar factor it
      converges to). The last three reuse :math:`X X^H` in the first step.
    ns_method: ``"standard"`` (iterate on X), ``"gram"`` (Gram
      Newton-Schulz: iterate on the k x k Gram, :func:`uses_gram`) or
      ``"auto"`` (Gram where the aspect ratio makes it cheaper).
    gram_restarts: steps before which Gram Newton-Schulz re-forms X and its
      Gram; None: :func:`default_gram_restarts`; ``()``: none.

  Returns:
    The orthogonalized batch, shape and dtype of ``x_BxMxN``.
  """
  check_options(preconditioning, ns_method, gram_restarts)
  dtype = x_BxMxN.dtype
  is_complex = jnp.iscomplexobj(x_BxMxN)
  work_dtype = jnp.dtype(jnp.complex64 if is_complex else ns_dtype)
  transpose = x_BxMxN.shape[-2] > x_BxMxN.shape[-1]
  x = jnp.swapaxes(x_BxMxN, -1, -2) if transpose else x_BxMxN
  x = x.astype(jnp.complex64 if is_complex else jnp.float32)
  # Scale-free: first divide by the power of two 2^e with max|x| in
  # [2^(e-1), 2^e) (exact), so the norms and the Gram matrices neither
  # overflow (entries up to 3e38) nor underflow (down to 1e-38). eps is
  # therefore relative to max|x|. A zero matrix keeps e = 0; NaN/Inf
  # entries still give NaN/Inf outputs (as documented).
  x = _matrix.ldexp(x, -_matrix.pow2_exponent(x))
  x, gram = _precondition(x, preconditioning, schedule.frobenius_scale, eps)
  gram_ns = uses_gram(x.shape, ns_method)
  if gram_ns and gram is None:
    # From the float32 x: its spectrum is the normalized one (x rounded to
    # bfloat16 can exceed 1 by 2^-9, where cans's polynomial explodes).
    gram = _matmul(x.dtype)(x, _ct(x))
  x = x.astype(work_dtype)
  # The standard iteration runs wholly in work_dtype; Gram NS keeps its
  # k x k part (the Gram, the coefficients) in _gram_carry_dtype.
  carry = _gram_carry_dtype(work_dtype) if gram_ns else work_dtype
  gram = None if gram is None else gram.astype(carry)
  real = jnp.finfo(carry).dtype
  steps = schedule.coeffs.shape[0]
  coeffs = [tuple(jnp.asarray(schedule.coeffs[i, j], real) for j in range(3))
            for i in range(steps)]
  if gram_ns:
    restarts = (default_gram_restarts(steps) if gram_restarts is None
                else tuple(gram_restarts))
    x = _gram_iteration(x, gram, coeffs, restarts)
  else:
    x = _standard_iteration(x, gram, coeffs, _matmul(work_dtype))
  x = jnp.swapaxes(x, -1, -2) if transpose else x
  return x.astype(dtype)


def _dual_norm_scaled(m_BxMxN: jax.Array, o_BxMxN: jax.Array) -> jax.Array:
  """O times Re <M, O> = Re tr(M^H O) per matrix (~ the nuclear norm of M)."""
  wide = jnp.complex64 if jnp.iscomplexobj(o_BxMxN) else jnp.float32
  m, o = m_BxMxN.astype(wide), o_BxMxN.astype(wide)
  inner_B11 = jnp.real(jnp.sum(jnp.conj(m) * o, axis=(-2, -1), keepdims=True))
  return (inner_B11 * o).astype(o_BxMxN.dtype)


def scale_by_newton_schulz(
    ns_coeffs: Union[str, chex.Array] = 'polar_express',
    ns_steps: int = 5,
    ns_dtype: Union[str, chex.ArrayDType] = 'bfloat16',
    eps: chex.Numeric = 1e-7,
    *,
    preconditioning: str = 'frobenius',
    adaptive: bool = False,
    ns_method: str = 'standard',
    gram_restarts: Sequence[int] | None = None,
    weight_dimension_numbers: _matrix.WeightDimNums = None,
    batch_same_shapes: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    mesh_axes: _distributed.MeshAxes = None,
    context: _context.MatrixContext | None = None,
) -> optax.GradientTransformation:
  r"""Replaces every matrix by its approximate orthogonal polar factor.

  For a matrix :math:`X = U S V^H`, Newton-Schulz iterates odd
  polynomials :math:`X \leftarrow a X + b (X X^H) X + c (X X^H)^2 X`
  that push every singular value towards 1, giving :math:`\approx U V^H`
  without an SVD (:math:`X^H` is the transpose for real matrices). The
  accuracy band of the output singular values depends on the schedule and
  on the input's conditioning (``docs/gate.md``, Newton-Schulz). Gram
  Newton-Schulz (``ns_method``) computes the same polynomial with k x k
  products only, where k is the short side:

  .. math::
    R_0 = X X^H,\; h_t = a_t I + b_t R_t + c_t R_t^2,\;
    R_{t+1} = h_t R_t h_t,\; \text{out} = h_{T-1} \cdots h_0 X.

  Args:
    ns_coeffs: coefficient schedule, see :func:`ns_schedule`.
    ns_steps: number of iterations (static: pass it in ``static_args`` of
      ``optax.inject_hyperparams``).
    ns_dtype: dtype of the iteration (``"bfloat16"`` or ``"float32"``).
    eps: added to the normalizing norm before dividing by it, after the
      input was scaled so that its largest entry lies in [0.5, 1)
      (scale-free).
    preconditioning: ``"frobenius"``, ``"spectral"``, ``"schatten"`` or
      ``"aol"`` (``optax.contrib.muon``'s options), see
      :func:`newton_schulz`.
    adaptive: multiply each orthogonalized matrix O by
      :math:`\mathrm{Re}\,\mathrm{tr}(M^H O)` of its input M (the dual
      norm, about M's nuclear norm), as ``optax.contrib.muon(adaptive=True)``;
      per matrix (slices along batch axes are scaled on their own).
    ns_method: ``"standard"``, ``"gram"`` (Gram Newton-Schulz on every
      matrix) or ``"auto"`` (Gram where the long side is at least
      ``GRAM_MIN_ASPECT`` times the short side, standard elsewhere).
    gram_restarts: steps before which Gram Newton-Schulz re-forms X and its
      Gram (it drops the rounding error the k x k iteration accumulates);
      None: :func:`default_gram_restarts`; ``()``: none.
    weight_dimension_numbers: ``MuonDimensionNumbers`` (one for all leaves),
      a tree of them matching the params (None leaves: 2-D rule), or a
      callable returning such a tree. Without them every leaf must be 2-D.
      Batch axes are orthogonalized slice by slice.
    batch_same_shapes: run all matrices of equal shape as one batched
      iteration (faster; same result up to float rounding).
    mesh: a ``jax.sharding.Mesh`` (``AxisType.Auto`` axes) to spread whole
      matrices over, for params sharded on it under ``jax.jit``. Stacks of
      equal-shape matrices are concatenated, zero-padded to a multiple of
      the device count and split along B in one ``shard_map``: each device
      orthogonalizes whole matrices with no communication, and the results
      return to the params' sharding. None (default): plain jit/GSPMD,
      which all-reduces or all-gathers a Gram-sized array in every
      iteration when a matrix dimension is sharded.
    mesh_axes: mesh axis names (or one name) to spread matrices over;
      None: all of them. The computation is replicated along the others.
    context: a :class:`MatrixContext` holding the four settings above, as
      :func:`muon` builds once and shares with its other transforms; give
      either it or those settings.

  Returns:
    A stateless ``optax.GradientTransformation``.

  Raises:
    ValueError: on ``init`` and ``update``, naming the parameter path of a
      leaf that is not 2-D and has no dimension numbers.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import mimuon_optax
    >>> tx = mimuon_optax.scale_by_newton_schulz(ns_dtype="float32")
    >>> g = jax.random.normal(jax.random.key(0), (8, 4))
    >>> o, _ = tx.update(g, tx.init(g))
    >>> bool(jnp.all(jnp.abs(jnp.linalg.svd(o)[1] - 1) < 0.3))
    True
    >>> gram = mimuon_optax.scale_by_newton_schulz(
    ...     ns_dtype="float32", ns_method="gram")  # same map, k x k products
    >>> bool(jnp.allclose(gram.update(g, None)[0], o, atol=1e-4))
    True
  """
  schedule = ns_schedule(ns_coeffs, ns_steps)
  check_options(preconditioning, ns_method, gram_restarts)
  context = _context.resolve(
      context, weight_dimension_numbers=weight_dimension_numbers,
      batch_same_shapes=batch_same_shapes, mesh=mesh, mesh_axes=mesh_axes)
  ns: Callable[[jax.Array], jax.Array] = functools.partial(
      newton_schulz, schedule=schedule, ns_dtype=ns_dtype, eps=eps,
      preconditioning=preconditioning, ns_method=ns_method,
      gram_restarts=gram_restarts)
  if preconditioning == 'spectral' and _platform.serial_lapack(context.mesh):
    ns = _platform.one_matrix_at_a_time(ns)  # its eigensolve is LAPACK
  if adaptive:
    orthogonalize = ns
    ns = lambda x: _dual_norm_scaled(x, orthogonalize(x))

  def update_fn(updates, state, params=None):
    views = context.views(updates)
    updates = context.like_params(views, updates, params)
    ortho = _matrix.map_stacks(
        lambda stacks: context.run(lambda xs: [ns(x) for x in xs], stacks),
        views, updates)
    ortho = _matrix.map_matrices(
        lambda view, o: view.from_matrices(o), views, ortho)
    return context.like_params(views, ortho, params), state

  def init_fn(params):
    context.views(params)  # Fail early.
    return optax.EmptyState()

  return optax.GradientTransformation(init_fn, update_fn)
