"""The MiMuon gate on matrices with known spectra U diag(s) V^T."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mimuon_optax as mo
from conftest import matrix_with_singular_values


def reference_gap(s, rank_tol=mo._gap.RANK_TOL, dup_tol=mo._gap.DUP_TOL):
  """The definition in float64 on the exact singular values."""
  s = np.sort(np.asarray(s, np.float64))
  s_max = s[-1] if s.size else 0.0
  gaps = [hi - lo for lo, hi in zip(s[:-1], s[1:])
          if lo > rank_tol * s_max and hi**2 - lo**2 > dup_tol * s_max**2]
  gap = min(gaps) if gaps else np.inf
  return gap, (gap / s_max if np.isfinite(gap) else np.inf)


# (shape, singular values, expected absolute min gap)
CASES = {
    'separated': ((6, 9), [5.0, 4.0, 2.5, 1.0, 0.5, 0.25], 0.25),
    'close_pair': ((4, 4), [5.0, 3.0, 2.9, 1.0], 0.1),
    'rank_deficient': ((5, 7), [4.0, 2.0, 0.0, 0.0, 0.0], 2.0),
    'repeated': ((4, 6), [3.0, 3.0, 3.0, 1.0], 2.0),
    'repeated_and_close': ((5, 5), [3.0, 3.0, 2.99, 1.0, 1.0], 0.01),
    'all_equal': ((3, 8), [2.0, 2.0, 2.0], np.inf),
    'rank_one': ((6, 4), [5.0, 0.0, 0.0, 0.0], np.inf),
    'below_rank_tol': ((3, 3), [1.0, 0.5, 1e-5], 0.5),
    'row_1xN': ((1, 7), [2.0], np.inf),
    'col_Nx1': ((7, 1), [2.0], np.inf),
    'tall': ((12, 4), [1.0, 0.9, 0.5, 0.1], 0.1),
}


@pytest.mark.parametrize('name', sorted(CASES))
@pytest.mark.parametrize('scale', [1e-3, 1.0, 1e3])
def test_spectral_gap_matches_definition(rng, name, scale):
  shape, s, expected = CASES[name]
  assert reference_gap(s)[0] == pytest.approx(expected)
  x = matrix_with_singular_values(rng, *shape, np.asarray(s) * scale)
  stats = mo.spectral_gap(jnp.asarray(x, jnp.float32)[None])
  if np.isinf(expected):
    assert np.isinf(stats.min_gap[0]) and np.isinf(stats.rel_gap[0])
  else:
    np.testing.assert_allclose(stats.min_gap[0], expected * scale, rtol=2e-3)
    np.testing.assert_allclose(stats.rel_gap[0], expected / max(s), rtol=2e-3)


@pytest.mark.parametrize('name', sorted(CASES))
@pytest.mark.parametrize('tau_mode', ['absolute', 'relative'])
@pytest.mark.parametrize('tau_factor', [0.5, 2.0])
def test_decision_matches_definition(rng, name, tau_mode, tau_factor):
  shape, s, _ = CASES[name]
  x = 10.0 * matrix_with_singular_values(rng, *shape, s)  # abs != rel
  gap, rel = reference_gap(10.0 * np.asarray(s))
  metric = rel if tau_mode == 'relative' else gap
  # tau sits a factor 2 away from the gap, on either side.
  tau = 0.3 if np.isinf(metric) else metric * tau_factor
  want = metric >= tau
  tx = mo.mimuon_mix(mo.scale_by_newton_schulz(ns_dtype='float32'), tau,
                     tau_mode=tau_mode)
  m = jnp.asarray(x, jnp.float32)
  out, state = tx.update(m, tx.init(m))
  assert bool(state.orthogonalized) == want
  assert int(state.orth_count) == int(want)
  ortho, _ = mo.scale_by_newton_schulz(ns_dtype='float32').update(m, None)
  np.testing.assert_array_equal(out, ortho if want else m)


def test_rms_match_sgd_branch_has_orthogonal_norm(rng):
  m = jnp.asarray(matrix_with_singular_values(rng, 6, 10, np.arange(6.0) + 1),
                  jnp.float32)
  tx = mo.mimuon_mix(mo.scale_by_newton_schulz(), jnp.inf,
                     sgd_scale='rms_match')
  out, state = tx.update(m, tx.init(m))
  assert not bool(state.orthogonalized)
  np.testing.assert_allclose(jnp.linalg.norm(out), np.sqrt(6), rtol=1e-6)
  np.testing.assert_allclose(out / jnp.linalg.norm(out), m / jnp.linalg.norm(m),
                             atol=1e-6)
  zero = jnp.zeros((4, 3))
  out, _ = tx.update(zero, tx.init(zero))
  assert np.all(np.asarray(out) == 0)


def test_stacked_slices_decide_independently(rng):
  """A (L, M, N) layer stack: slice l decides exactly as it would alone."""
  spectra = [CASES['close_pair'][1], CASES['separated'][1][:4],
             CASES['repeated'][1], CASES['rank_one'][1]]
  stack = np.stack([matrix_with_singular_values(rng, 4, 6, s)
                    for s in spectra])
  dn = mo.MuonDimensionNumbers(reduction_axis=1, output_axis=2)
  ns = lambda: mo.scale_by_newton_schulz(ns_dtype='float32',
                                         weight_dimension_numbers=dn)
  tx = mo.mimuon_mix(ns(), 0.05, weight_dimension_numbers=dn)
  params = {'stack': jnp.asarray(stack, jnp.float32)}
  out, state = tx.update(params, tx.init(params))
  want = [reference_gap(s)[1] >= 0.05 for s in spectra]
  assert state.orthogonalized['stack'].shape == (4,)
  assert state.orthogonalized['stack'].tolist() == want == [
      False, True, True, True]
  single = mo.mimuon_mix(mo.scale_by_newton_schulz(ns_dtype='float32'), 0.05)
  for layer in range(4):
    m = params['stack'][layer]
    want_out, _ = single.update(m, single.init(m))
    np.testing.assert_allclose(out['stack'][layer], want_out, atol=1e-6)


def test_tolerances_hold_at_256(rng):
  """Repeated values and exact zeros in a 256 x 512 matrix are not gaps."""
  s = np.concatenate([np.full(100, 2.0), np.linspace(3.0, 8.0, 100),
                      np.zeros(56)])
  for scale in (1e-4, 1.0, 1e4):
    x = matrix_with_singular_values(rng, 256, 512, s * scale)
    stats = mo.spectral_gap(jnp.asarray(x, jnp.float32)[None])
    want = reference_gap(s)[0]  # spacing of the linspace, 5/99
    np.testing.assert_allclose(stats.min_gap[0] / scale, want, rtol=5e-3)


def test_gap_every_reuses_the_last_measurement(rng):
  tx = mo.mimuon_mix(mo.scale_by_newton_schulz(), 0.05, gap_every=3)
  spectra = [[1.0, 0.5], [1.0, 0.99], [1.0, 0.98], [1.0, 0.2], [1.0, 0.99]]
  state = tx.init(jnp.zeros((2, 2)))
  decisions, measured = [], []
  step = jax.jit(tx.update)
  for s in spectra:
    m = jnp.asarray(matrix_with_singular_values(rng, 2, 2, s), jnp.float32)
    _, state = step(m, state)
    decisions.append(bool(state.orthogonalized))
    measured.append(float(state.rel_gap))
  # Measured on steps 0 and 3; steps 1, 2 reuse step 0's gap, 4 reuses 3's.
  np.testing.assert_allclose(measured, [0.5, 0.5, 0.5, 0.8, 0.8], rtol=1e-4)
  assert decisions == [True] * 5
  assert int(state.orth_count) == 5 and int(state.count) == 5


def test_nan_input_gives_nan_gap_and_does_not_crash():
  m = jnp.full((3, 4), jnp.nan)
  stats = mo.spectral_gap(m[None])
  assert np.isnan(stats.min_gap[0])
