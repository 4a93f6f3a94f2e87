"""Muon dimension numbers and ultralytics' MuSGD groups for YOLO26 params.

Every conv kernel is one matrix. An HWIO kernel ``(kh, kw, in, out)`` gets
``MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)``: the
``(kh*kw*in, out)`` matrix, the transpose of ultralytics' ``(out,
in*kh*kw)`` flattening of the OIHW kernel with its columns in another
order. Both have the same singular values, and Newton-Schulz commutes with
transposing and permuting, so the orthogonalized kernels agree (depthwise
``(kh, kw, 1, C)`` kernels included). BatchNorm scales and every bias get
None.

ultralytics' trainer (``engine/trainer.py::build_optimizer``, MuSGD) puts
each parameter in one of four groups, read here from the leaf's rank and
name: ``"muon"`` (ndim 2 or 4, with decay), ``"bias"`` (a name containing
``bias``, no decay), ``"bn"`` (norm scales, no decay) and ``"weight"`` (the
rest, with decay; empty in YOLO26). Parameters of the Detect layer's class
heads ``cv3`` and ``one2one_cv3`` train at 3x lr. The Detect layer is the
one with the largest layer index (the first integer in a path, e.g.
``model/23/cv3/...``).
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import optax
from flax import nnx
from optax.contrib import MuonDimensionNumbers

from mimuon_optax._musgd import musgd
from mimuon_optax._paths import path_names

CONV_DIMENSION_NUMBERS = MuonDimensionNumbers(reduction_axis=(0, 1, 2),
                                              output_axis=3)
DENSE_DIMENSION_NUMBERS = MuonDimensionNumbers(reduction_axis=0, output_axis=1)
CLASS_HEADS = ("cv3", "one2one_cv3")
_BATCH_STATS = ("mean", "var")
_is_variable = lambda x: isinstance(x, nnx.Variable)


def _map_with_names(fn, params: Any) -> Any:
  """``fn(names, shape)`` at every Param/array leaf of ``params``."""
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: fn(path_names(path), tuple(leaf.shape)), params,
      is_leaf=_is_variable)


def _group(names: list[str], shape: tuple[int, ...]) -> str:
  if names and names[-1] in _BATCH_STATS:
    raise ValueError(
        f"{'/'.join(names)} is a BatchNorm statistic, not a parameter: pass"
        " nnx.state(model, nnx.Param).")
  if len(shape) in (2, 4):
    return "muon"
  if "bias" in names[-1]:
    return "bias"
  return "bn" if names[-1] == "scale" else "weight"


def yolo26_weight_dimension_numbers(params: Any) -> Any:
  """Muon dimension numbers for a YOLO26 parameter tree.

  Args:
    params: ``nnx.state(model, nnx.Param)``, its pure form, or any tree of
      arrays with HWIO conv kernels (a ``jax.ShapeDtypeStruct`` per leaf
      works too).

  Returns:
    A tree like ``params``: :data:`CONV_DIMENSION_NUMBERS` for 4-D kernels,
    :data:`DENSE_DIMENSION_NUMBERS` for 2-D ones, None elsewhere.

  Raises:
    ValueError: naming the path of a BatchNorm statistic (``mean``/``var``).
  """
  def one(names, shape):
    kind = _group(names, shape)  # Rejects batch statistics.
    if kind != "muon":
      return None
    return CONV_DIMENSION_NUMBERS if len(shape) == 4 else (
        DENSE_DIMENSION_NUMBERS)
  return _map_with_names(one, params)


def _layer_index(names: list[str]) -> int | None:
  return next((int(n) for n in names if n.isdigit()), None)


def yolo26_param_groups(params: Any) -> Any:
  """ultralytics' MuSGD group of every leaf: ``"muon"``, ``"bias"``, ...

  Args:
    params: as in :func:`yolo26_weight_dimension_numbers`.

  Returns:
    A tree like ``params`` of labels ``"muon"``, ``"bias"``, ``"bn"`` or
    ``"weight"``, with ``"_cls"`` appended in the Detect layer's class heads
    (:data:`CLASS_HEADS`), which ultralytics trains at 3x lr: its eight
    groups.
  """
  indices = _map_with_names(lambda names, _: _layer_index(names), params)
  head = max((i for i in jax.tree.leaves(indices) if i is not None),
             default=None)

  def one(names, shape):
    i = next((k for k, n in enumerate(names) if n.isdigit()), None)
    is_cls = (i is not None and int(names[i]) == head and i + 1 < len(names)
              and names[i + 1] in CLASS_HEADS)
    return _group(names, shape) + ("_cls" if is_cls else "")
  return _map_with_names(one, params)


def _times(learning_rate: optax.ScalarOrSchedule, factor: float):
  if callable(learning_rate):
    return lambda count: factor * learning_rate(count)
  return factor * learning_rate


def yolo26_musgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: chex.Numeric = 0.937,
    weight_decay: chex.Numeric = 5e-4,
    *,
    class_head_lr_factor: chex.Numeric = 3.0,
    muon_weight: chex.Numeric = 0.2,
    sgd_weight: chex.Numeric = 1.0,
    nesterov: bool = True,
    ns_dtype: str | chex.ArrayDType = "float32",
    mu_dtype: chex.ArrayDType | None = None,
) -> optax.GradientTransformation:
  """:func:`mimuon_optax.musgd` with ultralytics' groups for YOLO26.

  Matrix leaves (conv kernels) get Muon and SGD with ``weight_decay``;
  biases and BatchNorm scales SGD without decay; the Detect class heads
  ``class_head_lr_factor`` times the learning rate (ultralytics: 3). The
  warmup of lr and momentum is the caller's (a schedule, or
  ``optax.inject_hyperparams``, which injects every numeric argument).

  Args:
    learning_rate: scalar or schedule.
    momentum: momentum of both parts of MuSGD.
    weight_decay: decay of the conv kernels' SGD part.
    class_head_lr_factor: lr factor of the class heads.
    muon_weight: as in :func:`mimuon_optax.musgd`.
    sgd_weight: as in :func:`mimuon_optax.musgd`.
    nesterov: as in :func:`mimuon_optax.musgd`.
    ns_dtype: as in :func:`mimuon_optax.musgd`.
    mu_dtype: as in :func:`mimuon_optax.musgd`.

  Returns:
    An ``optax.GradientTransformation``; ``update`` needs ``params``.

  Raises:
    ValueError: at ``init``, naming the path of a leaf in ultralytics'
      ``"weight"`` group (decayed, not a matrix, bias or norm scale), which
      YOLO26 does not have and :func:`mimuon_optax.musgd` does not decay.
  """
  def musgd_labels(params):
    def one(names, shape):
      kind = _group(names, shape)
      if kind == "weight":
        raise ValueError(
            f"{'/'.join(names)} (shape {shape}) is neither a matrix, a bias"
            " nor a norm scale (ultralytics' decayed 'weight' group).")
      return "muon" if kind == "muon" else "sgd"
    return _map_with_names(one, params)

  def tx(lr):
    return musgd(lr, momentum, weight_decay, muon_weight=muon_weight,
                 sgd_weight=sgd_weight, nesterov=nesterov, ns_dtype=ns_dtype,
                 mu_dtype=mu_dtype, param_labels=musgd_labels,
                 weight_dimension_numbers=yolo26_weight_dimension_numbers)

  def head_labels(params):
    return jax.tree.map(lambda g: "cls" if g.endswith("_cls") else "base",
                        yolo26_param_groups(params))
  return optax.partition(
      {"base": tx(learning_rate),
       "cls": tx(_times(learning_rate, class_head_lr_factor))},
      head_labels)
