"""mimuon_mix: per matrix, orthogonalize the momentum or pass it to SGD."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from mimuon_optax import _checks
from mimuon_optax import _context
from mimuon_optax import _distributed
from mimuon_optax import _gap
from mimuon_optax import _matrix

TAU_MODES = ('spacing', 'relative', 'absolute')
SGD_SCALES = ('none', 'rms_match')
# Default threshold of tau_mode="spacing"; the mimuon_mix docstring says why.
DEFAULT_TAU = 0.3


class MiMuonMixState(NamedTuple):
  """State of :func:`mimuon_mix`; per-matrix fields are the diagnostics.

  Per-matrix fields hold, for every matrix leaf, an array of the leaf's batch
  shape (``()`` for a plain 2-D kernel, ``(L,)`` for a layer stack), from the
  last measurement (see :class:`GapStats`).
  """

  # A field named like tuple.count, as in optax's states.
  count: jax.Array  # type: ignore[assignment]  # shape=(), int32; update calls so far.
  orthogonalized: optax.Updates  # per matrix, bool; last decision.
  min_gap: optax.Updates  # per matrix, f32; kappa (absolute).
  rel_gap: optax.Updates  # per matrix, f32; kappa / s_max.
  rho: optax.Updates  # per matrix, f32; kappa * sqrt(r) / median gap.
  tau_floor: optax.Updates  # per matrix, f32; resolution in tau's units.
  orth_count: optax.Updates  # per matrix, int32; steps orthogonalized.
  inner_state: optax.OptState  # the orthogonalizer's state.
  # lagged_gate=True only: the last input's matrix leaves (passthrough
  # leaves kept as they are), in promote_types(param dtype, float32),
  # measured by the next step.
  previous: optax.Updates = None


def mimuon_mix(
    orthogonalizer: optax.GradientTransformation,
    tau: chex.Numeric = DEFAULT_TAU,
    *,
    tau_mode: str = 'spacing',
    gap_every: int = 1,
    lagged_gate: bool = False,
    sgd_scale: str = 'none',
    rank_tol: float | None = None,
    precision: str = 'auto',
    weight_dimension_numbers: _matrix.WeightDimNums = None,
    mesh: jax.sharding.Mesh | None = None,
    mesh_axes: _distributed.MeshAxes = None,
    context: _context.MatrixContext | None = None,
) -> optax.GradientTransformation:
  r"""MiMuon's gate: orthogonalize a matrix only if its spectrum is separated.

  For each matrix :math:`M` (the incoming updates, usually the momentum) with
  :math:`\kappa` the minimum gap between its nonzero singular values (see
  :func:`spectral_gap`):

  .. math::
    \text{out} = \begin{cases}
      \mathrm{orthogonalizer}(M) \approx U V^\top & g(M) \ge \tau \\
      \gamma M & \text{otherwise,}
    \end{cases}

  where the statistic :math:`g` is set by ``tau_mode``:

  - ``"absolute"``: :math:`g = \kappa`, the paper's rule exactly;
  - ``"relative"``: :math:`g = \kappa / s_{\max}` (scale-free, but its
    typical value falls like :math:`k^{-1.5}` with the matrix width k);
  - ``"spacing"`` (default): :math:`g = \rho = \kappa \sqrt{r} /
    \mathrm{median\ gap}`, scale-free and size-free: one tau serves a
    64-wide and a 1024-wide matrix (``experiments/gate_scaling``).

  :math:`\gamma = 1` (``sgd_scale="none"``, the paper) or
  :math:`\gamma = \sqrt{\min(m, n)} / \|M\|_F` (``"rms_match"``: the SGD
  step has the Frobenius norm of an orthogonal factor of the same shape).
  ``tau=0`` always orthogonalizes (Muon); ``tau=inf`` never does (SGD).
  Decisions are monotone in the gap. An exact (or unresolvable) repeated
  singular value gives :math:`\kappa = 0`, hence an SGD step for any
  ``tau > 0``. Slices along batch axes (layer stacks, conv taps) decide
  independently.

  The orthogonalizer sees the whole tree every step (both branches are
  computed and selected, which keeps the step jittable and batched). The
  spectra of all matrices come from values-only eigensolves of their
  float64 Gram matrices (:func:`spectral_gaps`): on the host CPU or on the
  device, as ``precision`` says.

  Args:
    orthogonalizer: e.g. :func:`scale_by_newton_schulz`.
    tau: gate threshold in the units of ``tau_mode``; injectable with
      ``optax.inject_hyperparams``. The default 0.3 (``"spacing"``) is the
      5-17th percentile of rho for random matrices at every width from 16
      to 1024 (``experiments/gate_scaling``): an SGD step where the smallest
      gap is ~3x tighter than an unstructured matrix's. On the momenta of
      Qwen3 trainings it orthogonalizes 73% (hidden 128) and 64% (hidden
      1024) of the matrices (``experiments/spectra``).
    tau_mode: ``"spacing"``, ``"relative"`` or ``"absolute"``, see above.
    gap_every: re-measure each matrix's spectrum every ``gap_every`` steps
      and reuse its last statistics in between; the decision is re-taken
      every step against the current tau. 1 is the paper. With a Python
      int k > 1 the work is spread evenly: matrix j of each group of
      equal-shape matrices is measured on the steps ``t % k == j % k``
      (:func:`~mimuon_optax._matrix.run_staggered`), so every step measures
      about 1/k of them and none is k times slower. An injected (traced)
      ``gap_every`` re-measures all matrices on steps 0, k, 2k, ...
    lagged_gate: False (the paper): step t decides on the spectrum of its own
      input :math:`M_t`. True: on the spectrum of the previous step's input
      :math:`M_{t-1}`, kept in the state (``previous``: one more copy of the
      matrix leaves, in ``promote_types(param dtype, float32)``); the
      selected step is still ``orthogonalizer(M_t)`` or :math:`\gamma M_t`.
      The measurement then depends on the state alone, not on this step's
      gradients, so a host gate can run while the device computes the
      forward and backward pass of a whole jitted training step. The first
      step measures the zero matrix (no gap: a Muon step). Deterministic
      and resumable bit for bit (the input lives in the state); along the
      exact gate's trajectory it decides differently exactly where the
      exact decision flips from one step to the next
      (``experiments/gap_every``). Composes with ``gap_every``.
    sgd_scale: ``"none"`` or ``"rms_match"``, see above.
    rank_tol: singular values at or below ``rank_tol * s_max`` count as zero;
      None: ``max(m, n) * eps(float32)`` (numpy's ``matrix_rank`` default).
    precision: how the spectrum is computed: ``"auto"`` (``"host"`` on CPU
      and TPU, ``"float64"`` on GPU), ``"float64"`` (on the device),
      ``"host"`` (float64 LAPACK on the host CPU, through a callback) or
      ``"float32"`` (a float32 SVD; blind at width >= 256, warns); see
      :func:`spectral_gap` for the resolution of each. The state's
      ``tau_floor`` is that resolution in tau's units: a tau at or below it
      cannot be honoured (gaps under the resolution count as 0). In
      ``"relative"`` mode a constant tau below it warns at trace time.
    weight_dimension_numbers: as in :func:`scale_by_newton_schulz`.
    mesh: spread the gap test's whole matrices over this mesh (see
      :func:`spectral_gaps`); give the orthogonalizer the same ``mesh``.
    mesh_axes: mesh axes to spread over; None: all.
    context: a :class:`MatrixContext` holding ``weight_dimension_numbers``,
      ``mesh`` and ``mesh_axes`` (give either it or them); pass the
      orthogonalizer the same one, as :func:`mimuon` does.

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`MiMuonMixState` (read it with :func:`mix_diagnostics`).

  Example:
    >>> import jax.numpy as jnp
    >>> import mimuon_optax
    >>> tx = mimuon_optax.mimuon_mix(
    ...     mimuon_optax.scale_by_newton_schulz(), tau=0.1, tau_mode="absolute")
    >>> m = jnp.diag(jnp.array([3.0, 2.95, 1.0]))  # kappa = 0.05 < 0.1
    >>> out, state = tx.update(m, tx.init(m))
    >>> bool(state.orthogonalized), bool((out == m).all())
    (False, True)
  """
  if tau_mode not in TAU_MODES:
    raise ValueError(f'tau_mode must be one of {TAU_MODES}, got {tau_mode!r}')
  if sgd_scale not in SGD_SCALES:
    raise ValueError(f'sgd_scale must be one of {SGD_SCALES}, got'
                     f' {sgd_scale!r}')
  _checks.check_real_scalar('tau', tau, lambda v: v >= 0,
                            'a non-negative real scalar (inf allowed)')
  if isinstance(gap_every, int) and gap_every < 1:
    raise ValueError(f'gap_every must be >= 1, got {gap_every}')
  if not isinstance(lagged_gate, bool):
    raise TypeError(f'lagged_gate must be a bool, got {lagged_gate!r}')
  context = _context.resolve(
      context, weight_dimension_numbers=weight_dimension_numbers, mesh=mesh,
      mesh_axes=mesh_axes)
  _gap.resolve_precision(precision, context.mesh)  # Fail early.

  def init_fn(params):
    views = context.views(params)
    per_matrix = lambda dtype, fill=0: _matrix.map_matrices(
        lambda view, _: jnp.full(view.batch_shape, fill, dtype), views, params)
    return MiMuonMixState(
        count=jnp.zeros([], jnp.int32),
        orthogonalized=per_matrix(jnp.bool_),
        min_gap=per_matrix(jnp.float32, jnp.inf),
        rel_gap=per_matrix(jnp.float32, jnp.inf),
        rho=per_matrix(jnp.float32, jnp.inf),
        tau_floor=per_matrix(jnp.float32),
        orth_count=per_matrix(jnp.int32),
        inner_state=orthogonalizer.init(params),
        previous=(_matrix.map_matrices(
            lambda view, p: jnp.zeros(p.shape, _previous_dtype(p.dtype)),
            views, params) if lagged_gate else None),
    )

  floor = _tau_floor(tau_mode)

  def as_values(stats):
    return [(st.min_gap, st.rel_gap, st.rho, floor(st)) for st in stats]

  def measure_stacks(stacks):
    return as_values(_gap.spectral_gaps(
        stacks, rank_tol=rank_tol, precision=precision, context=context))

  def matrix_stacks(views, updates):
    """The (B, M, N) stack of every matrix leaf, in leaf order."""
    views_flat, treedef = jax.tree.flatten(views, is_leaf=lambda x: x is None)
    leaves = treedef.flatten_up_to(updates)
    idx = [i for i, v in enumerate(views_flat) if v is not None]
    return [views_flat[i].to_matrices(leaves[i]) for i in idx]

  def measure(views, updates, state, staggered, fresh=None):
    """(min_gap, rel_gap, rho, tau_floor) trees, one value per matrix.

    ``fresh``: the per-stack values when already measured (the overlapped
    host path); otherwise measured here.
    """
    previous = (state.min_gap, state.rel_gap, state.rho, state.tau_floor)
    views_flat, treedef = jax.tree.flatten(views, is_leaf=lambda x: x is None)
    old = [treedef.flatten_up_to(tree) for tree in previous]
    idx = [i for i, v in enumerate(views_flat) if v is not None]
    stacks = matrix_stacks(views, updates)
    if fresh is None and not staggered:
      fresh = measure_stacks(stacks)
    elif fresh is None:  # 1/gap_every of the matrices per step.
      fresh = _matrix.run_staggered(
          measure_stacks, stacks,
          [tuple(o[i].reshape(-1) for o in old) for i in idx], state.count,
          gap_every)
    for i, values in zip(idx, fresh):
      for field, value in enumerate(values):
        old[field][i] = views_flat[i].per_matrix(value)
    return tuple(treedef.unflatten(o) for o in old)

  # The host gate measures while the device runs Newton-Schulz (both need
  # only the momentum) where it can: every matrix measured every step, no
  # mesh. Elsewhere (mesh=, gap_every > 1 or injected) it measures in one
  # callback, after Newton-Schulz.
  overlap = (isinstance(gap_every, int) and gap_every == 1
             and context.mesh is None
             and _gap.resolve_precision(precision, None) == 'host')

  def orthogonalize_and_measure(views, updates, target, state, params):
    # Orthogonalizes `updates`; measures `target` (the same, or the previous
    # step's input with lagged_gate).
    stacks = matrix_stacks(views, target)
    if not overlap or not stacks:
      orth, inner_state = orthogonalizer.update(
          updates, state.inner_state, params)
      if isinstance(gap_every, int):
        return orth, inner_state, measure(views, target, state,
                                          staggered=gap_every > 1)
      # Injected (traced): everything on steps 0, k, 2k, ...
      return orth, inner_state, jax.lax.cond(
          state.count % gap_every == 0,
          lambda: measure(views, target, state, staggered=False),
          lambda: (state.min_gap, state.rel_gap, state.rho, state.tau_floor))
    ticket, finish = _gap.start_host_gaps(stacks, rank_tol=rank_tol)
    # Newton-Schulz starts once the host jobs are handed out ...
    ticket, ns_input = jax.lax.optimization_barrier((ticket, updates))
    orth, inner_state = orthogonalizer.update(
        ns_input, state.inner_state, params)
    # ... and the statistics are collected once all of it is done.
    done = sum(jnp.real(x.reshape(-1)[0]).astype(jnp.float32)
               for x in matrix_stacks(views, orth))
    fresh = as_values(finish(done))
    return orth, inner_state, measure(views, target, state, staggered=False,
                                      fresh=fresh)

  def update_fn(updates, state, params=None):
    views = context.views(updates)
    if tau_mode == 'relative':
      _warn_below_resolution(tau, views, precision)
    _warn_float32_spectrum(views, precision)
    updates = context.like_params(views, updates, params)
    target, previous = updates, None
    if lagged_gate:
      target = state.previous
      previous = _matrix.map_matrices(lambda view, u, p: u.astype(p.dtype),
                                      views, updates, state.previous)
    orth, inner_state, measured = orthogonalize_and_measure(
        views, updates, target, state, params)
    min_gap, rel_gap, rho, tau_floor = measured
    metric = {'absolute': min_gap, 'relative': rel_gap, 'spacing': rho}[
        tau_mode]
    # Rank <= 1 has no gap (g = +inf): Muon's step, except at tau = inf,
    # which is SGD for every matrix.
    orthogonalized = _matrix.map_matrices(
        lambda view, g: (g >= tau) & (tau < jnp.inf), views, metric)

    def select(view, u, o, ortho):
      u_BxMxN = view.to_matrices(u)
      if sgd_scale == 'rms_match':
        norm_B11 = jnp.linalg.norm(
            u_BxMxN.astype(jnp.promote_types(u.dtype, jnp.float32)),
            axis=(-2, -1), keepdims=True)
        target = jnp.sqrt(min(view.fan_in, view.fan_out))
        gamma = jnp.where(norm_B11 > 0, target / norm_B11, 0.0)
        u_BxMxN = (u_BxMxN * gamma).astype(u.dtype)
      ortho_B11 = ortho.reshape(-1, 1, 1)
      return view.from_matrices(
          jnp.where(ortho_B11, view.to_matrices(o), u_BxMxN))

    out = _matrix.map_matrices(select, views, updates, orth, orthogonalized)
    out = context.like_params(views, out, params)
    orth_count = _matrix.map_matrices(
        lambda v, n, d: n + d.astype(jnp.int32), views, state.orth_count,
        orthogonalized)
    return out, MiMuonMixState(
        count=optax.safe_increment(state.count),
        orthogonalized=orthogonalized,
        min_gap=min_gap,
        rel_gap=rel_gap,
        rho=rho,
        tau_floor=tau_floor,
        orth_count=orth_count,
        inner_state=inner_state,
        previous=previous,
    )

  return optax.GradientTransformation(init_fn, update_fn)


def _previous_dtype(dtype) -> jnp.dtype:
  # Holds a float32 or bfloat16 momentum of any parameter exactly.
  return jnp.promote_types(dtype, jnp.float32)



def _tau_floor(tau_mode: str):
  """GapStats -> its resolution in the units of ``tau_mode``'s statistic."""
  def floor(st: _gap.GapStats) -> jax.Array:
    if tau_mode == 'absolute':
      return st.resolution
    if tau_mode == 'relative':
      return st.resolution / jnp.where(st.s_max > 0, st.s_max, 1.0)
    sqrt_r = jnp.sqrt(st.rank.astype(jnp.float32))
    return jnp.where(jnp.isfinite(st.median_gap) & (st.median_gap > 0),
                     st.resolution * sqrt_r / st.median_gap, 0.0)
  return floor


