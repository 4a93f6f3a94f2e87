"""A jitted train step and params/optimizer-state placement on a mesh.

  step = make_train_step(tx, loss_fn)                    # one device
  params, opt_state, state_sh = place_train_state(params, tx, mesh, param_sh)
  step = make_train_step(tx, loss_fn, mesh=mesh, param_sharding=param_sh,
                         opt_state_sharding=state_sh, batch_sharding=batch_sh)
  params, opt_state, loss = step(params, opt_state, batch)

``loss_fn(params, batch)`` is a scalar; with ``graphdef`` (from
``nnx.split(model, nnx.Param)``) it is ``loss_fn(model, batch)`` on the
merged model instead. On a mesh the params and the optimizer state keep
their shardings (``in_shardings`` == ``out_shardings``), the batch comes in
as ``batch_sharding`` says and the loss comes back replicated. Give
``muon``/``mimuon`` the same ``mesh`` so that Newton-Schulz and the gap test
work on whole matrices spread over it (see
``mimuon_optax.scale_by_newton_schulz``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import mimuon_optax

TrainStep = Callable[[Any, Any, Any], tuple[Any, Any, jax.Array]]


def place_train_state(
    params: Any,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    param_sharding: Any,
) -> tuple[Any, Any, Any]:
  """Puts ``params`` on ``mesh`` and initializes ``tx``'s state there.

  Each state leaf that copies a parameter (momentum, Adam moments) gets that
  parameter's sharding, the rest is replicated
  (``mimuon_optax.opt_state_shardings``); the state is built on the mesh,
  never whole on one device.

  Args:
    params: host arrays (numpy) or ``jax.Array`` s. With several processes
      (``jax.distributed``) every process passes the same values and builds
      only the shards of its own devices; arrays already spread over
      several processes are resharded.
    tx: the optimizer.
    mesh: the device mesh.
    param_sharding: a ``jax.sharding.Sharding`` per leaf of ``params``.

  Returns:
    ``(params, opt_state, opt_state_sharding)``, the first two on ``mesh``.

  Example:
    >>> import jax, jax.numpy as jnp, mimuon_optax
    >>> mesh = jax.make_mesh((1,), ("fsdp",))
    >>> params = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
    >>> sharding = jax.tree.map(
    ...     lambda _: jax.sharding.NamedSharding(mesh, P()), params)
    >>> params, opt_state, state_sh = place_train_state(
    ...     params, mimuon_optax.mimuon(0.02), mesh, sharding)
    >>> params["w"].sharding.mesh == mesh
    True
  """
  state_sharding = mimuon_optax.opt_state_shardings(
      tx.init, params, param_sharding, mesh)
  params = jax.tree.map(_put, params, param_sharding)
  opt_state = jax.jit(tx.init, out_shardings=state_sharding)(params)
  return params, opt_state, state_sharding


def _put(x: Any, sharding: jax.sharding.Sharding) -> jax.Array:
  """One leaf onto its sharding (from host values with several processes)."""
  if jax.process_count() == 1 or (isinstance(x, jax.Array)
                                  and not x.is_fully_addressable):
    return jax.device_put(x, sharding)
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding,
                                      lambda index: host[index])


def make_train_step(
    tx: optax.GradientTransformation,
    loss_fn: Callable[[Any, Any], jax.Array],
    *,
    graphdef: Any = None,
    mesh: jax.sharding.Mesh | None = None,
    param_sharding: Any = None,
    opt_state_sharding: Any = None,
    batch_sharding: Any = None,
    donate: bool = True,
) -> TrainStep:
  """``step(params, opt_state, batch) -> (params, opt_state, loss)``, jitted.

  Args:
    tx: the optimizer.
    loss_fn: ``loss_fn(params, batch) -> scalar``, or with ``graphdef``
      ``loss_fn(model, batch) -> scalar``.
    graphdef: from ``nnx.split(model, nnx.Param)``; the step then merges it
      with the params before calling ``loss_fn``.
    mesh: run on this mesh; needs the three shardings below. None: plain
      ``jax.jit`` (the arguments' placement decides).
    param_sharding: a sharding per parameter leaf.
    opt_state_sharding: from :func:`place_train_state` (or
      ``mimuon_optax.opt_state_shardings``).
    batch_sharding: the sharding of the batch (a pytree prefix of it).
    donate: donate the params and optimizer-state buffers to the step.

  Returns:
    The jitted step (``.lower(...).compile()`` compiles it ahead of time).

  Example:
    >>> import jax.numpy as jnp, mimuon_optax
    >>> params = {"w": jnp.eye(4)}
    >>> tx = mimuon_optax.muon(0.1)
    >>> loss_fn = lambda p, x: jnp.sum((x @ p["w"]) ** 2)
    >>> step = make_train_step(tx, loss_fn, donate=False)
    >>> _, _, loss = step(params, tx.init(params), jnp.ones((2, 4)))
    >>> float(loss)
    8.0
  """
  shardings = (param_sharding, opt_state_sharding, batch_sharding)
  if mesh is None and any(s is not None for s in shardings):
    raise ValueError("param_sharding, opt_state_sharding and batch_sharding"
                     " need mesh=")
  if mesh is not None and any(s is None for s in shardings):
    raise ValueError("mesh= needs param_sharding, opt_state_sharding and"
                     " batch_sharding")

  def loss_of(params, batch):
    if graphdef is None:
      return loss_fn(params, batch)
    return loss_fn(nnx.merge(graphdef, params), batch)

  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_of)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  kwargs: dict[str, Any] = {}
  if mesh is not None:
    kwargs = dict(in_shardings=shardings,
                  out_shardings=(param_sharding, opt_state_sharding,
                                 NamedSharding(mesh, P())))
  return jax.jit(step, donate_argnums=(0, 1) if donate else (), **kwargs)
