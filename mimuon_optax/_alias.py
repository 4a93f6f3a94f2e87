"""muon() and mimuon(): the matrix transforms chained next to AdamW."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import chex
import jax
import optax
from optax.contrib import MuonDimensionNumbers

from mimuon_optax import _distributed
from mimuon_optax import _matrix
from mimuon_optax._mix import DEFAULT_TAU
from mimuon_optax._mix import mimuon_mix
from mimuon_optax._momentum import momentum
from mimuon_optax._newton_schulz import scale_by_newton_schulz

LR_SCALINGS = ('none', 'original', 'match_adamw')
# Leaves whose path contains one of these go to AdamW even when ndim >= 2.
NON_MATRIX_PATH_WORDS = ('embed', 'lm_head', 'wte', 'head')


def default_param_labels(
    params: Any,
    weight_dimension_numbers: _matrix.WeightDimNums = None,
) -> Any:
  """``"muon"`` for matrix-optimizer leaves, ``"adam"`` for the rest.

  With a tree (or callable) of ``weight_dimension_numbers``, a leaf is a
  matrix iff its entry is not None. Otherwise a leaf is a matrix iff
  ``ndim >= 2`` and its path (lower-cased) contains none of
  ``NON_MATRIX_PATH_WORDS`` (embeddings and output heads stay with AdamW).
  """
  dim_nums = weight_dimension_numbers
  if callable(dim_nums):
    dim_nums = dim_nums(params)
  if dim_nums is not None and not isinstance(dim_nums, MuonDimensionNumbers):
    return jax.tree.map(
        lambda _, d: 'adam' if d is None else 'muon', params, dim_nums,
        is_leaf=lambda x: x is None)

  def label(path, x):
    name = jax.tree_util.keystr(path).lower()
    is_matrix = x.ndim >= 2 and not any(w in name for w in NON_MATRIX_PATH_WORDS)
    return 'muon' if is_matrix else 'adam'

  return jax.tree_util.tree_map_with_path(label, params)


def scale_by_lr_scaling(
    lr_scaling: str = 'original',
    *,
    weight_dimension_numbers: _matrix.WeightDimNums = None,
) -> optax.GradientTransformation:
  """Per-matrix learning-rate factor from the matrix shape.

  ``"none"``: 1; ``"original"``: ``sqrt(max(1, fan_out / fan_in))`` (Jordan);
  ``"match_adamw"``: ``0.2 * sqrt(max(fan_in, fan_out))`` (Moonlight, update
  RMS ~ AdamW's). fan_in is the product of the reduction axes.
  """
  if lr_scaling not in LR_SCALINGS:
    raise ValueError(f'lr_scaling must be one of {LR_SCALINGS}, got'
                     f' {lr_scaling!r}')
  if lr_scaling == 'none':
    return optax.identity()

  def factor(view):
    fan_in, fan_out = view.fan_in, view.fan_out
    if lr_scaling == 'original':
      return max(1.0, fan_out / fan_in) ** 0.5
    return 0.2 * max(fan_in, fan_out) ** 0.5

  def update_fn(updates, state, params=None):
    del params
    views = _matrix.matrix_views(updates, weight_dimension_numbers)
    scale = lambda view, u: (u * factor(view)).astype(u.dtype)
    return _matrix.map_matrices(scale, views, updates), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def _matrix_optimizer_with_adamw(
    direction: optax.GradientTransformation,
    *,
    learning_rate, weight_decay, lr_scaling, adam_learning_rate, adam_b1,
    adam_b2, adam_eps, adam_weight_decay, param_labels,
    weight_dimension_numbers,
) -> optax.GradientTransformation:
  """direction -> shape scaling -> decoupled decay -> lr; AdamW elsewhere."""
  if param_labels is None:
    param_labels = lambda p: default_param_labels(p, weight_dimension_numbers)
  return optax.partition(
      {
          'muon': optax.chain(
              direction,
              scale_by_lr_scaling(
                  lr_scaling, weight_dimension_numbers=weight_dimension_numbers),
              optax.add_decayed_weights(weight_decay),
              optax.scale_by_learning_rate(learning_rate),
          ),
          'adam': optax.adamw(
              learning_rate=(learning_rate if adam_learning_rate is None
                             else adam_learning_rate),
              b1=adam_b1, b2=adam_b2, eps=adam_eps,
              weight_decay=adam_weight_decay),
      },
      param_labels,
  )


def muon(
    learning_rate: optax.ScalarOrSchedule,
    beta: chex.Numeric = 0.95,
    ns_coeffs: Union[str, chex.Array] = 'polar_express',
    ns_steps: int = 5,
    ns_dtype: Union[str, chex.ArrayDType] = 'bfloat16',
    weight_decay: chex.Numeric = 0.0,
    eps: chex.Numeric = 1e-7,
    adam_learning_rate: Optional[optax.ScalarOrSchedule] = None,
    adam_b1: chex.Numeric = 0.9,
    adam_b2: chex.Numeric = 0.95,
    adam_eps: chex.Numeric = 1e-8,
    adam_weight_decay: chex.Numeric = 0.0,
    *,
    nesterov: bool = True,
    mu_dtype: Optional[chex.ArrayDType] = None,
    lr_scaling: str = 'original',
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

  Args:
    learning_rate: scalar or schedule for the matrix leaves.
    beta: momentum decay (paper's beta is ``1 - beta``).
    ns_coeffs: Newton-Schulz schedule (see :func:`ns_schedule`).
    ns_steps: Newton-Schulz steps; static (``static_args`` under
      ``optax.inject_hyperparams``).
    ns_dtype: dtype of the Newton-Schulz iteration.
    weight_decay: decoupled weight decay of matrix leaves (times lr).
    eps: Frobenius-normalization epsilon of Newton-Schulz.
    adam_learning_rate: AdamW learning rate; None uses ``learning_rate``.
    adam_b1: AdamW beta1.
    adam_b2: AdamW beta2.
    adam_eps: AdamW epsilon.
    adam_weight_decay: AdamW decoupled weight decay.
    nesterov: Nesterov momentum.
    mu_dtype: momentum accumulator dtype (None: params' dtype).
    lr_scaling: ``"none"``, ``"original"`` or ``"match_adamw"``, see
      :func:`scale_by_lr_scaling`.
    param_labels: tree or callable of ``"muon"``/``"adam"`` labels.
    weight_dimension_numbers: ``MuonDimensionNumbers`` per leaf (tree, one
      for all, or callable); a tree also sets the default labels.
    batch_same_shapes: run equal-shape matrices as one batched
      Newton-Schulz call; False runs one call per leaf.
    mesh: for params sharded on a ``jax.sharding.Mesh`` under ``jax.jit``:
      spread whole matrices over its devices for Newton-Schulz (and the gap
      test) instead of letting GSPMD communicate inside every iteration; see
      :func:`scale_by_newton_schulz`. None: plain GSPMD.
    mesh_axes: mesh axis names to spread matrices over; None: all.

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
  direction = optax.chain(
      momentum(beta, nesterov=nesterov, mu_dtype=mu_dtype),
      scale_by_newton_schulz(ns_coeffs, ns_steps, ns_dtype, eps,
                             weight_dimension_numbers=weight_dimension_numbers,
                             batch_same_shapes=batch_same_shapes,
                             mesh=mesh, mesh_axes=mesh_axes),
  )
  return _matrix_optimizer_with_adamw(
      direction, learning_rate=learning_rate, weight_decay=weight_decay,
      lr_scaling=lr_scaling, adam_learning_rate=adam_learning_rate,
      adam_b1=adam_b1, adam_b2=adam_b2, adam_eps=adam_eps,
      adam_weight_decay=adam_weight_decay, param_labels=param_labels,
      weight_dimension_numbers=weight_dimension_numbers)


def mimuon(
    learning_rate: optax.ScalarOrSchedule,
    tau: chex.Numeric = DEFAULT_TAU,
    beta: chex.Numeric = 0.95,
    ns_coeffs: Union[str, chex.Array] = 'polar_express',
    ns_steps: int = 5,
    ns_dtype: Union[str, chex.ArrayDType] = 'bfloat16',
    weight_decay: chex.Numeric = 0.0,
    eps: chex.Numeric = 1e-7,
    gap_every: int = 1,
    adam_learning_rate: Optional[optax.ScalarOrSchedule] = None,
    adam_b1: chex.Numeric = 0.9,
    adam_b2: chex.Numeric = 0.95,
    adam_eps: chex.Numeric = 1e-8,
    adam_weight_decay: chex.Numeric = 0.0,
    *,
    tau_mode: str = 'spacing',
    sgd_scale: str = 'none',
    rank_tol: Optional[float] = None,
    precision: str = 'auto',
    nesterov: bool = True,
    mu_dtype: Optional[chex.ArrayDType] = None,
    lr_scaling: str = 'original',
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
  diagnostics (:func:`mix_diagnostics`); every other argument (``mesh``
  and ``mesh_axes`` included) is as in :func:`muon`. ``learning_rate``,
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
  direction = optax.chain(
      momentum(beta, nesterov=nesterov, mu_dtype=mu_dtype),
      mimuon_mix(
          scale_by_newton_schulz(
              ns_coeffs, ns_steps, ns_dtype, eps,
              weight_dimension_numbers=weight_dimension_numbers,
              batch_same_shapes=batch_same_shapes,
              mesh=mesh, mesh_axes=mesh_axes),
          tau, tau_mode=tau_mode, gap_every=gap_every, sgd_scale=sgd_scale,
          rank_tol=rank_tol, precision=precision,
          weight_dimension_numbers=weight_dimension_numbers,
          mesh=mesh, mesh_axes=mesh_axes),
  )
  return _matrix_optimizer_with_adamw(
      direction, learning_rate=learning_rate, weight_decay=weight_decay,
      lr_scaling=lr_scaling, adam_learning_rate=adam_learning_rate,
      adam_b1=adam_b1, adam_b2=adam_b2, adam_eps=adam_eps,
      adam_weight_decay=adam_weight_decay, param_labels=param_labels,
      weight_dimension_numbers=weight_dimension_numbers)