def _warn_below_resolution(tau, views, precision: str) -> None:
  """One warning at trace time when a constant relative tau is unresolvable."""
  try:
    tau = float(tau)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return  # A traced (injected) or scheduled tau: see the tau_floor field.
  shapes = [(v.fan_in, v.fan_out) for v in jax.tree.leaves(
      views, is_leaf=lambda x: isinstance(x, _matrix.MatrixView))]
  if not shapes or not 0 < tau:
    return
  # "float64" and "host" share one resolution; "auto" is one of them.
  precision = 'float32' if precision == 'float32' else 'float64'
  # A lower bound of tau_floor: ||X||_F >= s_max.
  floor = max(max(_gap.resolution_factor(precision, min(m, n)),
                  _gap.rounding_factor(m, n)) for m, n in shapes)
  if tau <= floor:
    warnings.warn(
        f'mimuon_mix: tau={tau:g} (relative) is at or below the gap'
        f' resolution {floor:.2g} * s_max of precision={precision!r}; gaps'
        ' below the resolution count as 0 (SGD step). See'
        ' MiMuonMixState.tau_floor.', stacklevel=3)


def _warn_float32_spectrum(views, precision: str) -> None:
  """Warns at trace time when a forced float32 SVD meets wide matrices.

  ``"auto"`` never picks ``"float32"``, so this fires only when a user asks
  for it, at width >= 256.
  """
  if precision != 'float32':
    return
  widths = [min(v.fan_in, v.fan_out) for v in jax.tree.leaves(
      views, is_leaf=lambda x: isinstance(x, _matrix.MatrixView))]
  if widths and max(widths) >= 256:
    k = max(widths)
    warnings.warn(
        f'mimuon_mix: the gap test runs a float32 SVD (precision='
        f'{precision!r}), which resolves gaps down to about'
        f' {_gap.resolution_factor("float32", k):.1e} * s_max at width {k};'
        ' real momenta at width >= 256 have smaller minimum gaps (1e-7 s_max'
        ' measured at 1024), which then count as 0 and take the SGD branch.'
        ' Use precision="auto" ("host" where the device lacks float64) and'
        ' watch MiMuonMixState.tau_floor.', stacklevel=3)


def mix_diagnostics(opt_state: Any) -> MiMuonMixState:
  """Finds the (single) :class:`MiMuonMixState` inside any optimizer state.

  Works through ``optax.chain``, ``optax.partition``,
  ``optax.inject_hyperparams`` and ``optax.MultiSteps`` states.

  Raises:
    ValueError: if the state holds no or several mix states.
  """
  found = [
      leaf for leaf in jax.tree.leaves(
          opt_state, is_leaf=lambda x: isinstance(x, MiMuonMixState))
      if isinstance(leaf, MiMuonMixState)
  ]
  if len(found) != 1:
    raise ValueError(f'Expected one MiMuonMixState in the optimizer state,'
                     f' found {len(found)}.')
  return found[0]
