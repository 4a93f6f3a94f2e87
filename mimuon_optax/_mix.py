"""mimuon_mix: per matrix, orthogonalize the momentum or pass it to SGD."""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from mimuon_optax import _distributed
from mimuon_optax import _gap
from mimuon_optax import _matrix

TAU_MODES = ('relative', 'absolute')
SGD_SCALES = ('none', 'rms_match')


class MiMuonMixState(NamedTuple):
  """State of :func:`mimuon_mix`; per-matrix fields are the diagnostics.

  Per-matrix fields hold, for every matrix leaf, an array of the leaf's batch
  shape (``()`` for a plain 2-D kernel, ``(L,)`` for a layer stack).
  """

  count: jax.Array  # shape=(), int32; update calls so far.
  orthogonalized: optax.Updates  # per matrix, bool; last decision.
  min_gap: optax.Updates  # per matrix, f32; last measured min gap (abs).
  rel_gap: optax.Updates  # per matrix, f32; min_gap / s_max.
  orth_count: optax.Updates  # per matrix, int32; steps orthogonalized.
  inner_state: optax.OptState  # the orthogonalizer's state.


def mimuon_mix(
    orthogonalizer: optax.GradientTransformation,
    tau: chex.Numeric = 1e-4,
    *,
    tau_mode: str = 'relative',
    gap_every: int = 1,
    sgd_scale: str = 'none',
    rank_tol: float = _gap.RANK_TOL,
    dup_tol: float = _gap.DUP_TOL,
    weight_dimension_numbers: _matrix.WeightDimNums = None,
    mesh: jax.sharding.Mesh | None = None,
    mesh_axes: _distributed.MeshAxes = None,
) -> optax.GradientTransformation:
  r"""MiMuon's gate: orthogonalize a matrix only if its spectrum is separated.

  For each matrix :math:`M` (the incoming updates, usually the momentum) with
  singular-value min gap :math:`\kappa` (see :func:`spectral_gap`):

  .. math::
    \text{out} = \begin{cases}
      \mathrm{orthogonalizer}(M) \approx U V^\top
        & \kappa \ge \tau \quad (\kappa / s_{\max} \ge \tau
          \text{ if relative}) \\
      \gamma M & \text{otherwise,}
    \end{cases}

  with :math:`\gamma = 1` (``sgd_scale="none"``, the paper) or
  :math:`\gamma = \sqrt{\min(m, n)} / \|M\|_F` (``"rms_match"``: the SGD step
  has the Frobenius norm of an orthogonal factor of the same shape).
  ``tau=0`` always orthogonalizes (Muon); ``tau=inf`` never does (SGD).
  Slices along batch axes (layer stacks, conv taps) decide independently.

  The orthogonalizer sees the whole tree every step (both branches are
  computed and selected, which keeps the step jittable and batched). The
  spectra of all matrices come from one batched ``eigvalsh`` of their
  zero-padded Gram matrices (:func:`spectral_gaps`).

  Args:
    orthogonalizer: e.g. :func:`scale_by_newton_schulz`.
    tau: gate threshold; injectable with ``optax.inject_hyperparams``. The
      default 1e-4 (relative) comes from ``experiments/spectra``: real
      momenta of a tiny Qwen3 have median relative gaps of 2-4e-4, so 1e-3
      sent 100% of them to SGD (and lost to Muon), while 1e-4 orthogonalizes
      ~97%. Relative gaps shrink with matrix size (~k^-1.5 for Gaussian
      k x 3k), so at 1024-wide matrices 1e-4 rejects most steps: tune it.
    tau_mode: ``"relative"`` compares :math:`\kappa / s_{\max}` with tau,
      ``"absolute"`` compares :math:`\kappa` itself.
    gap_every: recompute the spectrum every ``gap_every`` steps (on steps
      0, k, 2k, ...) and reuse the last measured gap in between; the decision
      is re-taken every step against the current tau. 1 is the paper.
    sgd_scale: ``"none"`` or ``"rms_match"``, see above.
    rank_tol: singular values at or below ``rank_tol * s_max`` count as zero.
    dup_tol: see :func:`spectral_gap`.
    weight_dimension_numbers: as in :func:`scale_by_newton_schulz`.
    mesh: spread the gap test's whole matrices over this mesh (see
      :func:`spectral_gaps`); give the orthogonalizer the same ``mesh``.
    mesh_axes: mesh axes to spread over; None: all.

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`MiMuonMixState` (read it with :func:`mix_diagnostics`).

  Example:
    >>> import jax.numpy as jnp
    >>> import mimuon_optax
    >>> tx = mimuon_optax.mimuon_mix(
    ...     mimuon_optax.scale_by_newton_schulz(), tau=0.5)
    >>> m = jnp.diag(jnp.array([3.0, 2.9, 1.0]))  # rel gap 0.1/3 < 0.5
    >>> out, state = tx.update(m, tx.init(m))
    >>> bool(state.orthogonalized), bool((out == m).all())
    (False, True)
  """
  if tau_mode not in TAU_MODES:
    raise ValueError(f'tau_mode must be one of {TAU_MODES}, got {tau_mode!r}')
  if sgd_scale not in SGD_SCALES:
    raise ValueError(f'sgd_scale must be one of {SGD_SCALES}, got'
                     f' {sgd_scale!r}')
  if mesh is not None:
    _distributed.check_mesh(mesh, mesh_axes)  # Fail early.

  def init_fn(params):
    per_matrix = lambda dtype, fill=0: _matrix.zeros_per_matrix(
        params, weight_dimension_numbers, dtype, fill)
    return MiMuonMixState(
        count=jnp.zeros([], jnp.int32),
        orthogonalized=per_matrix(jnp.bool_),
        min_gap=per_matrix(jnp.float32, jnp.inf),
        rel_gap=per_matrix(jnp.float32, jnp.inf),
        orth_count=per_matrix(jnp.int32),
        inner_state=orthogonalizer.init(params),
    )

  def update_fn(updates, state, params=None):
    views = _matrix.matrix_views(updates, weight_dimension_numbers)
    if mesh is not None:
      updates = _distributed.like_params(views, updates, params)
    orth, inner_state = orthogonalizer.update(
        updates, state.inner_state, params)

    def remeasure():
      stats = _matrix.map_stacks(
          lambda stacks: _gap.spectral_gaps(
              stacks, rank_tol=rank_tol, dup_tol=dup_tol, mesh=mesh,
              mesh_axes=mesh_axes), views, updates)
      pick = lambda field: _matrix.map_matrices(
          lambda view, st: view.per_matrix(getattr(st, field)), views, stats)
      return pick('min_gap'), pick('rel_gap')

    if isinstance(gap_every, int) and gap_every == 1:
      min_gap, rel_gap = remeasure()
    else:
      min_gap, rel_gap = jax.lax.cond(
          state.count % gap_every == 0, remeasure,
          lambda: (state.min_gap, state.rel_gap))
    metric = rel_gap if tau_mode == 'relative' else min_gap
    decide = lambda view, g: g >= tau
    orthogonalized = _matrix.map_matrices(decide, views, metric)

    def select(view, u, o, ortho):
      u_BxMxN = view.to_matrices(u)
      if sgd_scale == 'rms_match':
        norm_B11 = jnp.linalg.norm(
            u_BxMxN.astype(jnp.float32), axis=(-2, -1), keepdims=True)
        target = jnp.sqrt(min(view.fan_in, view.fan_out))
        gamma = jnp.where(norm_B11 > 0, target / norm_B11, 0.0)
        u_BxMxN = (u_BxMxN * gamma).astype(u.dtype)
      ortho_B11 = ortho.reshape(-1, 1, 1)
      return view.from_matrices(
          jnp.where(ortho_B11, view.to_matrices(o), u_BxMxN))

    out = _matrix.map_matrices(select, views, updates, orth, orthogonalized)
    if mesh is not None:
      out = _distributed.like_params(views, out, params)
    orth_count = _matrix.map_matrices(
        lambda v, n, d: n + d.astype(jnp.int32), views, state.orth_count,
        orthogonalized)
    return out, MiMuonMixState(
        count=optax.safe_increment(state.count),
        orthogonalized=orthogonalized,
        min_gap=min_gap,
        rel_gap=rel_gap,
        orth_count=orth_count,
        inner_state=inner_state,
    )

  return optax.GradientTransformation(init_fn, update_fn)


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
