"""musgd(): ultralytics' MuSGD (the YOLO26 optimizer), a Muon step then SGD."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import chex
import jax
import optax

from mimuon_optax import _checks
from mimuon_optax import _context
from mimuon_optax import _distributed
from mimuon_optax import _matrix
from mimuon_optax import _momentum
from mimuon_optax._alias import default_param_labels
from mimuon_optax._alias import scale_by_lr_scaling
from mimuon_optax._newton_schulz import scale_by_newton_schulz


class InTurnState(NamedTuple):
  """State of :func:`in_turn`."""

  first: optax.OptState  # state of the first transformation.
  second: optax.OptState  # state of the second transformation.


def in_turn(first: optax.GradientTransformation,
            second: optax.GradientTransformation
            ) -> optax.GradientTransformation:
  """Two optimizers stepping one after the other on the same gradient.

  ``second`` sees the params as ``first`` left them (``params + first's
  updates``, cast to the params' dtype as ``optax.apply_updates`` does); the
  two updates add up. This is a torch optimizer that changes a parameter in
  place between two parts of one step, as ultralytics' MuSGD does between
  its Muon and its SGD part (the SGD part's weight decay reads the moved
  parameter).

  Raises:
    ValueError: on ``update`` without ``params``.
  """

  def init_fn(params):
    return InTurnState(first.init(params), second.init(params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('update needs params: the second transformation'
                       ' reads them as the first one left them.')
    first_updates, first_state = first.update(updates, state.first, params)
    moved = optax.apply_updates(params, first_updates)
    second_updates, second_state = second.update(updates, state.second, moved)
    return (optax.tree.add(first_updates, second_updates),
            InTurnState(first_state, second_state))

  return optax.GradientTransformation(init_fn, update_fn)


def musgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: chex.Numeric = 0.937,
    weight_decay: chex.Numeric = 5e-4,
    *,
    muon_weight: chex.Numeric = 0.2,
    sgd_weight: chex.Numeric = 1.0,
    nesterov: bool = True,
    other_weight_decay: chex.Numeric = 0.0,
    ns_coeffs: Union[str, chex.Array, tuple] = 'jordan',
    ns_steps: int = 5,
    ns_dtype: Union[str, chex.ArrayDType] = 'float32',
    eps: chex.Numeric = 1e-7,
    lr_scaling: str = 'none',
    mu_dtype: Optional[chex.ArrayDType] = None,
    param_labels: Union[Any, Callable[[Any], Any], None] = None,
    weight_dimension_numbers: _matrix.WeightDimNums = None,
    batch_same_shapes: bool = True,
    mesh: Optional[jax.sharding.Mesh] = None,
    mesh_axes: _distributed.MeshAxes = None,
) -> optax.GradientTransformation:
  r"""MuSGD: a Muon step, then SGD with Nesterov on the moved weights.

  ultralytics' ``MuSGD`` as its trainer builds it for YOLO26 (``optimizer=
  MuSGD``). For a matrix :math:`W` (labelled ``"muon"``) with gradient
  :math:`G_t`, momentum :math:`\mu`, learning rate :math:`\eta`, weights
  :math:`a` (``muon_weight``), :math:`b` (``sgd_weight``) and decay
  :math:`\lambda`:

  .. math::
    M_t &= \mu M_{t-1} + (1 - \mu) G_t, \quad
    W' = W_t - \eta \, a \, \mathrm{NS}(\mu M_t + (1 - \mu) G_t), \\
    G'_t &= G_t + \lambda W', \quad B_t = \mu B_{t-1} + G'_t, \quad
    W_{t+1} = W' - \eta \, b \, (G'_t + \mu B_t).

  The decay reads :math:`W'`, the weight after the Muon part, as in
  ultralytics (``in_turn`` hands the moved params to the SGD part).
  Other leaves take the SGD line alone with ``other_weight_decay`` and
  :math:`b = 1`. ``nesterov=False`` uses :math:`M_t` and :math:`B_t`.
  NS is :func:`scale_by_newton_schulz` with Jordan's (3.4445, -4.7750,
  2.0315) five times after :math:`X / (\|X\|_F + \epsilon)`, and a conv
  kernel is one matrix through ``weight_dimension_numbers`` (HWIO:
  ``MuonDimensionNumbers((0, 1, 2), 3)``, the transpose of ultralytics'
  ``(out, in*kh*kw)`` up to a column order, with the same polar factor).

  Differences from ultralytics 8.4.190 that remain:

  - its NS runs in bfloat16, ours in ``ns_dtype``. On the conv net of
    ``tests/test_musgd.py`` the weights after 20 steps differ by 3e-7
    (relative) with both in float32, by 1e-3 from its bfloat16 with ours in
    float32, by 8e-3 with ours in bfloat16 (the rounding differs);
  - its :math:`\epsilon` is absolute, ours relative to the largest entry
    (scale-free; the same within 1e-7 relative for gradients of order 1);
  - its shape factor :math:`\sqrt{\max(1, \text{shape}[-2] /
    \text{shape}[-1])}` is 1 for square OIHW kernels (our
    ``lr_scaling="none"``) but :math:`\sqrt{\max(1, \text{out} /
    \text{in})}` for a 2-D ``Linear`` weight (``lr_scaling="original"``):
    one rule here for all leaves;
  - its trainer's groups (bias and BatchNorm without decay, the class heads
    at 3x lr), the warmup of lr and momentum, gradient clipping at norm 10
    and the EMA are the caller's;
    ``mimuon_optax.models.yolo26.optim.yolo26_musgd`` builds the groups for
    YOLO26.

  Args:
    learning_rate: scalar or schedule :math:`\eta`.
    momentum: :math:`\mu` of both parts, in [0, 1) (ultralytics sets 0.937
      after warmup).
    weight_decay: :math:`\lambda` of the matrix leaves' SGD part
      (ultralytics: ``5e-4 * batch * accumulate / 64``).
    muon_weight: :math:`a`, ultralytics' ``muon`` (its trainer: 0.2).
    sgd_weight: :math:`b`, ultralytics' ``sgd`` (its trainer: 1.0).
    nesterov: Nesterov momentum in both parts.
    other_weight_decay: decay of the other leaves (ultralytics' bias and
      BatchNorm groups: 0).
    ns_coeffs: Newton-Schulz schedule (see :func:`ns_schedule`).
    ns_steps: Newton-Schulz steps (static).
    ns_dtype: dtype of the Newton-Schulz iteration.
    eps: Newton-Schulz normalization epsilon (see :func:`newton_schulz`).
    lr_scaling: shape factor of the Muon part, see
      :func:`scale_by_lr_scaling`.
    mu_dtype: dtype of both momentum buffers (None: the params').
    param_labels: tree or callable of ``"muon"``/``"sgd"`` labels; None:
      leaves with dimension numbers (or 2-D, see
      :func:`default_param_labels`) are ``"muon"``.
    weight_dimension_numbers: ``MuonDimensionNumbers`` per leaf, as in
      :func:`muon`.
    batch_same_shapes: as in :func:`muon`.
    mesh: as in :func:`muon`.
    mesh_axes: as in :func:`muon`.

  Returns:
    An ``optax.GradientTransformation``; ``update`` needs ``params``.

  Raises:
    ValueError: at construction, for a concrete ``momentum`` outside [0, 1),
      bad ``ns_coeffs``/``ns_steps`` or an unknown ``lr_scaling``; at
      ``init``, naming the parameter path, for a ``"muon"`` leaf that is not
      2-D and has no dimension numbers; on ``update`` without ``params``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import mimuon_optax
    >>> params = {'conv': jnp.ones((3, 3, 4, 8)), 'b': jnp.zeros(8)}
    >>> dims = {'conv': mimuon_optax.MuonDimensionNumbers((0, 1, 2), 3),
    ...         'b': None}
    >>> tx = mimuon_optax.musgd(0.01, weight_dimension_numbers=dims)
    >>> state = tx.init(params)
    >>> grads = {'conv': jnp.ones((3, 3, 4, 8)), 'b': jnp.ones(8)}
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)

  References:
    Jocher, Qiu, Chaurasia, `Ultralytics YOLO
    <https://github.com/ultralytics/ultralytics>`_, version 8.4.190:
    ``ultralytics/optim/muon.py`` (MuSGD) and
    ``ultralytics/engine/trainer.py`` (``build_optimizer``)

    Jordan et al., `Muon: An optimizer for hidden layers in neural networks
    <https://kellerjordan.github.io/posts/muon/>`_, 2024
  """
  _checks.check_real_scalar('momentum', momentum, lambda v: 0 <= v < 1,
                            'a real scalar in [0, 1)')
  context = _context.MatrixContext(weight_dimension_numbers, mesh, mesh_axes,
                                   batch_same_shapes)
  if param_labels is None:
    param_labels = lambda p: jax.tree.map(
        {'muon': 'muon', 'adam': 'sgd'}.get,
        default_param_labels(p, weight_dimension_numbers))
  sgd = lambda decay, weight: optax.chain(
      optax.add_decayed_weights(decay),
      optax.trace(momentum, nesterov=nesterov, accumulator_dtype=mu_dtype),
      optax.scale(weight),
      optax.scale_by_learning_rate(learning_rate))
  muon_part = optax.chain(
      _momentum.momentum(momentum, nesterov=nesterov, mu_dtype=mu_dtype),
      scale_by_newton_schulz(ns_coeffs, ns_steps, ns_dtype, eps,
                             context=context),
      scale_by_lr_scaling(lr_scaling, context=context),
      optax.scale(muon_weight),
      optax.scale_by_learning_rate(learning_rate))
  return optax.partition(
      {'muon': in_turn(muon_part, sgd(weight_decay, sgd_weight)),
       'sgd': sgd(other_weight_decay, 1.0)},
      param_labels)
