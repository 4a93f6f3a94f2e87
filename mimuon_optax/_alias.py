"""muon() and mimuon(): the matrix transforms chained next to AdamW."""

from __future__ import annotations

import re
from typing import Any, Callable, Optional, Union

import chex
import jax
import optax
from optax.contrib import MuonDimensionNumbers

from mimuon_optax import _context
from mimuon_optax import _distributed
from mimuon_optax import _matrix
from mimuon_optax import _newton_schulz
from mimuon_optax import _paths
from mimuon_optax._mix import DEFAULT_TAU
from mimuon_optax._mix import mimuon_mix
from mimuon_optax._momentum import momentum
from mimuon_optax._newton_schulz import scale_by_newton_schulz

LR_SCALINGS = ('none', 'original', 'match_adamw')
# Leaves with a path component (or a '_'/'-'/'.'-separated token of one) equal
# to one of these go to AdamW even when they are matrices: embeddings and
# output heads. Whole tokens only: 'multihead_attn' is a matrix.
NON_MATRIX_PATH_WORDS = ('embed', 'embedding', 'embeddings', 'lm_head', 'wte',
                         'wpe', 'head')


def is_non_matrix_path(path) -> bool:
  """True when a component or a token of one is in NON_MATRIX_PATH_WORDS."""
  for name in (n.lower() for n in _paths.path_names(path)):
    tokens = {name, *re.split(r'[_\-.]', name)}
    if tokens & set(NON_MATRIX_PATH_WORDS):
      return True
  return False


def default_param_labels(
    params: Any,
    weight_dimension_numbers: _matrix.WeightDimNums = None,
) -> Any:
  """``"muon"`` for matrix-optimizer leaves, ``"adam"`` for the rest.

  With a tree (or callable) of ``weight_dimension_numbers`` (a prefix tree is
  allowed: None or one entry covers a whole subtree, as in
  ``optax.contrib.muon``), a leaf is a matrix iff its entry is not None.
  Otherwise a leaf is a matrix iff ``ndim == 2`` (as in
  ``optax.contrib.muon``) and no component of its path, nor a
  ``_``-separated token of one, is in ``NON_MATRIX_PATH_WORDS`` (embeddings
  and output heads stay with AdamW; ``multihead_attn/kernel`` is a matrix).
  """
  dim_nums = weight_dimension_numbers
  if callable(dim_nums):
    dim_nums = dim_nums(params)
  if dim_nums is not None and not isinstance(dim_nums, MuonDimensionNumbers):
    dim_nums = _matrix.expand_prefix(dim_nums, params)
    return jax.tree.map(
        lambda _, d: 'adam' if d is None else 'muon', params, dim_nums,
        is_leaf=lambda x: x is None)

  def label(path, x):
    is_matrix = x.ndim == 2 and not is_non_matrix_path(path)
    return 'muon' if is_matrix else 'adam'

  return jax.tree_util.tree_map_with_path(label, params)


def scale_by_lr_scaling(
    lr_scaling: str = 'original',
    *,
    weight_dimension_numbers: _matrix.WeightDimNums = None,
    consistent_rms: Optional[chex.Numeric] = None,
    context: Optional[_context.MatrixContext] = None,
) -> optax.GradientTransformation:
  """Per-matrix learning-rate factor from the matrix shape.

  ``"none"``: 1; ``"original"``: ``sqrt(max(1, fan_out / fan_in))`` (Jordan;
  ``optax.contrib.muon`` with ``consistent_rms=None``); ``"match_adamw"``:
  ``0.2 * sqrt(max(fan_in, fan_out))`` (Moonlight, update RMS ~ AdamW's).
  fan_in is the product of the reduction axes. A ``consistent_rms`` number
  (``optax.contrib.muon``'s option, injectable) replaces ``lr_scaling`` by
  ``consistent_rms * sqrt(max(fan_in, fan_out))``. ``weight_dimension_numbers``
  or a ``context`` holding them (:class:`MatrixContext`) say which axes are
  fan-in and fan-out.
  """
  context = _context.resolve(
      context, weight_dimension_numbers=weight_dimension_numbers)
  if lr_scaling not in LR_SCALINGS:
    raise ValueError(f'lr_scaling must be one of {LR_SCALINGS}, got'
                     f' {lr_scaling!r}')
  if lr_scaling == 'none' and consistent_rms is None:
    return optax.identity()

  def factor(view):
    fan_in, fan_out = view.fan_in, view.fan_out
    if consistent_rms is not None:
      return max(fan_in, fan_out) ** 0.5 * consistent_rms
    if lr_scaling == 'original':
      return max(1.0, fan_out / fan_in) ** 0.5
    return 0.2 * max(fan_in, fan_out) ** 0.5

  def update_fn(updates, state, params=None):
    del params
    views = context.views(updates)
    scale = lambda view, u: (u * factor(view)).astype(u.dtype)
    return _matrix.map_matrices(scale, views, updates), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


