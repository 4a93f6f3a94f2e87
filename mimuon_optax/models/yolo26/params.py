"""ultralytics YOLO26 ``state_dict`` <-> `YOLO26`, and BatchNorm folding.

`YOLO26` keeps ultralytics' module tree (``model.model[i]`` is YAML row i,
inner blocks under their torch attribute names, ``nn.Sequential`` children
by index), so a torch name and an NNX path differ only in the leaf:

  torch                              NNX                          layout
  ``model.0.conv.weight``            ``model/0/conv/kernel``      OIHW -> HWIO
  ``model.0.bn.weight`` / ``bias``   ``model/0/bn/scale``/``bias``
  ``model.0.bn.running_mean``/``_var``  ``model/0/bn/mean``/``var``
  ``model.23.cv2.0.2.weight``/``bias``  ``model/23/cv2/0/2/kernel``/``bias``
  ``*.bn.num_batches_tracked``       (dropped: momentum is fixed)

The table of expected tensors is derived from the NNX model itself (built
abstractly with `nnx.eval_shape`), so loading and saving walk the same rule
and every problem (missing, unexpected, mis-shaped tensors) is reported in
one ValueError; a state dict of another scale or class count fails there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

from mimuon_optax.models.yolo26.modeling import Conv
from mimuon_optax.models.yolo26.modeling import YOLO26
from mimuon_optax.models.yolo26.modeling import YOLO26Config

# NNX leaf name -> torch leaf name (a Conv's `bn` and the head convs).
_TORCH_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias",
               "mean": "running_mean", "var": "running_var"}
_BN_COUNTER = "num_batches_tracked"


def _torch_name(path: tuple) -> str:
  return ".".join(map(str, path[:-1] + (_TORCH_LEAF[path[-1]],)))


def _to_torch_layout(array: np.ndarray) -> np.ndarray:
  """HWIO kernels -> OIHW; vectors unchanged."""
  return array.transpose(3, 2, 0, 1) if array.ndim == 4 else array


def _to_flax_layout(array: np.ndarray) -> np.ndarray:
  """OIHW kernels -> HWIO; vectors unchanged."""
  return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape


def _describe(config: YOLO26Config) -> str:
  return (f"YOLO26 scale {config.scale!r} with {config.num_classes} classes"
          if config.scale else f"YOLO26 {config}")


def _read(state_dict: Mapping[str, Any] | str | os.PathLike
          ) -> Mapping[str, Any]:
  if isinstance(state_dict, (str, os.PathLike)):
    return safetensors.numpy.load_file(os.fspath(state_dict))
  return state_dict


def load_ultralytics_state_dict(
    model_or_config: YOLO26 | YOLO26Config,
    state_dict: Mapping[str, Any] | str | os.PathLike,
) -> YOLO26:
  """Fills a `YOLO26` from an ultralytics ``DetectionModel.state_dict()``.

  Args:
    model_or_config: a model to overwrite in place, or a config to build one
      from (abstractly, so no random init is spent; the new model is in train
      mode, as a freshly built torch model is).
    state_dict: ``name -> array`` (numpy arrays, CPU torch tensors, anything
      ``np.asarray`` accepts) or the path of a safetensors file of it.

  Returns:
    The model, holding the state dict's weights and BatchNorm statistics.

  Raises:
    ValueError: one error listing every missing, unexpected and mis-shaped
      tensor (nothing is loaded then).
  """
  if isinstance(model_or_config, YOLO26Config):
    config = model_or_config
    model = nnx.eval_shape(lambda: YOLO26(config, rngs=nnx.Rngs(0)))
  else:
    model, config = model_or_config, model_or_config.config
  state_dict = _read(state_dict)

  graphdef, state = nnx.split(model)
  flat = list(nnx.to_flat_state(state))
  expected = {_torch_name(path): (path, var) for path, var in flat}
  counters = {name.rsplit(".", 1)[0] + "." + _BN_COUNTER
              for name in expected if name.endswith(".running_mean")}
  # Shapes first (`.shape` also works on torch meta tensors), data only once
  # everything matches.
  errors, matched = [], []
  for name, value in state_dict.items():
    got = tuple(getattr(value, "shape", None) or np.shape(value))
    if name in counters:
      continue
    if name not in expected:
      errors.append(f"unexpected tensor {name!r} {got}")
      continue
    want = _torch_shape(expected[name][1].shape)
    if got != want:
      errors.append(f"wrong shape for {name!r}: expected {want}, got {got}")
    else:
      matched.append(name)
  errors += [f"missing tensor {name!r} {_torch_shape(var.shape)}"
             for name, (path, var) in expected.items()
             if name not in state_dict]
  if errors:
    raise ValueError(f"state_dict does not match {_describe(config)}"
                     f" ({len(errors)} problems):\n  " + "\n  ".join(errors))
  values = {}
  for name in matched:
    path, var = expected[name]
    values[path] = jnp.asarray(_to_flax_layout(np.asarray(state_dict[name])),
                               var.dtype)
  state = nnx.from_flat_state([(path, var.replace(values[path]))
                               for path, var in flat])
  if isinstance(model_or_config, YOLO26Config):
    return nnx.merge(graphdef, state)
  nnx.update(model, state)
  return model


def to_ultralytics_state_dict(model: YOLO26) -> dict[str, np.ndarray]:
  """The model's weights and BatchNorm statistics under ultralytics' names.

  ``DetectionModel.load_state_dict(..., strict=True)`` accepts the result
  (after ``torch.from_numpy``); ``num_batches_tracked`` is not written (torch
  fills it in, and ultralytics' fixed BatchNorm momentum never reads it).
  """
  _check_unfused(model)
  return {_torch_name(path): np.ascontiguousarray(
              _to_torch_layout(np.asarray(var[...])))
          for path, var in nnx.to_flat_state(nnx.state(model))}


def save_ultralytics_safetensors(model: YOLO26,
                                 path: str | os.PathLike) -> None:
  """Writes `to_ultralytics_state_dict` as a safetensors file."""
  safetensors.numpy.save_file(to_ultralytics_state_dict(model), os.fspath(path))


def _check_unfused(model: YOLO26) -> None:
  for path, module in nnx.iter_modules(model):
    if isinstance(module, Conv) and module.bn is None:
      raise ValueError("model has folded BatchNorms (fuse_batchnorm); save"
                       f" the unfused model (first folded Conv at {path}).")


def fuse_batchnorm(model: YOLO26) -> YOLO26:
  """An inference copy with every BatchNorm folded into its conv.

  ``W' = W * gamma / sqrt(var + eps)`` per output channel and
  ``b' = beta - gamma * mean / sqrt(var + eps)`` as ultralytics'
  ``fuse_conv_and_bn``; both heads are kept. The copy is in eval mode (the
  running statistics are what is folded) and cannot be trained or saved
  back; the original is unchanged.
  """
  fused = nnx.clone(model)
  fused.eval()
  for _, module in list(nnx.iter_modules(fused)):
    if not isinstance(module, Conv) or module.bn is None:
      continue
    conv, bn = module.conv, module.bn
    assert bn.scale is not None and bn.bias is not None  # use_scale/use_bias
    factor_O = bn.scale[...] / jnp.sqrt(bn.var[...] + bn.epsilon)
    folded = nnx.eval_shape(lambda c=conv: nnx.Conv(
        c.in_features, c.out_features, c.kernel_size, strides=c.strides,
        padding=c.padding, feature_group_count=c.feature_group_count,
        use_bias=True, rngs=nnx.Rngs(0)))
    assert folded.bias is not None  # use_bias=True
    folded.kernel.set_value(conv.kernel[...] * factor_O)
    folded.bias.set_value(bn.bias[...] - bn.mean[...] * factor_O)
    module.conv, module.bn = folded, None
  return fused
