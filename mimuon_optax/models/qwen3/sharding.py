"""Data x FSDP partition specs, mesh and batch sharding of `Qwen3ForCausalLM`.

  mesh = make_mesh(data=2, fsdp=4)                 # 8 devices, Auto axes
  graphdef, params = nnx.split(model, nnx.Param)
  params = nnx.as_pure(params)
  param_sh = param_shardings(params, mesh)         # FSDP over "fsdp"
  tx = mimuon_optax.mimuon(lr, weight_dimension_numbers=dims, mesh=mesh)
  params, opt_state, state_sh = training.place_train_state(
      params, tx, mesh, param_sh)
  step = training.make_train_step(
      tx, next_token_loss, graphdef=graphdef, mesh=mesh,
      param_sharding=param_sh, opt_state_sharding=state_sh,
      batch_sharding=batch_sharding(mesh))
  params, opt_state, loss = step(params, opt_state, tokens_BxTp1)

The train step and the state placement are `mimuon_optax.training`'s; this
module only says where a Qwen3's weights and batches live.

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

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mimuon_optax._paths import path_names

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
    names = path_names(path)
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
