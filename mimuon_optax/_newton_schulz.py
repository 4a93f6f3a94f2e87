"""Newton-Schulz orthogonalization: X -> approximately U V^T for X = U S V^T."""

from __future__ import annotations

from typing import NamedTuple, Union

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mimuon_optax import _context
from mimuon_optax import _distributed
from mimuon_optax import _matrix

# Each step maps X -> a X + b (X X^T) X + c (X X^T)^2 X, i.e. the odd
# polynomial p(s) = a s + b s^3 + c s^5 on every singular value s. Inputs are
# first divided by frobenius_scale * ||X||_F, which puts every s in (0, 1].


class NSSchedule(NamedTuple):
  """A Newton-Schulz coefficient schedule."""

  coeffs: np.ndarray  # shape=(steps, 3): (a, b, c) per step.
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
    tables = {
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


def newton_schulz(
    x_BxMxN: jax.Array,
    schedule: NSSchedule,
    *,
    ns_dtype: chex.ArrayDType = jnp.bfloat16,
    eps: chex.Numeric = 1e-7,
) -> jax.Array:
  """Orthogonalizes a batch of matrices; returns the input dtype.

  Tall matrices are transposed so that the Gram matrix X X^T is the small
  side. The normalization runs in float32, the iteration in ``ns_dtype``
  (float32 matmuls at HIGHEST precision, so TPUs and GPUs do not silently use
  bf16/tf32 passes). A zero matrix maps to zero. The result does not depend
  on the input's scale (entries from 1e-38 to 3e38, float32 or bfloat16):
  the input is first divided by a power of two near its largest entry, and
  ``eps`` acts on that scaled matrix (relative to ``max |x|``).
  """
  dtype = x_BxMxN.dtype
  ns_dtype = jnp.dtype(ns_dtype)
  transpose = x_BxMxN.shape[-2] > x_BxMxN.shape[-1]
  x = jnp.swapaxes(x_BxMxN, -1, -2) if transpose else x_BxMxN
  x = x.astype(jnp.float32)
  # Scale-free: first divide by the power of two 2^e with max|x| in
  # [2^(e-1), 2^e) (exact), so the Frobenius norm and the Gram matrices
  # neither overflow (entries up to 3e38) nor underflow (down to 1e-38). eps
  # is therefore relative to max|x|. A zero matrix keeps e = 0; NaN/Inf
  # entries still give NaN/Inf outputs (as documented).
  x = jnp.ldexp(x, -_matrix.pow2_exponent(x))
  norm_B11 = jnp.linalg.norm(x, axis=(-2, -1), keepdims=True)
  x = (x / (norm_B11 * schedule.frobenius_scale + eps)).astype(ns_dtype)
  precision = (jax.lax.Precision.HIGHEST if jnp.finfo(ns_dtype).bits >= 32
               else jax.lax.Precision.DEFAULT)
  mm = lambda p, q: jnp.matmul(p, q, precision=precision)
  coeffs = schedule.coeffs
  for i in range(coeffs.shape[0]):
    a, b, c = (jnp.asarray(coeffs[i, j], ns_dtype) for j in range(3))
    gram_BxMxM = mm(x, jnp.swapaxes(x, -1, -2))
    poly_BxMxM = b * gram_BxMxM + c * mm(gram_BxMxM, gram_BxMxM)
    x = a * x + mm(poly_BxMxM, x)
  x = jnp.swapaxes(x, -1, -2) if transpose else x
  return x.astype(dtype)


def scale_by_newton_schulz(
    ns_coeffs: Union[str, chex.Array] = 'polar_express',
    ns_steps: int = 5,
    ns_dtype: Union[str, chex.ArrayDType] = 'bfloat16',
    eps: chex.Numeric = 1e-7,
    *,
    weight_dimension_numbers: _matrix.WeightDimNums = None,
    batch_same_shapes: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    mesh_axes: _distributed.MeshAxes = None,
    context: _context.MatrixContext | None = None,
) -> optax.GradientTransformation:
  r"""Replaces every matrix by its approximate orthogonal polar factor.

  For a matrix :math:`X = U S V^\top`, Newton-Schulz iterates odd
  polynomials :math:`X \leftarrow a X + b (X X^\top) X + c (X X^\top)^2 X`
  that push every singular value towards 1, giving :math:`\approx U V^\top`
  without an SVD. The accuracy band of the output singular values depends on
  the schedule and on the input's conditioning (see the README table).

  Args:
    ns_coeffs: coefficient schedule, see :func:`ns_schedule`.
    ns_steps: number of iterations (static: pass it in ``static_args`` of
      ``optax.inject_hyperparams``).
    ns_dtype: dtype of the iteration (``"bfloat16"`` or ``"float32"``).
    eps: added to the Frobenius norm before dividing by it, after the input
      was scaled so that its largest entry lies in [0.5, 1) (scale-free).
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
  """
  schedule = ns_schedule(ns_coeffs, ns_steps)
  context = _context.resolve(
      context, weight_dimension_numbers=weight_dimension_numbers,
      batch_same_shapes=batch_same_shapes, mesh=mesh, mesh_axes=mesh_axes)
  ns = lambda x: newton_schulz(x, schedule, ns_dtype=ns_dtype, eps=eps)

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
