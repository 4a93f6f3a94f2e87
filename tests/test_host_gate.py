"""precision="host": the gate's float64 spectrum on the host CPU.

The references are numpy float64 SVDs of the same float32 (or bf16) matrix
the library sees, and the in-graph ``"float64"`` path, which
``tests/test_gap.py`` checks against the same references.

  python -m tests.test_host_gate mesh   # the 8-device case by hand
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Momentum-like spectra: five spikes over a Gaussian bulk (issue 22).
SPIKES = (1.0, 0.6, 0.35, 0.2, 0.1)
TAU = 0.3


def spiked(rng, m, n, bulk):
  """float32 matrix: the five SPIKES (rank-1 terms) + Gaussian bulk.

  The bulk's largest singular value is ``bulk`` (s_max = 1).
  """
  g = rng.standard_normal((m, n))
  x = g / np.linalg.norm(g, 2) * bulk
  for s in SPIKES:
    u = rng.standard_normal(m)
    v = rng.standard_normal(n)
    x += s * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))
  return x.astype(np.float32)


def reference_rho(x32) -> float:
  """rho of the float32 matrix from float64 numpy SVD (test_gap's rule)."""
  from test_gap import reference_stats  # pylint: disable=import-outside-toplevel
  return reference_stats(x32)[2]


def _stats(precision, stack):
  import jax  # pylint: disable=import-outside-toplevel
  import mimuon_optax as mo  # pylint: disable=import-outside-toplevel
  return jax.jit(lambda x: mo.spectral_gap(x, precision=precision))(stack)


def test_host_gives_the_float64_gap_stats(rng):
  """Every GapStats field, real and complex, planted and degenerate."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from conftest import matrix_with_singular_values  # pylint: disable=import-outside-toplevel
  s = np.array([1.0, 0.9, 0.9, 0.5, 0.2, 0.1, 0, 0])  # a repeat, rank 6
  stacks = [
      np.stack([rng.standard_normal((48, 80)),
                matrix_with_singular_values(rng, 48, 80, np.linspace(1, .1, 48)),
                np.zeros((48, 80))]).astype(np.float32),
      np.stack([matrix_with_singular_values(rng, 8, 8, s) * 1e30,
                np.outer(np.arange(8.), np.ones(8)) * 1e-30]).astype(np.float32),
      (rng.standard_normal((2, 30, 20))
       + 1j * rng.standard_normal((2, 30, 20))).astype(np.complex64),
  ]
  for stack in stacks:
    host = _stats('host', jnp.asarray(stack))
    f64 = _stats('float64', jnp.asarray(stack))
    np.testing.assert_array_equal(host.rank, f64.rank)
    for name in ('min_gap', 'rel_gap', 'rho', 'median_gap', 's_max',
                 'resolution'):
      # Two float64 eigensolvers (syevd vs bisection) on the same Gram:
      # gaps >= 1e-3 s_max here, eigenvalue errors ~1e-15 s_max**2.
      np.testing.assert_allclose(getattr(host, name), getattr(f64, name),
                                 rtol=1e-5, atol=0, err_msg=name)
  # And against numpy: a repeat is kappa = 0; the complex spectrum is the
  # complex matrix's own.
  assert float(_stats('host', jnp.asarray(stacks[1])).min_gap[0]) == 0.0
  z = stacks[2]
  ref = np.sort(np.linalg.svd(z.astype(np.complex128), compute_uv=False))
  import mimuon_optax as mo  # pylint: disable=import-outside-toplevel
  got = np.asarray(mo.singular_values(jnp.asarray(z), precision='host'))
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 * ref.max())


@pytest.mark.parametrize('shape', [
    (256, 768), pytest.param((1024, 3072), marks=pytest.mark.slow)])
def test_spiked_momenta_decide_like_float64_svd_without_device_float64(
    rng, shape, monkeypatch):
  """The issue's families: bulk at 1e-2 and 1e-3 of s_max, 6 seeds each.

  With device float64 "unavailable", ``"auto"`` takes the host path and
  agrees with float64 SVD on every decision at tau = 0.3 (the acceptance
  is >= 99%). The forced float32 SVD is the contrast: blind here.
  """
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from mimuon_optax import _gap, _platform  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(_platform, 'has_float64', lambda: False)
  assert _gap.resolve_precision('auto') == 'host'
  m, n = shape
  stack = np.stack([spiked(rng, m, n, bulk) for bulk in (1e-2, 1e-3)
                    for _ in range(6)])
  truth = np.array([reference_rho(x) >= TAU for x in stack])
  auto = np.asarray(_stats('auto', jnp.asarray(stack)).rho) >= TAU
  np.testing.assert_array_equal(auto, truth)
  if m > 256:
    return  # float32 SVDs of 1024 x 3072 cost a minute; the contrast is made.
  f32 = np.asarray(_stats('float32', jnp.asarray(stack)).rho) >= TAU
  print(f'{shape}: float64 SVD orthogonalizes {truth.mean():.0%}; host agrees'
        f' on {np.mean(auto == truth):.0%}, float32 SVD on'
        f' {np.mean(f32 == truth):.0%}')


def test_device_program_has_no_float64_without_device_float64(monkeypatch):
  """The host path's lowered program: f64 nowhere (TPU has none)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import mimuon_optax as mo  # pylint: disable=import-outside-toplevel
  from mimuon_optax import _platform  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(_platform, 'has_float64', lambda: False)
  params = {'w': jnp.ones((16, 48)), 'stack': jnp.ones((3, 32, 24)),
            'b': jnp.ones(16)}
  dims = {'w': None, 'stack': mo.MuonDimensionNumbers(1, 2), 'b': None}

  def hlo(precision):
    tx = mo.mimuon(0.01, precision=precision, weight_dimension_numbers=dims)
    state = tx.init(params)
    return jax.jit(tx.update).lower(params, state, params).as_text()

  assert 'f64' not in hlo('auto')
  assert 'f64' in hlo('float64')  # The check can fail.


def test_an_error_on_the_host_surfaces_as_a_python_error(monkeypatch):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import mimuon_optax as mo  # pylint: disable=import-outside-toplevel
  from mimuon_optax import _gap  # pylint: disable=import-outside-toplevel

  def fail(w):
    raise RuntimeError(f'planted failure on {w.shape}')

  monkeypatch.setattr(_gap, '_host_singular_values', fail)
  tx = mo.mimuon(0.01, precision='host')
  params = {'w': jnp.ones((8, 12))}
  with pytest.raises(Exception, match='planted failure'):
    jax.block_until_ready(
        jax.jit(tx.update)(params, tx.init(params), params))


@pytest.mark.parametrize('gap_every,static', [(1, True), (3, True),
                                              (1, False), (3, False)])
def test_host_trains_like_float64_under_inject_hyperparams(
    rng, gap_every, static):
  """Same params, bit for bit, and the same decisions over 8 steps.

  A static ``gap_every`` staggers the measurements (1: the overlapped
  two-callback path); an injected (traced) one measures in one callback
  under ``lax.cond``.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  params = {f'w{i}': jnp.asarray(rng.standard_normal(s), jnp.float32)
            for i, s in enumerate([(32, 64), (32, 64), (64, 32), (48, 48)])}
  grads = [jax.tree.map(lambda p: jnp.asarray(
      rng.standard_normal(p.shape), jnp.float32), params) for _ in range(8)]
  p_host, d_host = train_injected(params, grads, 'host', gap_every, static)
  p_f64, d_f64 = train_injected(params, grads, 'float64', gap_every, static)
  np.testing.assert_array_equal(d_host, d_f64)
  assert 0 < d_host.mean() < 1  # Both branches were taken.
  for k in params:
    np.testing.assert_array_equal(p_host[k], p_f64[k])


def train_injected(params, grads, precision, gap_every, static, **kwargs):
  """(params, decisions per step) of inject_hyperparams(mimuon), tau 0.5.

  ``gap_every`` is static (a Python int: staggered) or injected (traced);
  ``kwargs`` are further static mimuon arguments.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  import mimuon_optax as mo  # pylint: disable=import-outside-toplevel
  static_args = ('ns_steps', 'precision', *kwargs) + (
      ('gap_every',) if static else ())
  tx = optax.inject_hyperparams(mo.mimuon, static_args=static_args)(
      learning_rate=0.02, tau=0.5, precision=precision, gap_every=gap_every,
      **kwargs)
  state = tx.init(params)
  step = jax.jit(tx.update)
  p, decisions = params, []
  for g in grads:
    u, state = step(g, state, p)
    p = optax.apply_updates(p, u)
    decisions.append(jax.tree.leaves(
        mo.mix_diagnostics(state).orthogonalized))
  return p, np.asarray(decisions)


def test_host_threads_spread_matrices_and_give_the_same_stats(
    rng, monkeypatch):
  """A pool of 3 threads == 1 thread; one core is left to XLA (2 -> 1)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from mimuon_optax import _platform  # pylint: disable=import-outside-toplevel
  stack = jnp.asarray(rng.standard_normal((7, 24, 40)), jnp.float32)
  monkeypatch.setenv('MIMUON_HOST_THREADS', '1')
  monkeypatch.setattr(_platform, '_HOST_EXECUTOR', None)
  inline = _stats('host', stack)
  assert _platform.host_executor()._max_workers == 1  # pylint: disable=protected-access
  monkeypatch.setenv('MIMUON_HOST_THREADS', '3')
  monkeypatch.setattr(_platform, '_HOST_EXECUTOR', None)
  pooled = _stats('host', stack)
  assert _platform.host_executor()._max_workers == 3  # pylint: disable=protected-access
  for a, b in zip(inline, pooled):
    np.testing.assert_array_equal(a, b)
  monkeypatch.delenv('MIMUON_HOST_THREADS')
  monkeypatch.setattr(_platform.os, 'sched_getaffinity', lambda _: {0, 1})
  assert _platform.host_gate_workers() == 1
  monkeypatch.setattr(_platform.os, 'sched_getaffinity',
                      lambda _: set(range(96)))
  assert _platform.host_gate_workers() == 32


def test_host_job_scales_like_the_device_bit_for_bit(rng):
  """The host's _wide (fewer passes) == the device's, and _host_matrix
  == _wide + _host_singular_values.

  Same scaled matrix, exponent, singular values and Frobenius norm, dtypes
  included, on wide, tall, 1e30 and 1e-30 scales, zero, Inf, NaN, one row,
  bfloat16, complex inputs and a stack of matrices mixing those.
  """
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import ml_dtypes  # pylint: disable=import-outside-toplevel
  from mimuon_optax import _gap  # pylint: disable=import-outside-toplevel
  f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  cases = [f32(24, 72), f32(72, 24) * 1e30, f32(16, 16) * 1e-30,
           np.zeros((8, 24), np.float32),
           np.array([[1, np.inf], [0, 1]], np.float32),
           np.array([[-np.inf, 1], [0, 1]], np.float32),
           np.array([[np.nan, 1, 2]], np.float32), np.ones((1, 5), np.float32),
           f32(16, 48).astype(ml_dtypes.bfloat16),
           (f32(12, 20) + 1j * f32(12, 20)).astype(np.complex64)]
  stack = np.stack([f32(6, 9), f32(6, 9) * 1e-20, np.zeros((6, 9), np.float32),
                    np.full((6, 9), np.nan, np.float32)])
  for x in [c[None] for c in cases] + [stack]:
    w, exponent = _gap._wide(x, np)  # pylint: disable=protected-access
    w_dev, exponent_dev = _gap._wide(jnp.asarray(x))  # pylint: disable=protected-access
    np.testing.assert_array_equal(w, np.asarray(w_dev))
    np.testing.assert_array_equal(exponent, np.asarray(exponent_dev))
    assert w.dtype == w_dev.dtype and exponent.dtype == exponent_dev.dtype
    if len(x) > 1:
      continue
    want = (_gap._host_singular_values(w[0]),  # pylint: disable=protected-access
            np.linalg.norm(w, axis=(-2, -1))[0], exponent[0])
    got = _gap._host_matrix(x[0])  # pylint: disable=protected-access
    for a, b in zip(want, got):
      np.testing.assert_array_equal(a, b)
      assert np.asarray(a).dtype == np.asarray(b).dtype, (x.shape, x.dtype)


def test_host_gate_overlaps_newton_schulz_in_two_callbacks():
  """gap_every=1 without a mesh: start -> barrier -> NS -> finish.

  The first callback's ticket passes an optimization barrier with the
  momentum before Newton-Schulz, and the second takes a value computed from
  Newton-Schulz's output, so XLA cannot run it first (which would serialize
  the two again). Staggered and mesh runs keep one callback.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import mimuon_optax as mo  # pylint: disable=import-outside-toplevel
  params = {'a': jnp.ones((8, 12)), 'b': jnp.ones((4, 6, 10)),
            'bias': jnp.ones(3)}
  dims = {'a': None, 'b': mo.MuonDimensionNumbers(1, 2), 'bias': None}

  def jaxpr(**kw):
    tx = mo.mimuon(0.01, precision='host', weight_dimension_numbers=dims,
                   **kw)
    return str(jax.make_jaxpr(tx.update)(params, tx.init(params), params))

  text = jaxpr()
  assert text.count('mimuon_host_callback') == 2
  assert text.index('mimuon_host_callback') < text.index('optimization_barrier')
  assert text.index('optimization_barrier') < text.rindex('dot_general')
  assert text.rindex('dot_general') < text.rindex('mimuon_host_callback')
  assert jaxpr(gap_every=2).count('mimuon_host_callback') == 1