_OPTAX_PRESETS = {'standard': 'jordan', 'dion': 'you'}


def _resolve_common(
    *, ns_coeffs, adaptive, preconditioning, ns_method, lr_scaling,
    consistent_rms, muon_weight_dimension_numbers, weight_dimension_numbers,
):
  """optax.contrib.muon's options -> ours, checked at construction."""
  del adaptive  # Any bool; passed to scale_by_newton_schulz as is.
  _newton_schulz.check_options(preconditioning, ns_method, None)
  if isinstance(ns_coeffs, str):
    ns_coeffs = _OPTAX_PRESETS.get(ns_coeffs, ns_coeffs)
  if lr_scaling is not None and consistent_rms is not None:
    raise ValueError('Pass lr_scaling or consistent_rms, not both.')
  if lr_scaling is None:
    lr_scaling = 'original'
  if (muon_weight_dimension_numbers is not None
      and weight_dimension_numbers is not None):
    raise ValueError('Pass muon_weight_dimension_numbers or its alias'
                     ' weight_dimension_numbers, not both.')
  dims = (muon_weight_dimension_numbers
          if muon_weight_dimension_numbers is not None
          else weight_dimension_numbers)
  return ns_coeffs, lr_scaling, dims


def _with_adamw(direction, context, lr_scaling, args):
  """:func:`_matrix_optimizer_with_adamw` from muon()'s / mimuon()'s args."""
  pick = lambda *names: {n: args[n] for n in names}
  return _matrix_optimizer_with_adamw(
      direction, lr_scaling=lr_scaling, context=context,
      adam_eps=args['eps'] if args['adam_eps'] is None else args['adam_eps'],
      adam_nesterov=(args['nesterov'] if args['adam_nesterov'] is None
                     else args['adam_nesterov']),
      **pick('learning_rate', 'weight_decay', 'weight_decay_mask',
             'consistent_rms', 'adam_learning_rate', 'adam_b1', 'adam_b2',
             'adam_eps_root', 'adam_weight_decay', 'mu_dtype',
             'param_labels'))


def _matrix_optimizer_with_adamw(
    direction: optax.GradientTransformation,
    *,
    learning_rate, weight_decay, weight_decay_mask, lr_scaling,
    consistent_rms, adam_learning_rate, adam_b1, adam_b2, adam_eps,
    adam_eps_root, adam_weight_decay, adam_nesterov, mu_dtype, param_labels,
    context,
) -> optax.GradientTransformation:
  """direction -> shape scaling -> decoupled decay -> lr; AdamW elsewhere."""
  if param_labels is None:
    param_labels = lambda p: default_param_labels(
        p, context.weight_dimension_numbers)
  return optax.partition(
      {
          'muon': optax.chain(
              direction,
              scale_by_lr_scaling(lr_scaling, consistent_rms=consistent_rms,
                                  context=context),
              optax.add_decayed_weights(weight_decay, weight_decay_mask),
              optax.scale_by_learning_rate(learning_rate),
          ),
          'adam': optax.adamw(
              learning_rate=(learning_rate if adam_learning_rate is None
                             else adam_learning_rate),
              b1=adam_b1, b2=adam_b2, eps=adam_eps, eps_root=adam_eps_root,
              weight_decay=adam_weight_decay, mu_dtype=mu_dtype,
              nesterov=adam_nesterov),
      },
      param_labels,
  )


