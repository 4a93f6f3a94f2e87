"""The platform workarounds in mimuon_optax/_platform.py do what they say."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from mimuon_optax import _platform


def test_import_limits_openblas_threads_unless_set():
  code = ('import os, mimuon_optax;'
          ' print(os.environ.get("OPENBLAS_NUM_THREADS"))')
  env = {k: v for k, v in os.environ.items() if k != 'OPENBLAS_NUM_THREADS'}
  env['JAX_PLATFORMS'] = 'cpu'
  out = subprocess.run([sys.executable, '-c', code], env=env, check=True,
                       capture_output=True, text=True, timeout=120).stdout
  assert out.split() == ['1']
  env['OPENBLAS_NUM_THREADS'] = '2'
  out = subprocess.run([sys.executable, '-c', code], env=env, check=True,
                       capture_output=True, text=True, timeout=120).stdout
  assert out.split() == ['2']


def test_one_matrix_at_a_time_matches_the_batched_call(rng):
  x = rng.standard_normal((3, 5, 5))
  sym = jnp.asarray(x + np.swapaxes(x, 1, 2), jnp.float32)
  serial = _platform.one_matrix_at_a_time(jnp.linalg.eigvalsh)(sym)
  np.testing.assert_allclose(serial, jnp.linalg.eigvalsh(sym), rtol=1e-6,
                             atol=1e-6)


def test_platform_guesses_follow_the_default_backend():
  backend = jax.default_backend()
  assert _platform.on_cpu(None) == (backend == 'cpu')
  assert _platform.has_float64() == (backend != 'tpu')
  mesh = jax.make_mesh((1,), ('d',), axis_types=(jax.sharding.AxisType.Auto,))
  assert _platform.serial_lapack(mesh) == _platform.on_cpu(mesh) == (
      backend == 'cpu')
  assert _platform.serial_lapack(None) == (
      backend == 'cpu' and jax.device_count() > 1)
