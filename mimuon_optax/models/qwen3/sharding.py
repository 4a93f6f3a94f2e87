"""Data x FSDP sharding of `Qwen3ForCausalLM` and a sharded train step.

  mesh = make_mesh(data=2, fsdp=4)                 # 8 devices, Auto axes
  graphdef, params = nnx.split(model, nnx.Param)
  params = nnx.as_pure(params)
  param_sh = param_shardings(params, mesh)         # FSDP over "fsdp"
  tx = mimuon_optax.mimuon(lr, weight_dimension_numbers=dims, mesh=mesh)
  params, opt_state, state_sh = shard_train_state(params, tx, mesh, param_sh)
  step = make_sharded_train_step(graphdef, tx, mesh, param_sh, state_sh)
  params, opt_state, loss = step(params, opt_state, tokens_BxTp1)

Every weight is split along one axis over the "fsdp" mesh axis and
replicated over "data"; the batch is split over both. `jax.jit` (GSPMD)
gathers each weight where the forward pass needs it. Passing the same `mesh`
to `muon`/`mimuon` makes Newton-Schulz and the MiMuon gap test run on whole
matrices spread over all devices (see `mimuon_optax.scale_by_newton_schulz`).

Two layouts (`shard_layers`):
  False  FSDP: the largest axis divisible by the fsdp size, the stacked
         layer axis L excluded (q_proj (L, D, H, Dh) -> D, gate_proj
         (L, D, F) -> F, embed_tokens (V, D) -> V).
  True   layer axis: stacked (`scan_layers=True`) weights split along L
         (needs L divisible by the fsdp size); the rest as above.
Vectors (norm scales) are replicated either way.
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

DATA, FSDP = "data", "fsdp"


def make_mesh(data: int = 1, fsdp: int | None = None,
              devices: Any = None) -> jax.sharding.Mesh:
  """A ``(data, fsdp)`` mesh with Auto axes (GSPMD chooses the collectives).

  ``fsdp=None`` takes every device not used by ``data``.
  """
  devices = np.asarray(jax.devices() if devices is None else devices)
  if fsdp is None:
    fsdp = devices.size // data
  if data * fsdp != devices.size:
    raise ValueError(f"data={data} x fsdp={fsdp} != {devices.size} devices.")
  return jax.sharding.Mesh(devices.reshape(data, fsdp), (DATA, FSDP),
                           axis_types=(jax.sharding.AxisType.Auto,) * 2)


def _names(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
          for k in path]


def param_specs(params: Any, fsdp_size: int, *,
                shard_layers: bool = False) -> Any:
  """A ``PartitionSpec`` per leaf of a Qwen3 params tree (see the module doc).

  Args:
    params: ``nnx.as_pure(nnx.state(model, nnx.Param))`` (arrays or
      ``jax.ShapeDtypeStruct`` s).
    fsdp_size: size of the "fsdp" mesh axis.
    shard_layers: split stacked layer weights along their layer axis.
  """
  def spec(path, leaf):
    shape = leaf.shape
    names = _names(path)
    if len(shape) < 2:
      return P()
    stacked = "layers" in names and not any(n.isdigit() for n in names)
    if stacked and shard_layers and shape[0] % fsdp_size == 0:
      return P(FSDP)
    first = 1 if stacked else 0
    candidates = [a for a in range(first, len(shape))
                  if shape[a] % fsdp_size == 0]
    if not candidates:
      return P()
    axis = max(candidates, key=lambda a: (shape[a], -a))
    return P(*([None] * axis + [FSDP]))

  return jax.tree_util.tree_map_with_path(spec, params)


def param_shardings(params: Any, mesh: jax.sharding.Mesh, *,
                    shard_layers: bool = False) -> Any:
  """``NamedSharding`` s on ``mesh`` for :func:`param_specs`."""
  specs = param_specs(params, mesh.shape[FSDP], shard_layers=shard_layers)
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                      is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Token batches ``(B, T)``: B split over every device."""
  return NamedSharding(mesh, P((DATA, FSDP)))


def shard_train_state(
    params: Any,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    param_sharding: Any,
) -> tuple[Any, Any, Any]:
  """Places ``params``, inits ``tx`` on them with state following the params.

  Returns:
    ``(params, opt_state, opt_state_sharding)``, the first two on ``mesh``.
  """
  params = jax.device_put(params, param_sharding)
  state_sharding = mimuon_optax.opt_state_shardings(
      tx.init, params, param_sharding, mesh)
  opt_state = jax.jit(tx.init, out_shardings=state_sharding)(params)
  return params, opt_state, state_sharding


def next_token_loss(model: nnx.Module, tokens_BxTp1: jax.Array) -> jax.Array:
  """Mean cross-entropy of ``tokens[:, 1:]`` given ``tokens[:, :-1]``."""
  logits_BxTxV = model(tokens_BxTp1[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(
      logits_BxTxV, tokens_BxTp1[:, 1:]).mean()


def make_sharded_train_step(
    model_graphdef: Any,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    param_sharding: Any,
    opt_state_sharding: Any,
    *,
    loss_fn: Callable[[nnx.Module, Any], jax.Array] = next_token_loss,
    data_sharding: Any = None,
    donate: bool = True,
) -> Callable[[Any, Any, Any], tuple[Any, Any, jax.Array]]:
  """``step(params, opt_state, batch) -> (params, opt_state, loss)``, jitted.

  Params and optimizer state keep their shardings (``in_shardings`` ==
  ``out_shardings``); the batch is split over every device (or as
  ``data_sharding`` says); the loss comes back replicated.

  Args:
    model_graphdef: from ``nnx.split(model, nnx.Param)``.
    tx: the optimizer (give ``muon``/``mimuon`` the same ``mesh``).
    mesh: from :func:`make_mesh`.
    param_sharding: from :func:`param_shardings`.
    opt_state_sharding: from :func:`shard_train_state` or
      ``mimuon_optax.opt_state_shardings``.
    loss_fn: ``loss_fn(model, batch) -> scalar``; default
      :func:`next_token_loss` on ``(B, T + 1)`` tokens.
    data_sharding: sharding of the batch (a pytree prefix); default
      :func:`batch_sharding`.
    donate: donate params and state buffers to the step.
  """
  if data_sharding is None:
    data_sharding = batch_sharding(mesh)
  replicated = NamedSharding(mesh, P())

  def step(params, opt_state, batch):
    loss_of = lambda p: loss_fn(nnx.merge(model_graphdef, p), batch)
    loss, grads = jax.value_and_grad(loss_of)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(
      step,
      in_shardings=(param_sharding, opt_state_sharding, data_sharding),
      out_shardings=(param_sharding, opt_state_sharding, replicated),
      donate_argnums=(0, 1) if donate else ())
