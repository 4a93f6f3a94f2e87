"""Platform workarounds and guesses, in one place, each with when to delete it.

Everything here exists because of one backend's behaviour, not because of
the algorithm. Each entry says which release should let us delete it; check
again on every jaxlib upgrade (``tests/test_platform.py`` pins what each
one does).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
from importlib import metadata
import os
import re
from typing import Any, Callable

import jax

from mimuon_optax import _callback


# The floors of pyproject.toml's `dependencies` that the package checks when
# imported (tests/test_floor.py keeps them equal). `make test-floor` runs the
# core tests at exactly these versions (.ci/constraints-floor.txt).
MIN_VERSIONS = {
    'jax': '0.7.2',  # 0.7.1 cannot lower float64 inside a jit (enable_x64).
    'jaxlib': '0.7.2',
    'optax': '0.2.8',  # The contrib.muon signature muon() copies.
    'flax': '0.12.0',
}


def _release(version: str) -> tuple[int, ...]:
  """``'0.7.1'`` -> ``(0, 7, 1)``; pre-release and local tags ignored."""
  match = re.match(r'\d+(\.\d+)*', version)
  return tuple(int(p) for p in match.group().split('.')) if match else ()


def check_versions() -> None:
  """Raises ImportError naming the version needed where one is too old.

  Not a workaround: a jax, optax or flax below :data:`MIN_VERSIONS` fails
  at import, in one line, rather than with an ``AttributeError`` mid-step.
  Versions are read from the installed distributions (nothing is imported);
  a missing one is left to its first import.
  """
  for name, floor in MIN_VERSIONS.items():
    try:
      installed = metadata.version(name)
    except metadata.PackageNotFoundError:
      continue
    if _release(installed) < _release(floor):
      raise ImportError(
          f'mimuon_optax needs {name}>={floor}, but {name} {installed} is'
          f' installed: pip install -U "{name}>={floor}"')


def limit_openblas_threads() -> None:
  """Sets ``OPENBLAS_NUM_THREADS=1`` unless the user set it.

  jaxlib's CPU LAPACK (the gap test's eigensolver) calls scipy's OpenBLAS,
  whose threads fight XLA's thread pool: on a 2-core machine a 128x128
  ``eigvalsh`` took 110 ms instead of 1.3 ms, and a jitted MiMuon step on
  the tiny Qwen3 deadlocked within a few steps. OpenBLAS reads the variable
  when it is loaded, which is at the first jax linalg call of the process,
  so importing ``mimuon_optax`` before that is enough (numpy's own BLAS,
  loaded with numpy, is not affected). Child processes inherit it.

  Delete when jaxlib's CPU LAPACK stops calling a threaded BLAS (still
  needed with jaxlib 0.10.2).
  """
  os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')


def on_cpu(mesh: jax.sharding.Mesh | None) -> bool:
  """Whether ``mesh`` (None: the default backend) holds CPU devices.

  An abstract mesh has no devices; it is guessed to be on the default
  backend. Not a workaround: the platform guess :func:`serial_lapack` needs.
  """
  devices = getattr(mesh, 'devices', None)
  if devices is None or not hasattr(devices, 'flat'):
    return jax.default_backend() == 'cpu'
  return next(iter(devices.flat)).platform == 'cpu'


def serial_lapack(mesh: jax.sharding.Mesh | None) -> bool:
  """Whether batched LAPACK calls must run one matrix at a time.

  True on CPU when several CPU devices share the process: a ``mesh`` of
  them, or plain GSPMD (no mesh) that may partition the step over them. See
  :func:`one_matrix_at_a_time` for why.
  """
  if mesh is not None:
    return on_cpu(mesh)
  return jax.default_backend() == 'cpu' and jax.device_count() > 1


def one_matrix_at_a_time(fn: Callable[[jax.Array], jax.Array]
                         ) -> Callable[[jax.Array], jax.Array]:
  """``fn`` on a ``(B, ...)`` batch, one matrix at a time (``lax.map``).

  jaxlib's batched CPU LAPACK kernels fan their batch out onto the CPU
  client's thread pool and block until it is done; when GSPMD partitions the
  step over simulated CPU devices, those threads can all be parked in
  another device's collective, and the step never finishes. One matrix at a
  time runs inline. Accelerators keep the batched call.

  Delete when jaxlib's CPU LAPACK custom calls no longer block on the shared
  thread pool (still needed with jaxlib 0.10.2:
  ``tests/test_sharding.py`` hangs without it).
  """
  return lambda x_B: jax.lax.map(lambda x: fn(x[None])[0], x_B)


def enable_x64() -> contextlib.AbstractContextManager[Any]:
  """A context in which jax makes and computes 64-bit values.

  The in-graph float64 gate (``precision="float64"``) enters it while the
  caller's jit traces. ``jax.enable_x64`` exists from jax 0.8.0; jax 0.7.x
  spells it ``jax.experimental.enable_x64``, which later releases removed
  (0.10.2 has only the first). Both are thread-local and may be entered
  while tracing. jax 0.7.1's cannot: the enclosing jit lowers float64
  constants at float32 (a verifier error in ``eigh_tridiagonal``), hence
  the jax floor 0.7.2 (:data:`MIN_VERSIONS`).

  Delete when the jax floor reaches 0.8.0: call ``jax.enable_x64(True)``
  at the call sites (``_gap.py``).
  """
  switch = getattr(jax, 'enable_x64', None)
  if switch is None:  # jax < 0.8.0
    switch = importlib.import_module('jax.experimental').enable_x64
  return switch(True)


def has_float64() -> bool:
  """Whether the default backend computes in float64 (TPU does not).

  Not a workaround: it picks the gap test's ``precision="auto"``.
  """
  return jax.default_backend() != 'tpu'


def auto_gate_precision(mesh: jax.sharding.Mesh | None = None) -> str:
  """What the gate's ``precision="auto"`` means on the default backend.

  - No device float64 (TPU): ``"host"``, the float64 spectrum on the host
    CPU. A float32 SVD cannot resolve the gaps of real momenta at width >=
    256 (it agreed with float64 SVD on 12% of the decisions on spiked
    momentum-like spectra, always taking the SGD branch).
  - CPU: ``"host"``: the same float64 numbers from LAPACK ``syevr`` in a
    callback beat the in-graph tridiagonalization + bisection
    (``python -m benchmarks.step_time --preset small``; numbers in
    ``benchmarks/RESULTS.md``), except where :func:`host_callback_hangs`
    (then ``"float64"``).
  - GPU: ``"float64"`` until a device measurement says otherwise (the host
    path would copy every momentum to the host each step).

  Re-measure on every jaxlib upgrade.
  """
  if on_cpu(mesh) and host_callback_hangs(mesh):
    return 'float64'
  if not has_float64() or on_cpu(mesh):
    return 'host'
  return 'float64'


def host_callback_hangs(mesh: jax.sharding.Mesh | None) -> bool:
  """Whether the host gate's callback can deadlock here.

  ``jax.pure_callback`` first copies its operands onto CPU device 0 and
  waits for the copy, which needs a thread of XLA:CPU's pool. Where one
  process drives several CPU devices (the simulated devices of
  ``--xla_force_host_platform_device_count``), every device's step can be
  parked in a callback (``mesh=``: one per device) or in a collective
  waiting for device 0 (plain GSPMD, which gives device 0 the callback), and
  no thread is left to make the copy (seen with 8 simulated devices on 2
  cores, jaxlib 0.10.2: ``experiments.train_lm --mesh 2x4`` hung).

  The gate's callback (``_callback.host_callback``) skips that copy, so this
  is False wherever ``_callback.DIRECT`` (the jax versions whose private
  callback pieces it reuses); on other versions it is True in that
  several-CPU-devices case, where ``"auto"`` picks ``"float64"`` and an
  explicit ``"host"`` is refused. One CPU device per process (a pod's host,
  a 2-process rehearsal with one device each) and accelerators, whose steps
  do not run on that pool, are never affected.
  """
  if _callback.DIRECT or not on_cpu(mesh):
    return False
  devices = getattr(mesh, 'devices', None)
  if devices is None or not hasattr(devices, 'flat'):
    return jax.local_device_count() > 1
  here = jax.process_index()
  return sum(d.process_index == here for d in devices.flat) > 1


_HOST_EXECUTOR: concurrent.futures.ThreadPoolExecutor | None = None


def host_gate_workers() -> int:
  """Threads for the host gate: one per usable core but one, 1 to 32.

  Each thread runs one matrix's single-threaded LAPACK (OpenBLAS is limited
  to one thread above), so matrices spread over the cores; one core is left
  to the XLA work that runs beside the callback (Newton-Schulz), so a 2-core
  machine uses 1 thread and is never oversubscribed. ``MIMUON_HOST_THREADS``
  overrides it.
  """
  env = os.environ.get('MIMUON_HOST_THREADS')
  if env:
    return max(1, int(env))
  cores = len(os.sched_getaffinity(0)) if hasattr(
      os, 'sched_getaffinity') else (os.cpu_count() or 1)
  return max(1, min(32, cores - 1))


def _forget_executor() -> None:
  global _HOST_EXECUTOR
  _HOST_EXECUTOR = None  # A forked child has none of the parent's threads.


os.register_at_fork(after_in_child=_forget_executor)


def host_executor() -> concurrent.futures.Executor:
  """The host gate's thread pool, created once per process.

  Its threads are separate from XLA's, so a callback may wait on them (the
  overlapped gate, ``_gap.start_host_gaps``) without blocking device work.
  """
  global _HOST_EXECUTOR
  if _HOST_EXECUTOR is None:
    _HOST_EXECUTOR = concurrent.futures.ThreadPoolExecutor(
        host_gate_workers(), thread_name_prefix='mimuon-host-gate')
  return _HOST_EXECUTOR
