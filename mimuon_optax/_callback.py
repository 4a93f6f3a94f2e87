r"""A pure host callback that hands the function the runtime's host buffers.

:func:`host_callback` is :func:`jax.pure_callback` (``vmap_method=
"sequential"``) with one step left out: ``pure_callback`` first
``device_put``\\ s its operands onto CPU device 0 and waits for that copy,
which on XLA:CPU needs a thread of the pool that runs the devices' steps.
When one process drives several CPU devices (the simulated devices of
``--xla_force_host_platform_device_count``) every device's step can be
parked in a callback, or in a collective waiting for device 0, while the
copy waits for a thread: a deadlock (seen with 8 simulated devices on 2
cores, jaxlib 0.10.2). Here the function receives the numpy arrays the
runtime already has on the host (on an accelerator, the device-to-host copy
XLA makes for every callback), so it needs no XLA thread at all.

The primitive reuses ``pure_callback``'s own rules (abstract evaluation,
batching, sharding of the custom call, the lowering helper) from
``jax._src.callback``. Where that private module lacks them, it falls back
to :func:`jax.pure_callback` and :data:`DIRECT` is false (the gate then
refuses ``"host"`` where the copy could deadlock; see
:func:`mimuon_optax._platform.host_callback_hangs`).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional

import jax
import numpy as np

try:  # Private jax API: the same pieces jax.pure_callback is made of.
  from jax._src import callback as _jcb
  from jax._src import core as _core
  from jax._src import dispatch as _dispatch
  from jax._src import ffi as _ffi
  from jax._src import tree_util as _tree_util
  from jax._src.interpreters import ad as _ad
  from jax._src.interpreters import batching as _batching
  from jax._src.interpreters import mlir as _mlir
  _PIECES: Optional[tuple] = (_jcb._FlatCallback, _jcb._callback_op_sharding,  # pylint: disable=protected-access
             _jcb.emit_python_callback, _jcb.pure_callback_abstract_eval,
             _jcb.pure_callback_jvp_rule, _jcb.pure_callback_transpose_rule,
             _ffi.ffi_batching_rule)
  # The calls below as jax 0.10 spells them; another spelling: fall back.
  # jax 0.7.x-0.8.0's emit_python_callback has no returns_token (it returns
  # no token unless asked): passed only where it exists.
  _EMIT_PARAMS = set(inspect.signature(_jcb.emit_python_callback).parameters)
  if not ({'has_side_effect', 'sharding'} <= _EMIT_PARAMS
          and len(inspect.signature(_jcb._callback_op_sharding).parameters)  # pylint: disable=protected-access
          == 3):
    _PIECES = None  # pragma: no cover
except (ImportError, AttributeError, TypeError, ValueError):  # pragma: no cover
  _PIECES = None

DIRECT = _PIECES is not None
"""Whether :func:`host_callback` skips ``pure_callback``'s device copy."""

if DIRECT:
  host_callback_p = _core.Primitive('mimuon_host_callback')
  host_callback_p.multiple_results = True
  _dispatch.prim_requires_devices_during_lowering.add(host_callback_p)
  host_callback_p.def_impl(
      functools.partial(_dispatch.apply_primitive, host_callback_p))
  host_callback_p.def_abstract_eval(_jcb.pure_callback_abstract_eval)
  _ad.primitive_jvps[host_callback_p] = _jcb.pure_callback_jvp_rule
  _ad.primitive_transposes[host_callback_p] = (
      _jcb.pure_callback_transpose_rule)
  _batching.primitive_batchers[host_callback_p] = functools.partial(
      _ffi.ffi_batching_rule, host_callback_p)

  def _lowering(ctx, *args, callback, sharding, **params):
    del params  # result_avals and vmap_method: ctx has the avals.

    def run(*flat_args):
      # flat_args: numpy arrays over the runtime's host buffers.
      return tuple(np.asarray(x) for x in callback(*flat_args))

    op_sharding = _jcb._callback_op_sharding(  # pylint: disable=protected-access
        ctx.module_context.axis_context, sharding, ctx.avals_out)
    result, _, _ = _jcb.emit_python_callback(
        ctx, run, None, list(args), ctx.avals_in, ctx.avals_out,
        has_side_effect=False, sharding=op_sharding,
        **({'returns_token': False} if 'returns_token' in _EMIT_PARAMS
           else {}))
    return result

  _mlir.register_lowering(host_callback_p, _lowering, cacheable=False)


def host_callback(fn: Callable[..., Any], result_shape_dtypes: Any,
                  *args: Any) -> Any:
  """``jax.pure_callback`` (sequential vmap), with numpy arrays for ``fn``.

  The same as ``jax.pure_callback(fn, result_shape_dtypes, *args,
  vmap_method="sequential")``, except that ``fn`` gets numpy arrays
  straight from the runtime's host buffers.

  ``fn`` must not keep the arrays past its return (they may alias device
  buffers): copy what outlives the call. Under ``vmap`` it runs once per
  batch element, as ``vmap_method="sequential"``.

  Args:
    fn: a pure function of numpy arrays returning arrays shaped as
      ``result_shape_dtypes``.
    result_shape_dtypes: a pytree of ``jax.ShapeDtypeStruct``.
    *args: the operands (a pytree each).

  Returns:
    ``fn``'s results, as traced arrays of ``result_shape_dtypes``.
  """
  if not DIRECT:  # pragma: no cover (other jax versions)
    return jax.pure_callback(fn, result_shape_dtypes, *args,
                             vmap_method='sequential')
  flat_args, in_tree = _tree_util.tree_flatten((args, {}))
  result_avals = jax.tree.map(
      lambda s: _core.ShapedArray(s.shape, s.dtype), result_shape_dtypes)
  flat_avals, out_tree = _tree_util.tree_flatten(result_avals)
  out = host_callback_p.bind(
      *flat_args, callback=_jcb._FlatCallback(fn, in_tree),  # pylint: disable=protected-access
      result_avals=tuple(flat_avals), sharding=None,
      vmap_method='sequential')
  return _tree_util.tree_unflatten(out_tree, out)