def test_auto_per_backend(monkeypatch):
  """auto: host on CPU and without float64; float64 under CPU GSPMD."""
  import jax  # pylint: disable=import-outside-toplevel
  from mimuon_optax import _gap, _platform  # pylint: disable=import-outside-toplevel
  assert jax.default_backend() == 'cpu'
  expected = 'float64' if jax.device_count() > 1 else 'host'
  assert _gap.resolve_precision('auto') == expected
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  monkeypatch.setattr(_platform, 'on_cpu', lambda mesh: False)
  assert _gap.resolve_precision('auto') == 'float64'
  monkeypatch.setattr(_platform, 'has_float64', lambda: False)
  assert _gap.resolve_precision('auto') == 'host'


@pytest.mark.slow
def test_several_cpu_devices_in_one_process_run_the_host_gate():
  """8 simulated CPU devices: "host" (auto) matches one device within 1e-5.

  Also with ``lagged_gate=True`` under ``mesh=`` (the previous input is
  sharded like its parameter).

  ``jax.pure_callback`` would park every XLA:CPU thread here (its operand
  copy onto device 0 needs one, ``_platform.host_callback_hangs``); the
  gate's own callback (``_callback.host_callback``) skips that copy, so
  with ``mesh=`` (one callback per device) and with plain GSPMD (device 0's
  callback while the others wait in a collective) the steps finish and
  equal the one-device float64 run. Idle: ~25 s; the limit catches hangs.
  """
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=os.environ.get('XLA_FLAGS', '')
             + ' --xla_force_host_platform_device_count=8')
  proc = subprocess.run([sys.executable, '-m', 'tests.test_host_gate', 'mesh'],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-6000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['auto'] == ['host', 'host']  # mesh=, and plain GSPMD
  assert 0 < result['orth_fraction'] < 1
  for run in ('mesh', 'gspmd', 'mesh_lagged'):
    assert result[run]['max_err'] < 1e-5, result
    assert result[run]['decisions_equal'], result
  assert result['previous_sharded'], result


def test_host_callback_hangs_only_without_the_direct_callback(monkeypatch):
  """The refusal is kept for jax versions whose callback pieces differ."""
  from mimuon_optax import _callback, _gap, _platform  # pylint: disable=import-outside-toplevel
  class Device:
    def __init__(self, process):
      self.process_index = process

  class Mesh:
    def __init__(self, processes):
      self.devices = np.array([Device(p) for p in processes])

  monkeypatch.setattr(_platform, 'on_cpu', lambda mesh: True)
  assert _callback.DIRECT
  assert not _platform.host_callback_hangs(Mesh([0, 0, 0, 0]))
  monkeypatch.setattr(_callback, 'DIRECT', False)
  assert _platform.host_callback_hangs(Mesh([0, 0, 0, 0]))
  assert not _platform.host_callback_hangs(Mesh([0, 1]))  # a pod's hosts
  assert _gap.resolve_precision('auto', Mesh([0, 0])) == 'float64'
  with pytest.raises(ValueError, match='several CPU devices'):
    _gap.resolve_precision('host', Mesh([0, 0]))


def test_host_callback_is_pure_callback_without_the_copy():
  """host_callback gives jax.pure_callback's values, without the copy.

  Under jit, vmap (sequential) and eagerly; the function gets numpy arrays;
  grads raise, as pure_callback's do.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from mimuon_optax import _callback  # pylint: disable=import-outside-toplevel
  seen = []

  def fn(x, y):
    seen.append(type(x))
    return {'s': np.asarray(x * 2 + y['b'], np.float32)}

  shapes = {'s': jax.ShapeDtypeStruct((3,), jnp.float32)}
  x = jnp.arange(3.0)
  y = {'b': jnp.ones(3)}
  want = jax.pure_callback(fn, shapes, x, y)['s']
  got = jax.jit(lambda a, b: _callback.host_callback(fn, shapes, a, b))(x, y)
  np.testing.assert_array_equal(got['s'], want)
  np.testing.assert_array_equal(
      _callback.host_callback(fn, shapes, x, y)['s'], want)
  assert seen[-1] is np.ndarray
  xs = jnp.stack([x, x + 1])
  batched = jax.vmap(lambda a: _callback.host_callback(fn, shapes, a, y))(xs)
  np.testing.assert_array_equal(batched['s'],
                                np.stack([want, np.asarray(want) + 2]))
  with pytest.raises(ValueError, match='JVP'):
    jax.grad(lambda a: _callback.host_callback(fn, shapes, a, y)['s'].sum()
             )(x)


@pytest.mark.slow
def test_two_processes_measure_their_own_matrices_on_the_host():
  """A 2-process pod rehearsal (loopback, one CPU device each), mesh=.

  Each process's host measures the matrices of its own device; the run
  equals the same run with the in-graph float64 gate, bit for bit. Idle:
  ~15 s; the launcher's limit (and the subprocess's) catch hangs.
  """
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.harness.launch', '--num-processes', '2',
       '--devices-per-process', '1', '--timeout', '240', '--module',
       'tests.test_host_gate', '--', 'pod'],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONFAULTHANDLER='1'))
  assert proc.returncode == 0, proc.stderr[-6000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['process_count'] == 2 and result['auto'] == 'host'
  assert result['params_equal'] and result['decisions_equal']
  assert 0 < result['orth_fraction'] < 1


SHAPES = {  # name: (shape, dimension numbers)
    'w_in': ((64, 192), (0, 1)), 'w_out': ((192, 64), (0, 1)),
    'layers': ((8, 96, 64), (1, 2)), 'bias': ((64,), None)}


def _train(mesh, precision, shardings, steps=4, **kwargs):
  """``steps`` mimuon steps on SHAPES; (params, per-step decisions).

  ``kwargs`` go to ``mimuon`` (e.g. ``lagged_gate``).
  """
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  import mimuon_optax as mo  # pylint: disable=import-outside-toplevel
  dims = {k: d and mo.MuonDimensionNumbers(*d)
          for k, (_, d) in SHAPES.items()}
  keys = iter(jax.random.split(jax.random.key(0), 32))
  params = {k: jax.random.normal(next(keys), s) * 0.1
            for k, (s, _) in SHAPES.items()}
  grads = [{k: jax.random.normal(next(keys), s) for k, (s, _) in
            SHAPES.items()} for _ in range(steps)]
  put = lambda t: jax.device_put(t, shardings)
  tx = mo.mimuon(0.02, ns_dtype='float32', precision=precision, mesh=mesh,
                 weight_dimension_numbers=dims, **kwargs)
  p = put(params)
  state = tx.init(p)
  step = jax.jit(lambda p, s, g: tx.update(g, s, p))
  # Across processes only replicated values are read: this process's copy.
  local = lambda x: np.asarray(
      x if x.is_fully_addressable else x.addressable_data(0))
  decisions = []
  for g in grads:
    u, state = step(p, state, put(g))
    p = optax.apply_updates(p, u)
    decisions.append(np.concatenate([np.ravel(local(x)) for x in
                                     jax.tree.leaves(mo.mix_diagnostics(
                                         state).orthogonalized)]))
  return {k: local(v) for k, v in p.items()}, np.stack(decisions)


def case_mesh() -> dict:
  """Runs in a subprocess with 8 CPU devices (see the test above)."""
  import jax  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel
  from mimuon_optax import _gap  # pylint: disable=import-outside-toplevel
  auto = (jax.sharding.AxisType.Auto,) * 2
  mesh8 = jax.make_mesh((2, 4), ('data', 'fsdp'), axis_types=auto)
  mesh1 = jax.make_mesh((1, 1), ('data', 'fsdp'), axis_types=auto,
                        devices=jax.devices()[:1])
  specs = {'w_in': P(None, 'fsdp'), 'w_out': P('fsdp', None),
           'layers': P(('data', 'fsdp')), 'bias': P()}
  p1, d1 = _train(mesh1, 'float64', {k: NamedSharding(mesh1, P())
                                     for k in SHAPES})
  sharded = {k: NamedSharding(mesh8, v) for k, v in specs.items()}
  out = {'auto': [_gap.resolve_precision('auto', mesh8),
                  _gap.resolve_precision('auto')],
         'orth_fraction': float(d1.mean())}
  p1_lagged, d1_lagged = _train(
      mesh1, 'float64', {k: NamedSharding(mesh1, P()) for k in SHAPES},
      lagged_gate=True)
  for name, mesh, lagged in (('mesh', mesh8, False), ('gspmd', None, False),
                             ('mesh_lagged', mesh8, True)):
    p8, d8 = _train(mesh, 'host', sharded, lagged_gate=lagged)
    ref_p, ref_d = (p1_lagged, d1_lagged) if lagged else (p1, d1)
    out[name] = {
        'max_err': max(float(np.max(np.abs(ref_p[k] - p8[k])))
                       for k in ref_p),
        'decisions_equal': bool(np.array_equal(ref_d, d8))}
  # opt_state_shardings gives the lagged gate's copy its parameter's layout.
  import mimuon_optax as mo  # pylint: disable=import-outside-toplevel
  dims = {k: d and mo.MuonDimensionNumbers(*d) for k, (_, d) in
          SHAPES.items()}
  tx = mo.mimuon(0.02, mesh=mesh8, weight_dimension_numbers=dims,
                 lagged_gate=True)
  shapes = {k: jax.ShapeDtypeStruct(s, np.float32)
            for k, (s, _) in SHAPES.items()}
  previous = mo.mix_diagnostics(mo.opt_state_shardings(
      tx.init, shapes, sharded, mesh8)).previous
  out['previous_sharded'] = (not jax.tree.leaves(previous['bias']) and all(
      previous[k] == sharded[k] for k in ('w_in', 'w_out', 'layers')))
  return out


def case_pod() -> dict:
  """One of two launcher processes with one CPU device each (test above)."""
  from experiments.harness import distributed  # pylint: disable=import-outside-toplevel
  distributed.init_distributed(distributed.DistributedConfig())
  import jax  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel
  from mimuon_optax import _gap  # pylint: disable=import-outside-toplevel
  mesh = jax.make_mesh((2,), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  replicated = {k: NamedSharding(mesh, P()) for k in SHAPES}
  p_host, d_host = _train(mesh, 'host', replicated)
  p_f64, d_f64 = _train(mesh, 'float64', replicated)
  return {
      'process_count': jax.process_count(),
      'auto': _gap.resolve_precision('auto', mesh),
      'params_equal': all(np.array_equal(p_host[k], p_f64[k])
                          for k in SHAPES),
      'decisions_equal': bool(np.array_equal(d_host, d_f64)),
      'orth_fraction': float(d_host.mean()),
  }


if __name__ == '__main__':
  _result = {'mesh': case_mesh, 'pod': case_pod}[sys.argv[1]]()
  if os.environ.get('JAX_PROCESS_ID', '0') == '0':
    print(json.dumps(_result))
