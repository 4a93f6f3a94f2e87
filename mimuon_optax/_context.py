"""MatrixContext: where and how the matrix transforms run, resolved once.

A factory (:func:`~mimuon_optax.muon`, :func:`~mimuon_optax.mimuon`) builds
one context from its arguments and hands the same object to every transform
it chains, the way ``optax.contrib.muon`` resolves its
``muon_weight_dim_nums_fn`` once. The context holds the three settings that
used to be passed to each transform separately (dimension numbers, mesh,
grouping), turns a tree into matrix views once per tree structure, and is
the one place that chooses between running the stacks of matrices locally
and spreading them over a mesh.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax

from mimuon_optax import _distributed
from mimuon_optax import _matrix


@dataclasses.dataclass(frozen=True, eq=False)
class MatrixContext:
  """How the matrix transforms view a params tree and where they compute.

  Attributes:
    weight_dimension_numbers: ``MuonDimensionNumbers`` (one for all leaves),
      a tree or prefix tree of them (None leaves: the 2-D rule), or a
      callable returning one (see :func:`resolve_dimension_numbers`).
    mesh: a ``jax.sharding.Mesh`` with ``AxisType.Auto`` axes to spread whole
      matrices over (params sharded on it under ``jax.jit``); None: plain
      jit/GSPMD on whatever devices the arrays live on.
    mesh_axes: mesh axis names (or one name) to spread matrices over; None:
      all of them.
    batch_same_shapes: run all matrices of equal shape and dtype as one
      batched call; False runs one call per leaf.

  Example:
    >>> import jax.numpy as jnp
    >>> import mimuon_optax
    >>> ctx = mimuon_optax.MatrixContext()
    >>> tx = mimuon_optax.scale_by_newton_schulz(context=ctx)
    >>> ctx.views({'w': jnp.ones((4, 3))})['w'].fan_in
    4
  """

  weight_dimension_numbers: _matrix.WeightDimNums = None
  mesh: jax.sharding.Mesh | None = None
  mesh_axes: _distributed.MeshAxes = None
  batch_same_shapes: bool = True
  _views: dict = dataclasses.field(default_factory=dict, init=False,
                                   repr=False)

  def __post_init__(self):
    if self.mesh is not None:
      _distributed.check_mesh(self.mesh, self.mesh_axes)  # Fail early.

  def views(self, tree: Any) -> Any:
    """A ``MatrixView`` per matrix leaf of ``tree`` (None elsewhere).

    Computed once per tree structure, leaf shapes and dtypes (a jitted
    update traces once; eager calls reuse it). Raises ``ValueError`` naming
    the parameter path of a leaf that is not a matrix stack.
    """
    leaves, treedef = jax.tree.flatten(tree, is_leaf=_matrix.is_passthrough)
    key = (treedef, tuple(
        None if _matrix.is_passthrough(x) else (x.shape, x.dtype)
        for x in leaves))
    if key not in self._views:
      self._views[key] = _matrix.matrix_views(
          tree, self.weight_dimension_numbers)
    return self._views[key]

  def run(self, fn: Callable[[list[jax.Array]], list[Any]],
          stacks: Sequence[jax.Array], *, replicate: bool = False,
          group: bool | None = None) -> list[Any]:
    """``fn`` on ``(B_i, M_i, N_i)`` stacks, locally or over the mesh.

    ``fn`` maps a list of stacks to one output per stack (a pytree whose
    leaves lead with that stack's B) and must treat every matrix on its
    own; a zero matrix (mesh padding) must give a harmless result. Stacks of
    equal shape and dtype are joined first (``batch_same_shapes``, or
    ``group`` when given). With a mesh, the joined stacks are split over its
    devices as whole matrices (:func:`_distributed.grouped_shard_stacks`)
    and ``replicate=True`` gathers the (small) outputs on every device.
    This is the one place that picks local or mesh.
    """
    group = self.batch_same_shapes if group is None else group
    if self.mesh is None:
      key = _matrix.same_shape if group else (lambda i, x: i)
      return _matrix.run_grouped(fn, stacks, key)
    outputs = _distributed.grouped_shard_stacks(
        fn, stacks, self.mesh, self.mesh_axes, group=group)
    return _distributed.replicate(outputs, self.mesh) if replicate else outputs

  def like_params(self, views: Any, tree: Any, params: Any) -> Any:
    """With a mesh, ties ``tree``'s matrix leaves to the params' sharding.

    Without a mesh (or without params) ``tree`` is returned as is; see
    :func:`_distributed.like_params` for why a mesh needs it.
    """
    if self.mesh is None:
      return tree
    return _distributed.like_params(views, tree, params)


def resolve(context: MatrixContext | None, **settings: Any) -> MatrixContext:
  """A transform's context: the one given, or one built from its settings.

  A stand-alone transform takes the settings as keywords; a factory passes
  one ``context``. Passing both (a setting other than its default next to a
  context) is an error naming the settings.
  """
  if context is None:
    return MatrixContext(**settings)
  defaults = MatrixContext()
  clash = [k for k, v in settings.items() if v is not getattr(defaults, k)]
  if clash:
    raise ValueError(f'Pass {", ".join(clash)} in the MatrixContext, not next'
                     ' to context=.')
  return context
