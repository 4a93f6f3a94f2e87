"""Viewing parameter leaves as batches of matrices.

Every matrix transform in this package (Newton-Schulz, the MiMuon gap test,
learning-rate scaling by shape) sees a leaf through the same lens: a
``optax.contrib.MuonDimensionNumbers`` names its reduction (fan-in) axes and
its output (fan-out) axes; every other axis is a batch axis, and each slice
along the batch axes is one matrix that is treated on its own. This module is
the one place where that rule lives.

Layout follows Flax: a dense kernel is ``(fan_in, fan_out)``, a conv kernel
``(H, W, C_in, C_out)`` is ``MuonDimensionNumbers((0, 1, 2), 3)``, and a
layer-stacked kernel ``(L, D_in, D_out)`` is ``MuonDimensionNumbers(1, 2)``
(one matrix per layer).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers

WeightDimNums = Any  # MuonDimensionNumbers | tree of them (None leaves) | fn
_DEFAULT_2D = MuonDimensionNumbers(reduction_axis=0, output_axis=1)


def is_passthrough(x: Any) -> bool:
  """Leaves that matrix transforms leave alone: None and optax.MaskedNode."""
  return x is None or isinstance(x, optax.MaskedNode)


def _is_dim_nums_leaf(x: Any) -> bool:
  return x is None or isinstance(x, (MuonDimensionNumbers, optax.MaskedNode))


def _as_tuple(axes) -> tuple[int, ...]:
  return (axes,) if isinstance(axes, int) else tuple(axes)


@dataclasses.dataclass(frozen=True)
class MatrixView:
  """How one leaf maps to a ``(batch, fan_in, fan_out)`` stack of matrices."""

  shape: tuple[int, ...]
  batch_axes: tuple[int, ...]
  reduction_axes: tuple[int, ...]
  output_axes: tuple[int, ...]

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return tuple(self.shape[a] for a in self.batch_axes)

  @property
  def fan_in(self) -> int:
    return math.prod(self.shape[a] for a in self.reduction_axes)

  @property
  def fan_out(self) -> int:
    return math.prod(self.shape[a] for a in self.output_axes)

  @property
  def _perm(self) -> tuple[int, ...]:
    return self.batch_axes + self.reduction_axes + self.output_axes

  def to_matrices(self, x: jax.Array) -> jax.Array:
    """Leaf -> ``(prod(batch_shape), fan_in, fan_out)``."""
    flat = (math.prod(self.batch_shape), self.fan_in, self.fan_out)
    return x.transpose(self._perm).reshape(flat)

  def from_matrices(self, x_BxMxN: jax.Array) -> jax.Array:
    """Inverse of :meth:`to_matrices`."""
    perm = self._perm
    unflat = tuple(self.shape[a] for a in perm)
    inverse = tuple(sorted(range(len(perm)), key=perm.__getitem__))
    return x_BxMxN.reshape(unflat).transpose(inverse)

  def per_matrix(self, x_B: jax.Array) -> jax.Array:
    """A ``(prod(batch_shape),)`` vector -> ``batch_shape`` (for diagnostics)."""
    return x_B.reshape(self.batch_shape)


def matrix_view(path: Any, shape: tuple[int, ...],
                dim_nums: MuonDimensionNumbers | None) -> MatrixView:
  """Validates ``dim_nums`` for a leaf; errors name the parameter path."""
  name = jax.tree_util.keystr(path) or '<root>'
  ndim = len(shape)
  if dim_nums is None:
    if ndim != 2:
      raise ValueError(
          f'Parameter {name} has shape {shape} (ndim={ndim}) and was routed to'
          ' the matrix optimizer without weight_dimension_numbers. Pass'
          ' MuonDimensionNumbers(reduction_axis=..., output_axis=...) for it'
          ' (e.g. (0, 1, 2), 3 for an HWIO conv kernel, or 1, 2 for a layer'
          ' stack (L, D_in, D_out)), or route it to AdamW with param_labels.')
    dim_nums = _DEFAULT_2D
  try:
    reduction = tuple(a % ndim for a in _as_tuple(dim_nums.reduction_axis))
    output = tuple(a % ndim for a in _as_tuple(dim_nums.output_axis))
  except ZeroDivisionError:
    reduction = output = ()
  if not reduction or not output or set(reduction) & set(output):
    raise ValueError(
        f'Parameter {name} with shape {shape}: {dim_nums} must name disjoint,'
        ' non-empty reduction and output axes.')
  batch = tuple(a for a in range(ndim) if a not in reduction + output)
  return MatrixView(tuple(shape), batch, reduction, output)


def expand_prefix(dim_nums: Any, tree: Any) -> Any:
  """A prefix tree of dimension numbers -> one entry per leaf of ``tree``.

  As in ``optax.contrib.muon``, a None or ``MuonDimensionNumbers`` entry may
  stand for a whole subtree of the params (e.g. ``{'enc': None, 'dec':
  MuonDimensionNumbers()}``). A full tree is returned unchanged.
  """
  try:
    return jax.tree.map(
        lambda d, sub: jax.tree.map(lambda _: d, sub, is_leaf=is_passthrough),
        dim_nums, tree, is_leaf=_is_dim_nums_leaf)
  except ValueError as e:
    raise ValueError(
        'weight_dimension_numbers must be one MuonDimensionNumbers, a tree'
        ' with the structure of the params, or a prefix of it (None or one'
        f' entry per subtree); it does not fit the params: {e}') from None


def resolve_dimension_numbers(updates: Any,
                              weight_dimension_numbers: WeightDimNums) -> Any:
  """A tree shaped like ``updates`` with one ``MuonDimensionNumbers`` per leaf.

  ``weight_dimension_numbers`` may be None (every leaf is a 2-D matrix), one
  ``MuonDimensionNumbers`` for every leaf, a tree matching the params (None
  leaves fall back to the 2-D rule), or a callable returning such a tree. When
  ``updates`` is masked by ``optax.partition``, masked leaves stay masked.

  Raises:
    ValueError: naming the parameter path of any leaf that cannot be viewed
      as matrices (ndim != 2 without dimension numbers, bad axes). Real and
      complex leaves are both matrices.
  """
  if callable(weight_dimension_numbers):
    weight_dimension_numbers = weight_dimension_numbers(updates)
  if _is_dim_nums_leaf(weight_dimension_numbers):
    weight_dimension_numbers = jax.tree.map(
        lambda _: weight_dimension_numbers, updates, is_leaf=is_passthrough)
  else:
    weight_dimension_numbers = expand_prefix(weight_dimension_numbers, updates)

  def one(path, u, dim_nums):
    if is_passthrough(u):
      return u
    if isinstance(dim_nums, optax.MaskedNode):
      dim_nums = None
    view = matrix_view(path, u.shape, dim_nums)
    return MuonDimensionNumbers(view.reduction_axes, view.output_axes)

  return jax.tree_util.tree_map_with_path(
      one, updates, weight_dimension_numbers, is_leaf=is_passthrough)


def matrix_views(updates: Any, weight_dimension_numbers: WeightDimNums) -> Any:
  """Like :func:`resolve_dimension_numbers`, with a ``MatrixView`` per leaf.

  Passthrough leaves (None, MaskedNode) map to None.
  """
  dim_nums = resolve_dimension_numbers(updates, weight_dimension_numbers)
  return jax.tree.map(
      lambda u, d: None if is_passthrough(u) else matrix_view((), u.shape, d),
      updates, dim_nums, is_leaf=is_passthrough)


def map_matrices(fn: Callable[..., Any], views: Any, *trees: Any) -> Any:
  """``fn(view, *leaves)`` at every matrix leaf of ``views``.

  ``views`` comes from :func:`matrix_views`; each of ``trees`` has its
  structure as a prefix (a leaf there may be a tuple, passed whole). Other
  positions keep the first tree's entry (None or MaskedNode).
  """
  def one(view, *leaves):
    return leaves[0] if view is None else fn(view, *leaves)

  return jax.tree.map(one, views, *trees, is_leaf=lambda x: x is None)


def map_stacks(fn: Callable[[list[jax.Array]], list[Any]], views: Any,
               tree: Any) -> Any:
  """``fn`` on the list of all ``(B_i, fan_in_i, fan_out_i)`` matrix stacks.

  ``fn`` returns one output per stack (any pytree); each lands at its leaf.
  Passthrough positions keep ``tree``'s entry.
  """
  views_flat, treedef = jax.tree.flatten(views, is_leaf=lambda x: x is None)
  # jaxlib ships no type stub for PyTreeDef.flatten_up_to.
  leaves = treedef.flatten_up_to(tree)  # type: ignore[attr-defined]
  members = [i for i, view in enumerate(views_flat) if view is not None]
  outputs = fn([views_flat[i].to_matrices(leaves[i]) for i in members])
  for i, output in zip(members, outputs):
    leaves[i] = output
  return jax.tree.unflatten(treedef, leaves)


def run_grouped(fn: Callable[[list[jax.Array]], list[Any]],
                stacks: Sequence[jax.Array],
                key: Callable[[int, jax.Array], Any]) -> list[Any]:
  """Concatenates stacks of equal ``key``, runs ``fn`` on the joined list.

  ``fn`` maps the list of joined ``(sum B, M, N)`` stacks to one output per
  joined stack (a pytree of arrays with leading axis ``sum B``); the outputs
  are split back into one per input stack, in input order.
  """
  groups: dict[Any, list[int]] = {}
  for i, x in enumerate(stacks):
    groups.setdefault(key(i, x), []).append(i)
  members = list(groups.values())
  joined = [jnp.concatenate([stacks[i] for i in m]) if len(m) > 1
            else stacks[m[0]] for m in members]
  outputs = [None] * len(stacks)
  for m, result in zip(members, fn(joined)):
    start = 0
    for i in m:
      stop = start + stacks[i].shape[0]
      outputs[i] = jax.tree.map(lambda r, a=start, b=stop: r[a:b], result)
      start = stop
  return outputs


def same_shape(i: int, x: jax.Array | jax.ShapeDtypeStruct) -> Any:
  """:func:`run_grouped` key: matrices of equal shape and dtype share a call."""
  del i
  return x.shape[1:] + (x.dtype,)


def pow2_exponent(x_BxMxN: jax.Array, xp: Any = jnp) -> jax.Array:
  """Per matrix, the e with max|x| in [2^(e-1), 2^e); shape ``(B, 1, 1)``.

  ``ldexp(x, -e)`` is exact and brings every entry into (-1, 1), so
  squaring neither overflows nor underflows whatever the input's scale (up
  to 3e38, where 2^e itself would overflow: hence an exponent, not a
  factor). 0 for a zero matrix and for one with Inf/NaN entries. ``xp``:
  ``jax.numpy``, or ``numpy`` on the host (the gate's host path).
  """
  max_B11 = xp.max(xp.abs(x_BxMxN), axis=(-2, -1), keepdims=True)
  usable = xp.isfinite(max_B11) & (max_B11 > 0)
  return xp.frexp(xp.where(usable, max_B11, 0.5))[1]


def ldexp(x: jax.Array, e: jax.Array, xp: Any = jnp) -> jax.Array:
  """``x * 2**e`` exactly, for real or complex ``x`` (``xp.ldexp`` is real-only)."""
  if not xp.iscomplexobj(x):
    return xp.ldexp(x, e)
  re, im = xp.ldexp(x.real, e), xp.ldexp(x.imag, e)
  if xp is jnp:
    return jax.lax.complex(re, im)
  out = re.astype(x.dtype)
  out.imag = im
  return out


def _shape_groups(
    stacks: Sequence[jax.Array | jax.ShapeDtypeStruct]) -> list[list[int]]:
  """Indices of stacks with equal matrix shape and dtype, in order."""
  groups: dict[Any, list[int]] = {}
  for i, x in enumerate(stacks):
    groups.setdefault(same_shape(i, x), []).append(i)
  return list(groups.values())


def run_staggered(fn: Callable[[list[jax.Array]], list[tuple]],
                  stacks: Sequence[jax.Array], previous: Sequence[tuple],
                  step: jax.Array, every: int) -> list[tuple]:
  """``fn`` on the 1/``every`` of the matrices whose turn it is this step.

  Stacks of equal shape and dtype are concatenated (in order) into groups;
  matrix j of a group has its turn on the steps with ``step % every ==
  j % every`` (:func:`stagger_phases`), so each matrix is measured every
  ``every`` steps and each step measures ``ceil(B_g / every)`` matrices of
  every group (zero padding fills the last turn). ``fn`` maps the list of
  picked ``(n_g, M, N)`` stacks to one tuple of ``(n_g,)`` arrays per group;
  ``previous`` holds one such tuple of ``(B_i,)`` arrays per input stack,
  kept where it is not a matrix's turn. Returns one updated tuple per input
  stack.
  """
  members = _shape_groups(stacks)
  phase = step % every
  sizes = [sum(stacks[i].shape[0] for i in m) for m in members]
  picked = []
  for m, b in zip(members, sizes):
    x = jnp.concatenate([stacks[i] for i in m])
    x = jnp.pad(x, [(0, -b % every)] + [(0, 0)] * (x.ndim - 1))
    x = x.reshape(-1, every, *x.shape[1:])
    picked.append(jax.lax.dynamic_index_in_dim(x, phase, 1, keepdims=False))
  outputs: list[Any] = [None] * len(stacks)
  for m, b, fresh in zip(members, sizes, fn(picked)):
    merged = []
    for field, new in enumerate(fresh):
      old = jnp.concatenate([previous[i][field] for i in m])
      old = jnp.pad(old, (0, -b % every)).reshape(-1, every)
      old = jax.lax.dynamic_update_slice_in_dim(
          old, new.astype(old.dtype)[:, None], phase, axis=1)
      merged.append(old.reshape(-1)[:b])
    start = 0
    for i in m:
      stop = start + stacks[i].shape[0]
      outputs[i] = tuple(v[start:stop] for v in merged)
      start = stop
  return outputs


def stagger_phases(tree: Any, weight_dimension_numbers: WeightDimNums,
                   every: int) -> Any:
  """The step phase of every matrix under :func:`run_staggered`.

  One value per matrix (shape ``batch_shape``): matrix j is measured on the steps
  t with ``t % every == phase[j]`` (for analysing ``gap_every`` runs).
  """
  views = matrix_views(tree, weight_dimension_numbers)
  views_flat, treedef = jax.tree.flatten(views, is_leaf=lambda x: x is None)
  # jaxlib ships no type stub for PyTreeDef.flatten_up_to.
  leaves = treedef.flatten_up_to(tree)  # type: ignore[attr-defined]
  idx = [i for i, v in enumerate(views_flat) if v is not None]
  stacks = [jax.ShapeDtypeStruct(
      (math.prod(views_flat[i].batch_shape), views_flat[i].fan_in,
       views_flat[i].fan_out), leaves[i].dtype) for i in idx]
  for m in _shape_groups(stacks):
    start = 0
    for i in m:
      b = stacks[i].shape[0]
      leaves[idx[i]] = views_flat[idx[i]].per_matrix(
          jnp.arange(start, start + b) % every)
      start += b
  return jax.tree.unflatten(treedef, leaves)
