"""Gram Newton-Schulz (issue 24) against float64 SVD, as tests/test_newton_schulz.

Gram NS computes the same composed polynomial as the standard iteration with
k x k products only. Every case checks the singular values of its output
against the polynomial applied to the float64 singular values of the input
(the band machinery of tests/test_newton_schulz.py): float32 and bfloat16,
with and without restarts, on well- and ill-conditioned, spiked and
rank-deficient inputs at scales from 1e-30 to 1e30.
"""

import functools

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
  """(kind, float64 input, its singular values) for each of KINDS."""
  rng = np.random.default_rng(seed)
  for kind in KINDS:
    s = spectrum(kind, min(shape))
    yield kind, matrix_with_singular_values(rng, *shape, s), s


def band_excess(schedule, x, s, out):
  """How far out's singular values leave the polynomial's band (<= 0: in).

  The band is the composed polynomial's range over the input's singular
  values, as in tests/test_newton_schulz.py. For a rank-deficient input it
  is the range over [0, s_max]: rounding the input to float32 or bfloat16
  turns its zero singular values into tiny nonzero ones, which the
  polynomial maps anywhere in that range (jordan/8 reaches 1.20 there, but
  only 1.13 on the nonzero values).
  """
  out = np.nan_to_num(np.asarray(out, np.float64), nan=1e30, posinf=1e30,
                      neginf=-1e30)
  got = np.linalg.svd(out, compute_uv=False)
  low = s.min() if s.min() > 0 else 1e-12 * s.max()
  grid = np.geomspace(low, s.max(), 4000)
  if (s == 0).any():
    grid = np.append(grid, 0.0)
  band = composed_polynomial(schedule, grid, np.linalg.norm(x))
  return max(got.max() - band.max(), band.min() - got.min())


def run(x, schedule, **kwargs):
  """newton_schulz on one float32 matrix."""
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


# Schedules of the restart study and of the per-case band rule.
RESTART_SCHEDULES = [('polar_express', 5), ('jordan', 5), ('polar_express', 8)]
RESTARTS = [(), (1,), (2,), (3,), (2, 4), (2, 4, 6)]
# How much further than standard NS Gram NS may leave the band on one input.
# float32: 5x standard NS's own worst excess here (1.9e-5); measured 1e-5.
# bfloat16: about one bfloat16 spacing at 1 (2^-7 = 0.0078); measured 2e-3
# (both iterations see the same bfloat16-rounded input, whose rounding
# moves the small singular values that the polynomial then amplifies).
BAND_TOLERANCE = {'float32': 1e-4, 'bfloat16': 1e-2}


@functools.cache
def excesses(name, steps, dtype, restarts='default', scales=(1.0,)):
  """Band excess per case (SHAPES x KINDS x scales), in a fixed order.

  ``restarts``: None for standard NS, ``'default'`` for Gram NS at
  :func:`default_gram_restarts`, or a tuple for Gram NS with those restarts.
  """
  schedule = mo.ns_schedule(name, steps)
  kwargs = dict(ns_dtype=dtype)
  if restarts is not None:
    kwargs.update(ns_method='gram', gram_restarts=(
        None if restarts == 'default' else restarts))
  return tuple(
      band_excess(schedule, x, s, run(x * scale, schedule, **kwargs))
      for shape in SHAPES for _, x, s in cases(shape) for scale in scales)


def over_standard(name, steps, dtype, restarts='default', scales=(1.0,)):
  """Per case, how much further Gram NS leaves the band than standard NS.

  A negative excess is a margin inside the band and counts as 0: where both
  outputs lie in the band, Gram NS matches standard NS's band.
  """
  gram = excesses(name, steps, dtype, restarts, scales)
  standard = excesses(name, steps, dtype, None, scales)
  return [max(g, 0.0) - max(s, 0.0) for g, s in zip(gram, standard)]


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('name,steps', RESTART_SCHEDULES)
def test_gram_leaves_the_band_no_further_than_standard(name, steps, dtype):
  """Per case, default restarts: excess(Gram) <= excess(standard) + tol.

  Every input of SHAPES x KINDS at scales 1e-30, 1 and 1e30, against float64
  SVD; the excess counts from 0 (inside the band is no excess).
  ``BAND_TOLERANCE``: 1e-4 in float32 (measured worst 1.0e-5), 1e-2 in
  bfloat16 (measured worst 1.6e-3, polar_express/5 on the spiked 24x72
  input). Before the bfloat16 iteration kept its k x k part in float32, the
  worst was 0.057 (polar_express/5, 72x24, cond 1e3).
  """
  labels = [f'{shape} {kind} scale {scale:g}' for shape in SHAPES
            for kind, _, _ in cases(shape) for scale in SCALES]
  over = over_standard(name, steps, dtype, scales=SCALES)
  gram = excesses(name, steps, dtype, scales=SCALES)
  standard = excesses(name, steps, dtype, None, scales=SCALES)
  failures = [f'{label}: gram {g:.3g}, standard {s:.3g}'
              for label, d, g, s in zip(labels, over, gram, standard)
              if d > BAND_TOLERANCE[dtype]]
  assert not failures, '\n'.join(failures)


def restart_table():
  """Worst band excess, and worst excess over standard NS, per restarts.

  Per (schedule, dtype, restarts) over SHAPES x KINDS: the worst band excess
  and the worst per-case :func:`over_standard`. Run ``python -m pytest -s
  tests/test_gram_ns.py -k restart`` to print it (docs/dropin.md and
  benchmarks/RESULTS.md quote it).
  """
  table = {}
  for name, steps in RESTART_SCHEDULES:
    for dtype in ('float32', 'bfloat16'):
      table[name, steps, dtype, None] = (
          max(excesses(name, steps, dtype, None)), 0.0)
      for restarts in RESTARTS:
        if restarts and max(restarts) >= steps:
          continue
        table[name, steps, dtype, restarts] = (
            max(excesses(name, steps, dtype, restarts)),
            max(over_standard(name, steps, dtype, restarts)))
  return table


def test_where_the_restart_is_needed():
  """Measured: one restart at 5 steps, two at 8, in float32 and bfloat16.

  Without a restart the float32 k x k iteration drifts out of the band
  (polar_express/5: 0.010, /8: 0.044), further than ``BAND_TOLERANCE``
  beyond standard NS; polar_express/8 with only the restart before step 2
  still leaves it by 1.8e-4. In bfloat16 (k x k part in float32) no restart
  leaves the band by 0.32 on polar_express/5 (standard: 0.43, but 0.046
  further on one input) and blows up on polar_express/8 (excess 7).
  """
  table = restart_table()
  print()
  for (name, steps, dtype, restarts), (excess, over) in table.items():
    label = 'standard' if restarts is None else f'gram, restarts {restarts}'
    print(f'{name}/{steps} {dtype} {label}: band excess {excess:.3g},'
          f' over standard {over:.3g}')
  for dtype in ('float32', 'bfloat16'):
    tolerance = BAND_TOLERANCE[dtype]
    for name, steps in RESTART_SCHEDULES:
      default = _newton_schulz.default_gram_restarts(steps)
      assert table[name, steps, dtype, default][1] <= tolerance
    for name, steps in [('polar_express', 5), ('polar_express', 8)]:
      assert table[name, steps, dtype, ()][1] > tolerance
  assert table['polar_express', 8, 'float32', (2,)][1] > 1e-4
  assert table['polar_express', 8, 'bfloat16', ()][0] > 1.0


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
