"""Momentum: an exponential moving average of gradients, without bias correction."""

from __future__ import annotations

from typing import NamedTuple, Optional

import chex
import jax
import optax

from mimuon_optax import _checks


def check_beta(beta) -> None:
  """``0 <= beta < 1`` for a concrete real scalar; traced values pass."""
  _checks.check_real_scalar('beta', beta, lambda v: 0 <= v < 1,
                            'a real scalar in [0, 1)', allow_schedule=True)


class MomentumState(NamedTuple):
  """State of :func:`momentum`."""

  mu: optax.Updates  # EMA of gradients, like params, dtype=mu_dtype.


def momentum(
    beta: chex.Numeric = 0.95,
    *,
    nesterov: bool = True,
    mu_dtype: Optional[chex.ArrayDType] = None,
) -> optax.GradientTransformation:
  r"""Exponential moving average of gradients, as Muon and MiMuon use it.

  .. math::
    M_t = \beta M_{t-1} + (1 - \beta) G_t, \qquad
    \text{out}_t = \begin{cases}
      \beta M_t + (1 - \beta) G_t & \text{nesterov} \\
      M_t & \text{otherwise.}
    \end{cases}

  There is no bias correction: under Newton-Schulz the scale of the momentum
  cancels, and in MiMuon's SGD branch a correction would change the step the
  paper analyses. In the MiMuon paper's notation the EMA is
  :math:`M_t = (1 - \beta') M_{t-1} + \beta' G_t`, so ``beta = 1 - beta'``.

  A zero gradient on a zero state gives a zero output; NaN/Inf gradients
  propagate into the state (wrap the optimizer in ``optax.apply_if_finite`` to
  skip such steps).

  Args:
    beta: decay of the moving average, in [0, 1).
    nesterov: return the Nesterov look-ahead :math:`\beta M_t + (1-\beta) G_t`
      instead of :math:`M_t`.
    mu_dtype: dtype of the accumulator; None keeps the params' dtype. Outputs
      come in this dtype (``optax.apply_updates`` casts back to the params').

  Returns:
    An ``optax.GradientTransformation``.

  Raises:
    ValueError: at construction, for a concrete ``beta`` outside [0, 1) (NaN
      included). A traced ``beta`` (``optax.inject_hyperparams``) or a
      schedule cannot be checked there and is not checked later either.

  Example:
    >>> import jax.numpy as jnp
    >>> import mimuon_optax
    >>> tx = mimuon_optax.momentum(beta=0.5, nesterov=False)
    >>> state = tx.init(jnp.zeros(2))
    >>> out, state = tx.update(jnp.ones(2), state)
    >>> out
    Array([0.5, 0.5], dtype=float32)
  """
  check_beta(beta)
  if mu_dtype is not None:
    mu_dtype = jax.dtypes.canonicalize_dtype(mu_dtype)

  def init_fn(params):
    return MomentumState(mu=optax.tree.zeros_like(params, dtype=mu_dtype))

  def update_fn(updates, state, params=None):
    del params
    # cast_like keeps the state's dtype stable when beta is an injected
    # float32 array and the params are bfloat16.
    mu = optax.tree.cast_like(
        optax.tree.update_moment(updates, state.mu, beta, 1), state.mu)
    if nesterov:
      out = optax.tree.update_moment(updates, mu, beta, 1)
    else:
      out = mu
    out = optax.tree.cast_like(out, mu)
    return out, MomentumState(mu=mu)

  return optax.GradientTransformation(init_fn, update_fn)