def muon(
    learning_rate: optax.ScalarOrSchedule,
    ns_coeffs: Union[str, chex.Array, tuple] = 'polar_express',
    ns_steps: int = 5,
    beta: chex.Numeric = 0.95,
    eps: chex.Numeric = 1e-8,
    weight_decay: chex.Numeric = 0.0,
    weight_decay_mask: Union[Any, Callable[[Any], Any], None] = None,
    mu_dtype: Optional[chex.ArrayDType] = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = 'frobenius',
    adam_b1: chex.Numeric = 0.9,
    adam_b2: chex.Numeric = 0.999,
    adam_eps_root: chex.Numeric = 0.0,
    adam_weight_decay: chex.Numeric = 0.0,
    adam_learning_rate: Optional[optax.ScalarOrSchedule] = None,
    muon_weight_dimension_numbers: _matrix.WeightDimNums = None,
    consistent_rms: Optional[chex.Numeric] = None,
    # Ours (not in optax.contrib.muon):
    ns_dtype: Union[str, chex.ArrayDType] = 'bfloat16',
    ns_method: str = 'standard',
    adam_eps: Optional[chex.Numeric] = None,
    adam_nesterov: Optional[bool] = None,
    lr_scaling: Optional[str] = None,
    param_labels: Union[Any, Callable[[Any], Any], None] = None,
    weight_dimension_numbers: _matrix.WeightDimNums = None,
    batch_same_shapes: bool = True,
    mesh: Optional[jax.sharding.Mesh] = None,
    mesh_axes: _distributed.MeshAxes = None,
) -> optax.GradientTransformation:
  r"""Muon: momentum orthogonalized by Newton-Schulz, AdamW for the rest.

  For every matrix :math:`W` (labelled ``"muon"``), with momentum
  :math:`M_t` from :func:`momentum` and :math:`O_t \approx U V^\top` its
  orthogonal polar factor from :func:`scale_by_newton_schulz`:

  .. math::
    W_{t+1} = (1 - \eta_t \lambda) W_t - \eta_t \, c(W) \, O_t,

  where :math:`c(W)` is the ``lr_scaling`` factor. Other leaves (vectors,
  embeddings, heads; see :func:`default_param_labels`) use ``optax.adamw``.

  The signature is ``optax.contrib.muon``'s (0.2.8): every call written for
  it (positional or keyword) is accepted with the same meaning; our options
  follow, keyword-only. Defaults differ only for ``ns_coeffs``
  (``"polar_express"``) and ``ns_dtype`` (bfloat16); see the page "Drop-in
  for optax.contrib.muon" (``docs/dropin.md``) for these and the remaining
  differences.

  Args:
    learning_rate: scalar or schedule for the matrix leaves.
    ns_coeffs: Newton-Schulz schedule (see :func:`ns_schedule`); optax's
      presets ``"standard"`` (= ``"jordan"``) and ``"dion"`` (= ``"you"``)
      are accepted too.
    ns_steps: Newton-Schulz steps (an int >= 1); static (``static_args``
      under ``optax.inject_hyperparams``).
    beta: momentum decay in [0, 1) (paper's beta is ``1 - beta``).
    eps: Newton-Schulz normalization epsilon (relative to the largest entry,
      see :func:`newton_schulz`), and AdamW's eps unless ``adam_eps`` is set.
    weight_decay: decoupled weight decay of matrix leaves (times lr).
    weight_decay_mask: tree (or prefix, or callable) of booleans: which
      matrix leaves get ``weight_decay`` (``optax.add_decayed_weights``).
    mu_dtype: momentum accumulator dtype (None: params' dtype), also AdamW's.
    nesterov: Nesterov momentum (and Nesterov AdamW unless
      ``adam_nesterov`` is set, as in optax).
    adaptive: scale each orthogonalized matrix by the dual norm
      :math:`\mathrm{Re}\,\mathrm{tr}(M^H O)` of its momentum (as optax;
      per matrix, see :func:`scale_by_newton_schulz`).
    preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or
      ``"schatten"``, optax's four (see :func:`newton_schulz`).
    adam_b1: AdamW beta1.
    adam_b2: AdamW beta2.
    adam_eps_root: AdamW eps_root.
    adam_weight_decay: AdamW decoupled weight decay.
    adam_learning_rate: AdamW learning rate; None uses ``learning_rate``.
    muon_weight_dimension_numbers: ``MuonDimensionNumbers`` per leaf: one
      for all, a tree (or prefix tree: None or one entry covers a subtree),
      or a callable returning one. None entries go to AdamW; a tree also sets
      the default labels.
    consistent_rms: None (``lr_scaling``, default ``"original"`` = optax's
      width scaling) or a number c: scale by ``c * sqrt(max(fan_in,
      fan_out))``.
    ns_dtype: dtype of the Newton-Schulz iteration (complex matrices:
      complex64).
    ns_method: ``"standard"``, ``"gram"`` or ``"auto"`` (Gram Newton-Schulz
      where the aspect ratio makes it cheaper); see
      :func:`scale_by_newton_schulz`.
    adam_eps: AdamW epsilon; None uses ``eps`` (as optax).
    adam_nesterov: Nesterov AdamW; None follows ``nesterov`` (as optax).
    lr_scaling: ``"none"``, ``"original"`` or ``"match_adamw"``, see
      :func:`scale_by_lr_scaling`; None: ``"original"``. Not with
      ``consistent_rms``.
    param_labels: tree or callable of ``"muon"``/``"adam"`` labels.
    weight_dimension_numbers: alias of ``muon_weight_dimension_numbers``.
    batch_same_shapes: run equal-shape matrices as one batched
      Newton-Schulz call; False runs one call per leaf.
    mesh: for params sharded on a ``jax.sharding.Mesh`` under ``jax.jit``:
      spread whole matrices over its devices for Newton-Schulz (and the gap
      test) instead of letting GSPMD communicate inside every iteration; see
      :func:`scale_by_newton_schulz`. None: plain GSPMD.
    mesh_axes: mesh axis names to spread matrices over; None: all.

  Raises:
    ValueError: at construction, naming the argument, for ``ns_steps < 1``,
      empty or misshapen ``ns_coeffs``, ``beta`` outside [0, 1), both
      ``lr_scaling`` and ``consistent_rms``, an unknown ``preconditioning``
      or ``ns_method``; at ``init``, naming the parameter path, for non-2-D
      matrix leaves without dimension numbers. Injected (traced)
      hyperparameters are not checked.

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import mimuon_optax
    >>> params = {'w': jnp.ones((4, 3)), 'b': jnp.zeros(3)}
    >>> tx = mimuon_optax.muon(learning_rate=0.02)
    >>> state = tx.init(params)
    >>> grads = {'w': jnp.eye(4, 3), 'b': jnp.ones(3)}
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)

  References:
    Jordan et al., `Muon: An optimizer for hidden layers in neural networks
    <https://kellerjordan.github.io/posts/muon/>`_, 2024

    Liu et al., `Muon is Scalable for LLM Training
    <https://arxiv.org/abs/2502.16982>`_, 2025

    Amsel et al., `The Polar Express
    <https://arxiv.org/abs/2505.16932>`_, 2025
  """
  ns_coeffs, lr_scaling, dims = _resolve_common(
      ns_coeffs=ns_coeffs, adaptive=adaptive, preconditioning=preconditioning,
      ns_method=ns_method, lr_scaling=lr_scaling, consistent_rms=consistent_rms,
      muon_weight_dimension_numbers=muon_weight_dimension_numbers,
      weight_dimension_numbers=weight_dimension_numbers)
  context = _context.MatrixContext(dims, mesh, mesh_axes, batch_same_shapes)
  direction = optax.chain(
      momentum(beta, nesterov=nesterov, mu_dtype=mu_dtype),
      scale_by_newton_schulz(
          ns_coeffs, ns_steps, ns_dtype, eps, preconditioning=preconditioning,
          adaptive=adaptive, ns_method=ns_method, context=context),
  )
  return _with_adamw(direction, context, lr_scaling, locals())


