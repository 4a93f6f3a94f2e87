"""Placement on a device mesh: whole matrices per device, state like params.

Newton-Schulz on a matrix whose rows or columns are sharded (FSDP) makes
GSPMD all-reduce or all-gather a Gram-sized array in every iteration. Here
the ``(B, M, N)`` stacks are zero-padded to a multiple of the device count
and split along B inside one ``jax.shard_map``: each device receives whole
matrices (GSPMD moves them, typically with one all-to-all), orthogonalizes
them with no communication at all, and the results are tied back to the
parameters' sharding with ``shard_alike`` (one more collective). This is
the whole-matrix assignment of dion and modded-nanogpt's distributed Muon.
Meshes must have ``AxisType.Auto`` axes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp
from jax.experimental.shard_alike import shard_alike
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mimuon_optax import _matrix

MeshAxes = Union[str, Sequence[str], None]


def resolve_axes(mesh: jax.sharding.Mesh,
                 mesh_axes: MeshAxes) -> tuple[str, ...]:
  """``mesh_axes`` as a tuple of names; None means every axis of ``mesh``."""
  if mesh_axes is None:
    return tuple(mesh.axis_names)
  axes = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
  unknown = [a for a in axes if a not in mesh.axis_names]
  if unknown or not axes:
    raise ValueError(f'mesh_axes={mesh_axes!r} must name axes of the mesh,'
                     f' which has {mesh.axis_names}.')
  return axes


def check_mesh(mesh: jax.sharding.Mesh, mesh_axes: MeshAxes) -> None:
  """Raises ValueError for unknown ``mesh_axes`` or non-Auto mesh axes."""
  resolve_axes(mesh, mesh_axes)
  types = dict(zip(mesh.axis_names, mesh.axis_types))
  explicit = [a for a, t in types.items()
              if t != jax.sharding.AxisType.Auto]
  if explicit:
    raise ValueError(
        f'mesh axes {explicit} are {[str(types[a]) for a in explicit]};'
        ' mesh= needs AxisType.Auto axes (GSPMD picks the collectives), e.g.'
        ' jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len('
        'names)).')


def shard_stacks(
    fn: Callable[[list[jax.Array]], list[Any]],
    stacks: Sequence[jax.Array],
    mesh: jax.sharding.Mesh,
    mesh_axes: MeshAxes = None,
) -> list[Any]:
  """``fn`` on stacks split along their leading (batch) axis over devices.

  Every stack ``(B_i, ...)`` is zero-padded to a multiple of the number of
  devices ``n`` along ``mesh_axes`` and split into ``n`` blocks of whole
  matrices, block ``d`` on device ``d`` (replicated along the other mesh
  axes). ``fn`` runs once per device on the local blocks ``(B_i_pad / n,
  ...)`` and returns one pytree per stack whose leaves lead with that local
  batch; the padded rows are cut off the results.

  ``fn`` must map a zero matrix to something harmless (Newton-Schulz gives
  zero, the gap test +inf) and must act on each matrix independently.
  """
  axes = resolve_axes(mesh, mesh_axes)
  n = math.prod(mesh.shape[a] for a in axes)
  sizes = [x.shape[0] for x in stacks]
  padded = [jnp.pad(x, [(0, -b % n)] + [(0, 0)] * (x.ndim - 1))
            for x, b in zip(stacks, sizes)]
  spec = P(axes)
  local_fn = lambda xs: list(fn(list(xs)))
  outputs = jax.shard_map(local_fn, mesh=mesh, in_specs=(spec,),
                          out_specs=spec, check_vma=False)(padded)
  return [jax.tree.map(lambda r, b=b: r[:b], out)
          for out, b in zip(outputs, sizes)]


def grouped_shard_stacks(
    fn: Callable[[list[jax.Array]], list[Any]],
    stacks: Sequence[jax.Array],
    mesh: jax.sharding.Mesh,
    mesh_axes: MeshAxes = None,
    *,
    group: bool = True,
) -> list[Any]:
  """:func:`shard_stacks` after concatenating stacks of equal shape and dtype.

  One 2-D leaf is a stack of B=1; padding each to ``n`` devices would
  multiply the work by ``n``, so equal shapes are concatenated and padded
  once. A stack whose B is already a multiple of ``n`` (a layer stack) stays
  on its own: if its layer axis is sharded over ``mesh_axes``, its matrices
  are where they need to be and do not move. ``group=False`` concatenates
  nothing.
  """
  n = math.prod(mesh.shape[a] for a in resolve_axes(mesh, mesh_axes))

  def key(i, x):
    alone = not group or x.shape[0] % n == 0
    return i if alone else _matrix.same_shape(i, x)

  return _matrix.run_grouped(
      lambda joined: shard_stacks(fn, joined, mesh, mesh_axes), stacks, key)


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Every leaf of ``tree`` replicated over ``mesh`` (for small results)."""
  return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, P()))


def like_params(views: Any, tree: Any, params: Any) -> Any:
  """Ties every matrix leaf of ``tree`` to the sharding of its parameter.

  Under plain ``jax.jit`` the shardings of intermediates and outputs are
  GSPMD's choice; without this, the batch split of the shard_map spreads
  backwards into the momentum and forwards into the new params. With
  ``shard_alike`` they keep whatever sharding the params have. A no-op when
  ``params`` is None.
  """
  if params is None:
    return tree
  return _matrix.map_matrices(lambda view, x, p: shard_alike(x, p)[0],
                              views, tree, params)


def opt_state_shardings(
    tx_init: Callable[[Any], Any],
    params: Any,
    param_shardings: Any,
    mesh: jax.sharding.Mesh,
) -> Any:
  """Shardings for ``tx_init(params)`` that follow the params' shardings.

  Optax states hold copies of the params tree (momentum, Adam moments):
  a state leaf whose key path ends with a parameter's full key path and has
  that parameter's shape gets the parameter's sharding. Everything else
  (step counts, the per-matrix MiMuon diagnostics) is small and replicated,
  as :func:`spectral_gaps` returns its statistics with a mesh.

  Args:
    tx_init: ``tx.init``.
    params: arrays or ``jax.ShapeDtypeStruct`` s (only shapes are read).
    param_shardings: a tree of ``jax.sharding.Sharding`` like ``params``.
    mesh: the mesh of the replicated leaves.

  Returns:
    A tree of shardings with the structure of the optimizer state.
  """
  param_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  sharding_leaves = jax.tree.leaves(
      param_shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  by_path = {tuple(path): (leaf.shape, s) for (path, leaf), s in
             zip(param_leaves, sharding_leaves)}
  replicated = NamedSharding(mesh, P())

  def one(path, leaf):
    path = tuple(path)
    for start in range(len(path)):
      hit = by_path.get(path[start:])
      if hit is not None and hit[0] == leaf.shape:
        return hit[1]
    return replicated

  abstract_state = jax.eval_shape(tx_init, params)
  return jax.tree_util.tree_map_with_path(one, abstract_state)
