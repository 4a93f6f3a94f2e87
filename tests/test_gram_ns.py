"""Gram Newton-Schulz (issue 24) against float64 SVD, as tests/test_newton_schulz.

Gram NS computes the same composed polynomial as the standard iteration with
k x k products only. Every case checks the singular values of its output
against the polynomial applied to the float64 singular values of the input
(the band machinery of tests/test_newton_schulz.py): float32 and bfloat16,
with and without restarts, on well- and ill-conditioned, spiked and
rank-deficient inputs at scales from 1e-30 to 1e30.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mimuon_optax as mo
from mimuon_optax import _newton_schulz
from conftest import matrix_with_singular_values
from test_newton_schulz import composed_polynomial
from test_preconditioning import PRECONDITIONINGS

SCHEDULES = [('jordan', 5), ('you', 5), ('polar_express', 5),
             ('polar_express', 8), ('cans', 5)]
SHAPES = [(32, 32), (24, 72), (72, 24)]  # square, wide 1:3, tall 3:1
KINDS = ('cond1', 'cond1e3', 'spiked', 'rank_deficient')
SCALES = (1e-30, 1.0, 1e30)


def spectrum(kind, k):
  """Singular values of a test input (descending, float64)."""
  if kind == 'cond1':
    return np.ones(k)
  if kind == 'cond1e3':
    return np.geomspace(1.0, 1e-3, k)
  if kind == 'spiked':  # one direction 1000x the others
    return np.concatenate([[1.0], np.full(k - 1, 1e-3)])
  s = np.zeros(k)  # rank k / 4
  s[:k // 4] = np.geomspace(1.0, 0.1, k // 4)
  return s


def cases(shape, seed=0):
  rng = np.random.default_rng(seed)
  for kind in KINDS:
    s = spectrum(kind, min(shape))
    yield kind, matrix_with_singular_values(rng, *shape, s), s


def band_excess(schedule, x, s, out):
  """How far out's singular values leave the polynomial's band (<= 0: in).

  The band is the composed polynomial's range over the input's nonzero
  singular values (and 0 for a rank-deficient input), as in
  tests/test_newton_schulz.py.
  """
  out = np.nan_to_num(np.asarray(out, np.float64), nan=1e30, posinf=1e30,
                      neginf=-1e30)
  got = np.linalg.svd(out, compute_uv=False)
  nonzero = s[s > 0]
  grid = np.geomspace(nonzero.min(), nonzero.max(), 4000)
  if (s == 0).any():
    grid = np.append(grid, 0.0)
  band = composed_polynomial(schedule, grid, np.linalg.norm(x))
  return max(got.max() - band.max(), band.min() - got.min())


def run(x, schedule, **kwargs):
  return mo.newton_schulz(jnp.asarray(x, jnp.float32)[None], schedule,
                          **kwargs)[0]


@pytest.mark.parametrize('name,steps', SCHEDULES)
@pytest.mark.parametrize('shape', SHAPES)
def test_float32_follows_the_polynomial_like_standard(name, steps, shape):
  """float32, default restart: s(out) == p(s) like standard NS, every case.

  Per singular value, Gram's error is at most the standard iteration's on
  the same input plus 3e-3 (the standard tolerance of
  tests/test_newton_schulz.py; float32 rounding times the polynomial's
  slope, up to ~1500 near 0 for cans, which the spiked input's 1e-3 values
  meet). The output stays in the band within 3e-3. The input's scale (1e-30
  .. 1e30) changes nothing beyond rounding.
  """
  schedule = mo.ns_schedule(name, steps)
  svd = lambda o: np.linalg.svd(np.asarray(o, np.float64), compute_uv=False)
  for kind, x, s in cases(shape):
    want = np.sort(composed_polynomial(schedule, s, np.linalg.norm(x)))[::-1]
    for scale in SCALES:
      out = run(x * scale, schedule, ns_dtype='float32', ns_method='gram')
      standard = svd(run(x * scale, schedule, ns_dtype='float32'))
      err = np.abs(svd(out) - want)
      assert np.all(err <= np.abs(standard - want) + 3e-3), (
          kind, scale, err.max(), np.abs(standard - want).max())
      assert band_excess(schedule, x, s, out) < 3e-3, (kind, scale)


@pytest.mark.parametrize('preconditioning', PRECONDITIONINGS)
def test_gram_equals_standard_for_every_preconditioning(rng, preconditioning):
  """The same map: float32 outputs agree to 2e-4 (square, wide, tall)."""
  schedule = mo.ns_schedule('polar_express', 5)
  for shape in SHAPES:
    x = rng.standard_normal(shape) * np.geomspace(1, 1e-2, shape[1])
    a, b = (run(x, schedule, ns_dtype='float32', ns_method=method,
                preconditioning=preconditioning)
            for method in ('standard', 'gram'))
    np.testing.assert_allclose(a, b, atol=2e-4)


RESTARTS = [(), (1,), (2,), (3,), (2, 4), (2, 4, 6)]


def restart_table():
  """Worst band excess over SHAPES x KINDS per (schedule, dtype, restarts).

  Run ``python -m pytest -s tests/test_gram_ns.py -k restart`` to print it
  (docs/dropin.md and benchmarks/RESULTS.md quote it).
  """
  table = {}
  for name, steps in [('polar_express', 5), ('jordan', 5),
                      ('polar_express', 8)]:
    schedule = mo.ns_schedule(name, steps)
    for dtype in ('float32', 'bfloat16'):
      for restarts in [None] + RESTARTS:
        if restarts and max(restarts) >= steps:
          continue
        method = 'standard' if restarts is None else 'gram'
        table[name, steps, dtype, restarts] = max(
            band_excess(schedule, x, s, run(
                x, schedule, ns_dtype=dtype, ns_method=method,
                gram_restarts=restarts))
            for shape in SHAPES for _, x, s in cases(shape))
  return table


def test_where_the_restart_is_needed():
  """Measured: float32 needs one restart, bfloat16 two.

  float32 without a restart drifts out of the band by more than the 3e-3
  tolerance; one restart (before step 2, the float32 default) brings it
  back. In bfloat16 one restart is not enough: the Gram's rounding (~4e-3
  of its norm) makes its smallest eigenvalues slightly negative, each step
  multiplies such an eigenvalue by about a^2 (66 in polar_express's first
  step), and rank-deficient and spiked inputs blow up; restarts before
  steps 2 and 4 (the bfloat16 default) stay within 0.15 or the standard
  iteration's own bfloat16 excess on these inputs, whichever is larger.
  """
  table = restart_table()
  print()
  for (name, steps, dtype, restarts), excess in table.items():
    label = 'standard' if restarts is None else f'gram, restarts {restarts}'
    print(f'{name}/{steps} {dtype} {label}: band excess {excess:.3g}')
  for name, steps in [('polar_express', 5), ('polar_express', 8)]:
    assert table[name, steps, 'float32', ()] > 3e-3
    assert table[name, steps, 'float32', (2,)] < 3e-3
    assert table[name, steps, 'bfloat16', (2,)] > 0.5
  for name, steps in [('polar_express', 5), ('jordan', 5),
                      ('polar_express', 8)]:
    default = _newton_schulz.default_gram_restarts(steps, jnp.bfloat16)
    assert table[name, steps, 'bfloat16', default] <= max(
        0.15, table[name, steps, 'bfloat16', None])


def test_auto_picks_gram_by_aspect_ratio(rng):
  """ns_method="auto": Gram where long >= GRAM_MIN_ASPECT * short."""
  ratio = mo.GRAM_MIN_ASPECT
  assert mo.uses_gram((16, int(16 * ratio)), 'auto')
  assert mo.uses_gram((int(16 * ratio), 16), 'auto')
  assert not mo.uses_gram((16, int(16 * ratio) - 1), 'auto')
  assert mo.uses_gram((16, 16), 'gram')
  assert not mo.uses_gram((16, 64), 'standard')
  schedule = mo.ns_schedule()
  for shape, method in [((16, 48), 'gram'), ((16, 20), 'standard')]:
    x = rng.standard_normal(shape)
    np.testing.assert_array_equal(
        run(x, schedule, ns_method='auto'),
        run(x, schedule, ns_method=method))


def test_muon_with_gram_ns_jits_once_and_matches_standard(rng):
  """muon(ns_method="gram") == muon() to float32 rounding; one compile."""
  params = {'up': jnp.asarray(rng.standard_normal((16, 48)), jnp.float32),
            'sq': jnp.asarray(rng.standard_normal((16, 16)), jnp.float32)}
  grads = jax.tree.map(lambda p: jnp.sin(3 * p), params)
  outs = {}
  for method in ('standard', 'gram'):
    tx = mo.muon(0.1, ns_dtype='float32', ns_method=method)
    step = jax.jit(tx.update)
    state = tx.init(params)
    u, state = step(grads, state, params)
    u, state = step(grads, state, params)
    assert step._cache_size() == 1
    outs[method] = u
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               outs['standard'], outs['gram'])
