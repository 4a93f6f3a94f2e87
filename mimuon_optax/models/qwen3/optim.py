"""Muon dimension numbers for `Qwen3ForCausalLM` weights.

Muon orthogonalises each weight as a (fan_in, fan_out) matrix. Our attention
kernels keep heads as separate axes, so they need to say which axes form that
matrix. We orthogonalise per *logical* projection, not per head:

  q/k/v_proj (D, H, Dh): reduction_axis=0,      output_axis=(1, 2)  (D x H*Dh)
  o_proj     (H, Dh, D): reduction_axis=(0, 1), output_axis=2       (H*Dh x D)
  gate/up    (D, F), down (F, D): reduction_axis=0, output_axis=1

With `scan_layers=True` every per-layer weight has an extra leading L axis.
It is left out of both reduction and output axes, which makes it a batch axis
in optax (each layer is orthogonalised on its own): e.g. stacked q_proj
(L, D, H, Dh) gets reduction_axis=1, output_axis=(2, 3).

Embeddings, the LM head and all norm scales get None, i.e. they are not Muon
parameters (optax.contrib.muon sends them to its AdamW branch).
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx
from optax.contrib import MuonDimensionNumbers

from mimuon_optax._paths import path_names

# Rank of each kernel kind without the stacked-layer axis, and where its
# fan-in axes end (the rest are fan-out), counted from the first matrix axis.
_MATRIX_KINDS = {
    "q_proj": (3, 1),  # (D | H, Dh)
    "k_proj": (3, 1),
    "v_proj": (3, 1),
    "o_proj": (3, 2),  # (H, Dh | D)
    "gate_proj": (2, 1),  # (D | F)
    "up_proj": (2, 1),
    "down_proj": (2, 1),  # (F | D)
}
_NON_MUON_KINDS = ("embed_tokens", "lm_head", "norm")


def _dimension_numbers(path, leaf) -> MuonDimensionNumbers | None:
  names = path_names(path)
  ndim = len(leaf.shape)
  for kind, (rank, num_fan_in) in _MATRIX_KINDS.items():
    if kind in names:
      num_batch = ndim - rank  # 1 for stacked layers, 0 otherwise
      if num_batch not in (0, 1):
        raise ValueError(f"Unexpected rank {ndim} for {'/'.join(names)}.")
      reduction = tuple(range(num_batch, num_batch + num_fan_in))
      output = tuple(range(num_batch + num_fan_in, ndim))
      unwrap = lambda axes: axes[0] if len(axes) == 1 else axes
      return MuonDimensionNumbers(reduction_axis=unwrap(reduction),
                                  output_axis=unwrap(output))
  if any(kind in name for name in names for kind in _NON_MUON_KINDS):
    return None
  # Fail loudly so a new weight kind is never silently optimised by AdamW.
  raise ValueError(f"No Muon rule for parameter {'/'.join(names)}.")


def qwen3_weight_dimension_numbers(params: Any) -> Any:
  """Muon dimension numbers for a Qwen3 parameter tree.

  Args:
    params: `nnx.state(model, nnx.Param)` -- an `nnx.State` whose leaves are
      `nnx.Param`s, or its `nnx.as_pure` form with arrays (or
      `jax.ShapeDtypeStruct`s) as leaves. A pure nested dict works too. Both
      layer layouts (looped and `scan_layers=True`) are recognised from the
      rank of each kernel.

  Returns:
    A tree of the same container type and keys as `params` (an `nnx.State`
    for an `nnx.State` input) in which each Param/array leaf is replaced by a
    `MuonDimensionNumbers` (matrix weights) or None (embeddings, lm_head,
    norms). Pass it (or this function itself, which optax calls with the
    params) as `muon_weight_dimension_numbers` to `optax.contrib.muon`.
  """
  is_variable = lambda x: isinstance(x, nnx.Variable)
  return jax.tree_util.tree_map_with_path(_dimension_numbers, params,
                                          is_leaf=is_variable)