def mimuon(
    learning_rate: optax.ScalarOrSchedule,
    ns_coeffs: Union[str, chex.Array, tuple] = 'polar_express',
    ns_steps: int = 5,
    beta: chex.Numeric = 0.95,
    eps: chex.Numeric = 1e-8,
    weight_decay: chex.Numeric = 0.0,
    weight_decay_mask: Union[Any, Callable[[Any], Any], None] = None,
    mu_dtype: Optional[chex.ArrayDType] = None,
    *,
    tau: chex.Numeric = DEFAULT_TAU,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = 'frobenius',
    adam_b1: chex.Numeric = 0.9,
    adam_b2: chex.Numeric = 0.999,
    adam_eps_root: chex.Numeric = 0.0,
    adam_weight_decay: chex.Numeric = 0.0,
    adam_learning_rate: Optional[optax.ScalarOrSchedule] = None,
    muon_weight_dimension_numbers: _matrix.WeightDimNums = None,
    consistent_rms: Optional[chex.Numeric] = None,
    # Ours (not in optax.contrib.muon):
    ns_dtype: Union[str, chex.ArrayDType] = 'bfloat16',
    ns_method: str = 'standard',
    gap_every: int = 1,
    lagged_gate: bool = False,
    tau_mode: str = 'spacing',
    sgd_scale: str = 'none',
    rank_tol: Optional[float] = None,
    precision: str = 'auto',
    adam_eps: Optional[chex.Numeric] = None,
    adam_nesterov: Optional[bool] = None,
    lr_scaling: Optional[str] = None,
    param_labels: Union[Any, Callable[[Any], Any], None] = None,
    weight_dimension_numbers: _matrix.WeightDimNums = None,
    batch_same_shapes: bool = True,
    mesh: Optional[jax.sharding.Mesh] = None,
    mesh_axes: _distributed.MeshAxes = None,
) -> optax.GradientTransformation:
  r"""MiMuon (Mixed Muon): Muon where the spectrum is separated, SGD elsewhere.

  Per matrix, with momentum :math:`M_t` and :math:`\kappa_t` the minimum gap
  between its nonzero singular values (:func:`spectral_gap`), and
  :math:`g_t` the statistic of ``tau_mode`` (:math:`\kappa_t` itself with
  ``"absolute"``; by default the size-free :math:`\rho_t`):

  .. math::
    D_t = \begin{cases} U_t V_t^\top & g_t \ge \tau \\
                        \gamma M_t & \text{otherwise} \end{cases}, \qquad
    W_{t+1} = (1 - \eta_t \lambda) W_t - \eta_t \, c(W) \, D_t.

  ``tau=0`` is :func:`muon` exactly; ``tau=inf`` is momentum SGD with
  decoupled weight decay. See :func:`mimuon_mix` for ``tau_mode``,
  ``gap_every``, ``sgd_scale``, ``rank_tol``, ``precision`` and the per-matrix
  diagnostics (:func:`mix_diagnostics`); ``tau`` (keyword-only) is
  validated at construction (a non-negative real scalar, NaN rejected).
  Every other argument is as in :func:`muon` (the same positional order as
  ``optax.contrib.muon``). ``learning_rate``,
  ``tau``, ``weight_decay``, ``beta`` and ``gap_every`` can be injected with
  ``optax.inject_hyperparams`` (``static_args=("ns_steps",)``).

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import mimuon_optax
    >>> params = {'w': jnp.ones((4, 3)), 'b': jnp.zeros(3)}
    >>> tx = mimuon_optax.mimuon(learning_rate=0.02)
    >>> state = tx.init(params)
    >>> grads = {'w': jnp.eye(4, 3), 'b': jnp.ones(3)}
    >>> updates, state = tx.update(grads, state, params)
    >>> mimuon_optax.mix_diagnostics(state).orthogonalized['w']  # s = 1, 1, 1
    Array(False, dtype=bool)

  References:
    Huang, Luo, Chen, `Mixed Muon: cautious orthogonalization
    <https://arxiv.org/abs/2605.19619>`_, 2026
  """
  ns_coeffs, lr_scaling, dims = _resolve_common(
      ns_coeffs=ns_coeffs, adaptive=adaptive, preconditioning=preconditioning,
      ns_method=ns_method, lr_scaling=lr_scaling, consistent_rms=consistent_rms,
      muon_weight_dimension_numbers=muon_weight_dimension_numbers,
      weight_dimension_numbers=weight_dimension_numbers)
  context = _context.MatrixContext(dims, mesh, mesh_axes, batch_same_shapes)
  direction = optax.chain(
      momentum(beta, nesterov=nesterov, mu_dtype=mu_dtype),
      mimuon_mix(
          scale_by_newton_schulz(
              ns_coeffs, ns_steps, ns_dtype, eps,
              preconditioning=preconditioning, adaptive=adaptive,
              ns_method=ns_method, context=context),
          tau, tau_mode=tau_mode, gap_every=gap_every,
          lagged_gate=lagged_gate, sgd_scale=sgd_scale,
          rank_tol=rank_tol, precision=precision, context=context),
  )
  return _with_adamw(direction, context, lr_scaling, locals())
