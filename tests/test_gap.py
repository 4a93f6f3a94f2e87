"""The MiMuon gate against float64 numpy SVD on planted spectra.

Every reference below is computed in float64 by numpy on the *same float32
matrix* the library sees (so float32 rounding of the entries is part of the
truth), with the paper's definition written out independently of _gap.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mimuon_optax as mo
from conftest import matrix_with_singular_values

EPS32 = np.finfo(np.float32).eps
PRECISIONS = ['float64', 'host', 'float32']


def reference_stats(x32):
  """kappa, kappa / s_max, rho of a float32 matrix, from float64 numpy SVD.

  Returns ``(kappa, rel, rho, s)``. No merging: consecutive nonzero values
  (above numpy matrix_rank's float32 floor) give the gaps; kappa is their
  minimum (+inf below two values); rho = kappa sqrt(r) / median gap.
  """
  x = np.asarray(x32, np.float32).astype(np.float64)
  s = np.sort(np.linalg.svd(x, compute_uv=False))
  s_max = s[-1]
  nonzero = s[s > max(x.shape) * EPS32 * s_max]
  if nonzero.size < 2:
    return np.inf, np.inf, np.inf, s
  gaps = np.diff(nonzero)
  kappa = gaps.min()
  rho = kappa * np.sqrt(nonzero.size) / np.median(gaps) if kappa > 0 else 0.0
  return kappa, kappa / s_max, rho, s


def planted_spectrum(k, level, gap):
  """s_max = 1, k - 1 values evenly spaced on [0.02, 1], one more value
  ``gap`` above the grid value nearest to ``level``, ``gap`` <= spacing / 2.

  Returns ``(s, spacing)``: the min gap is exactly ``gap``, every other gap
  is at least ``spacing / 2``, and the median gap is ``spacing``.
  """
  grid = np.linspace(0.02, 1.0, k - 1)
  spacing = grid[1] - grid[0]
  at = int(np.argmin(np.abs(grid - level)))
  at = min(at, k - 3)  # keep s_max = 1 the unique top value
  assert gap <= spacing / 2 * (1 + 1e-9)
  return np.sort(np.append(grid, grid[at] + gap))[::-1], spacing


def planted(rng, m, n, s, scale=1.0):
  return np.asarray(matrix_with_singular_values(rng, m, n, s) * scale,
                    np.float32)


def gate(tau, tau_mode, precision, stack):
  """The decisions of mimuon_mix on a (B, M, N) stack, one per matrix."""
  dn = mo.MuonDimensionNumbers(reduction_axis=1, output_axis=2)
  tx = mo.mimuon_mix(optax.scale(-1.0), tau, tau_mode=tau_mode,
                     precision=precision, weight_dimension_numbers=dn)
  x = jnp.asarray(stack)
  out, state = jax.jit(tx.update)(x, tx.init(x))
  ortho = np.asarray(state.orthogonalized)
  # The output is the orthogonalizer's (here -M) iff orthogonalized, else M.
  np.testing.assert_array_equal(
      np.asarray(out), np.where(ortho[:, None, None], -stack, stack))
  return ortho, state


@pytest.mark.parametrize('precision', PRECISIONS)
@pytest.mark.parametrize('shape', [
    (64, 192), (256, 768), pytest.param((1024, 1024), marks=pytest.mark.slow)])
def test_planted_gaps_decide_like_float64_svd(rng, shape, precision):
  """Repeats and 0.4 tau -> SGD, 2.5 tau -> orthogonalized, at every level."""
  m, n = shape
  k = min(m, n)
  levels = [0.03, 0.1, 0.5, 0.95]
  spacing = planted_spectrum(k, 0.5, 0.0)[1]
  tau_abs = 0.2 * spacing  # 2.5 tau = spacing / 2: still the min gap.
  cases = [(level, factor) for level in levels for factor in (0.0, 0.4, 2.5)]
  stack = np.stack([planted(rng, m, n, planted_spectrum(k, level, f * tau_abs)[0])
                    for level, f in cases])
  refs = [reference_stats(x) for x in stack]
  # One tau per mode, each equivalent to kappa = tau_abs on this spectrum
  # (median gap = spacing, r = k, s_max = 1).
  taus = {'absolute': tau_abs, 'relative': tau_abs,
          'spacing': tau_abs * np.sqrt(k) / spacing}
  for tau_mode, tau in taus.items():
    ortho, state = gate(tau, tau_mode, precision, stack)
    for (level, factor), ref, got in zip(cases, refs, ortho):
      kappa, rel, rho, _ = ref
      metric = {'absolute': kappa, 'relative': rel, 'spacing': rho}[tau_mode]
      # The float64 truth is where it was planted (float32 rounding of the
      # entries moves it by < 1e-6 s_max), so outside [tau/1.25, 1.25 tau].
      assert not 1 / 1.25 < metric / tau < 1.25, (level, factor, metric, tau)
      want = metric >= tau
      assert want == (factor == 2.5), (tau_mode, level, factor, metric / tau)
      assert got == want, (tau_mode, level, factor, metric / tau,
                           np.asarray(state.min_gap))


@pytest.mark.parametrize('precision', PRECISIONS)
@pytest.mark.parametrize('tau_mode', ['absolute', 'relative', 'spacing'])
def test_decisions_are_monotone_in_the_gap(rng, tau_mode, precision):
  """Growing one planted gap from 0 to 2 tau: SGD ... SGD, Muon ... Muon,
  switching within [tau / 1.25, 1.25 tau]."""
  m, n = 128, 384
  spacing = planted_spectrum(m, 0.1, 0.0)[1]
  tau_abs = 0.2 * spacing
  factors = np.linspace(0.0, 2.4, 25)  # Steps of 0.1 tau.
  stack = np.stack([planted(rng, m, n, planted_spectrum(m, 0.1, f * tau_abs)[0])
                    for f in factors])
  tau = {'absolute': tau_abs, 'relative': tau_abs,
         'spacing': tau_abs * np.sqrt(m) / spacing}[tau_mode]
  ortho, _ = gate(tau, tau_mode, precision, stack)
  switch = int(np.argmax(ortho))
  assert not ortho[:switch].any() and ortho[switch:].all(), ortho
  assert 1 / 1.25 <= factors[switch] <= 1.25, factors[switch]


@pytest.mark.parametrize('precision', PRECISIONS)
@pytest.mark.parametrize('shape', [
    (64, 192), (256, 768),
    pytest.param((1024, 3072), marks=pytest.mark.slow),
    pytest.param((3072, 1024), marks=pytest.mark.slow)])
def test_statistics_match_float64_svd(rng, shape, precision):
  """Gaussian and low-rank + noise matrices: kappa, rel_gap and rho."""
  m, n = shape
  k = min(m, n)
  q = max(1, k // 8)
  low_rank = rng.standard_normal((m, q)) @ rng.standard_normal((q, n))
  noise = rng.standard_normal((m, n))
  stack = np.stack([
      rng.standard_normal((m, n)),
      low_rank / np.linalg.norm(low_rank) + 0.05 * noise / np.linalg.norm(noise),
  ]).astype(np.float32)
  stats = mo.spectral_gap(jnp.asarray(stack), precision=precision)
  # float32 SVD errs by up to ~3e-6 s_max at k = 1024 (module doc); gaps
  # are >= 1e-5 s_max here, so compare kappa with an error bar of 2x that.
  s_err = {'float64': 1e-6, 'host': 1e-6,
           'float32': 4 * np.sqrt(k) * EPS32}[precision]
  for i, x in enumerate(stack):
    kappa, rel, rho, s = reference_stats(x)
    s_max = s[-1]
    np.testing.assert_allclose(stats.s_max[i], s_max, rtol=1e-5)
    assert int(stats.rank[i]) == k
    np.testing.assert_allclose(stats.min_gap[i], kappa, atol=2 * s_err * s_max)
    np.testing.assert_allclose(stats.rel_gap[i], rel, atol=2 * s_err)
    np.testing.assert_allclose(stats.rho[i], rho,
                               rtol=2 * s_err * s_max / kappa + 1e-3)
  if precision != 'float32':  # float64-grade: the float32 output's rounding.
    s_lib = np.asarray(mo.singular_values(jnp.asarray(stack[:1]),
                                          precision=precision))[0]
    s_ref = reference_stats(stack[0])[3]
    np.testing.assert_allclose(s_lib, s_ref, atol=1e-6 * s_ref[-1])


@pytest.mark.filterwarnings('ignore:mimuon_mix. tau=1e-30')  # on purpose
@pytest.mark.parametrize('precision', PRECISIONS)
def test_rank_deficiency_and_repeats(rng, precision):
  """Zeros are not gaps; a repeat among nonzero values is kappa = 0."""
  m, n = 96, 160
  rank_half = np.concatenate([np.linspace(1.0, 0.3, m // 2), np.zeros(m // 2)])
  repeat = np.linspace(1.0, 0.1, m)
  repeat[40] = repeat[41]
  all_equal = np.full(m, 2.0)
  rank_one = np.concatenate([[3.0], np.zeros(m - 1)])
  stack = np.stack([planted(rng, m, n, s) for s in
                    (rank_half, repeat, all_equal, rank_one)])
  stats = mo.spectral_gap(jnp.asarray(stack), precision=precision)
  assert stats.rank.tolist() == [m // 2, m, m, 1]
  # Half rank: the min gap of the nonzero half, not the gap down to 0.
  kappa_ref = reference_stats(stack[0])[0]
  np.testing.assert_allclose(stats.min_gap[0], kappa_ref, rtol=1e-3)
  np.testing.assert_allclose(kappa_ref, 0.7 / (m // 2 - 1), rtol=1e-3)
  # Repeats: float32 rounding splits them by < resolution, so exactly 0.
  assert reference_stats(stack[1])[1] < 1e-6  # the truth: unresolvable
  assert float(stats.min_gap[1]) == 0.0 and float(stats.rho[1]) == 0.0
  assert float(stats.min_gap[2]) == 0.0 and float(stats.rho[2]) == 0.0
  assert np.isinf(stats.min_gap[3]) and np.isinf(stats.rho[3])  # rank one
  # So every tau > 0 takes the SGD step on the repeats, and rank one (a
  # single nonzero value has no gap) is orthogonalized.
  for tau_mode in ('absolute', 'relative', 'spacing'):
    ortho, _ = gate(1e-30, tau_mode, precision, stack[1:])
    assert ortho.tolist() == [False, False, True]


@pytest.mark.parametrize('precision', PRECISIONS)
def test_independent_of_scale(rng, precision):
  """Entries from 1e-30 to 2^126 (float32): same rho and rel_gap."""
  x = planted(rng, 48, 80, np.linspace(1.0, 0.05, 48))
  ref = mo.spectral_gap(jnp.asarray(x)[None], precision=precision)
  for scale in (1e-30, 1e-10, 1e10, 1e30, 2.0**126):
    got = mo.spectral_gap(jnp.asarray(x * np.float32(scale))[None],
                          precision=precision)
    np.testing.assert_allclose(got.rho, ref.rho, rtol=1e-5)
    np.testing.assert_allclose(got.rel_gap, ref.rel_gap, rtol=1e-5)
    np.testing.assert_allclose(got.min_gap, ref.min_gap * np.float32(scale),
                               rtol=1e-5)


def test_zero_nan_inf_and_vectors():
  zero = mo.spectral_gap(jnp.zeros((2, 3, 4)))
  assert np.isinf(zero.min_gap).all() and np.isinf(zero.rho).all()
  assert zero.rank.tolist() == [0, 0]
  for bad in (jnp.nan, jnp.inf):
    st = mo.spectral_gap(jnp.full((1, 3, 4), 1.0).at[0, 1, 2].set(bad))
    assert np.isnan(st.min_gap[0]) and np.isnan(st.rho[0])
  for shape in ((1, 7), (7, 1)):
    st = mo.spectral_gap(jnp.ones((1, *shape)))
    assert np.isinf(st.min_gap[0]) and int(st.rank[0]) == 1


def test_default_fraction_is_the_same_at_every_width():
  """Defaults on Gaussian k x 3k: orthogonalized fraction within 0.3."""
  fractions = {}
  for k, samples in ((64, 32), (256, 24), (1024, 12)):
    x = jax.random.normal(jax.random.key(k), (samples, k, 3 * k))
    dn = mo.MuonDimensionNumbers(reduction_axis=1, output_axis=2)
    tx = mo.mimuon_mix(optax.identity(), weight_dimension_numbers=dn)
    _, state = jax.jit(tx.update)(x, tx.init(x))
    fractions[k] = float(np.mean(state.orthogonalized))
  assert max(fractions.values()) - min(fractions.values()) <= 0.3, fractions
  # At the default, unstructured (Gaussian) matrices mostly take Muon steps.
  assert all(f >= 0.7 for f in fractions.values()), fractions


def test_relative_tau_below_resolution_warns():
  tx = mo.mimuon_mix(optax.identity(), 1e-9, tau_mode='relative')
  m = jnp.eye(4, 6)
  with pytest.warns(UserWarning, match='resolution'):
    tx.update(m, tx.init(m))


def test_tau_floor_is_the_resolution_in_tau_units(rng):
  x = jnp.asarray(planted(rng, 32, 64, np.linspace(2.0, 0.5, 32)))
  st = mo.spectral_gap(x[None])
  for tau_mode, want in (
      ('absolute', st.resolution[0]),
      ('relative', st.resolution[0] / st.s_max[0]),
      ('spacing', st.resolution[0] * np.sqrt(32) / st.median_gap[0])):
    tx = mo.mimuon_mix(optax.identity(), 0.0, tau_mode=tau_mode)
    _, state = tx.update(x, tx.init(x))
    np.testing.assert_allclose(state.tau_floor, want, rtol=1e-6)
  # float64 Gram: here float32 rounding of the entries sets the floor.
  fro = np.linalg.norm(np.asarray(x, np.float64))
  want = max(4 * np.finfo(np.float64).eps / EPS32 * float(st.s_max[0]),
             0.5 * EPS32 * (np.sqrt(32) + np.sqrt(64)) / np.sqrt(32 * 64) * fro)
  np.testing.assert_allclose(st.resolution[0], want, rtol=1e-5)


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
  spectra = [[5.0, 3.0, 2.9, 1.0], [5.0, 4.0, 2.5, 1.0], [3.0, 3.0, 3.0, 1.0],
             [5.0, 0.0, 0.0, 0.0]]
  stack = np.stack([planted(rng, 4, 6, s) for s in spectra])
  dn = mo.MuonDimensionNumbers(reduction_axis=1, output_axis=2)
  ns = lambda: mo.scale_by_newton_schulz(ns_dtype='float32',
                                         weight_dimension_numbers=dn)
  tx = mo.mimuon_mix(ns(), 0.05, tau_mode='relative',
                     weight_dimension_numbers=dn)
  params = {'stack': jnp.asarray(stack)}
  out, state = tx.update(params, tx.init(params))
  want = [reference_stats(x)[1] >= 0.05 for x in stack]
  assert state.orthogonalized['stack'].shape == (4,)
  assert state.orthogonalized['stack'].tolist() == want == [
      False, True, False, True]
  single = mo.mimuon_mix(mo.scale_by_newton_schulz(ns_dtype='float32'), 0.05,
                         tau_mode='relative')
  for layer in range(4):
    m = params['stack'][layer]
    want_out, _ = single.update(m, single.init(m))
    np.testing.assert_allclose(out['stack'][layer], want_out, atol=1e-6)


def test_gap_every_reuses_the_last_measurement(rng):
  tx = mo.mimuon_mix(mo.scale_by_newton_schulz(), 0.05, tau_mode='relative',
                     gap_every=3)
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


def test_bad_precision_is_rejected():
  with pytest.raises(ValueError, match='precision'):
    mo.mimuon_mix(optax.identity(), precision='float16')


def test_staggered_gap_every_measures_each_matrix_every_k_steps(rng):
  """gap_every=k (int): matrix j of a same-shape group is re-measured on the
  steps t with t % k == j % k, and matches an every-step gate there."""
  k, steps = 3, 7
  dn = mo.MuonDimensionNumbers(reduction_axis=1, output_axis=2)
  shapes = {'a': (5, 6, 8), 'b': (2, 6, 8), 'c': (1, 4, 4)}  # a, b: 1 group
  staggered = mo.mimuon_mix(optax.identity(), 0.3, gap_every=k,
                            weight_dimension_numbers=dn)
  every = mo.mimuon_mix(optax.identity(), 0.3, weight_dimension_numbers=dn)
  grads = [{n: jnp.asarray(rng.standard_normal(s), jnp.float32)
            for n, s in shapes.items()} for _ in range(steps)]
  s_st, s_ev = staggered.init(grads[0]), every.init(grads[0])
  last = {n: np.full(s[0], np.inf) for n, s in shapes.items()}  # init
  for t, g in enumerate(grads):
    _, s_st = jax.jit(staggered.update)(g, s_st)
    _, s_ev = jax.jit(every.update)(g, s_ev)
    for name, offset in (('a', 0), ('b', 5), ('c', 0)):
      for j in range(shapes[name][0]):
        if (offset + j) % k == t % k:
          last[name][j] = float(s_ev.rho[name][j])
      np.testing.assert_allclose(s_st.rho[name], last[name], rtol=1e-6)


def test_bad_gap_every_is_rejected():
  with pytest.raises(ValueError, match='gap_every'):
    mo.mimuon_mix(optax.identity(), gap_every=0)


def test_stagger_phases_match_the_staggered_gate(rng):
  from mimuon_optax import _matrix
  dn = mo.MuonDimensionNumbers(reduction_axis=1, output_axis=2)
  params = {'a': jnp.zeros((5, 6, 8)), 'b': jnp.zeros((2, 6, 8)),
            'c': jnp.zeros((1, 4, 4))}
  phases = _matrix.stagger_phases(params, dn, 3)
  assert [phases[n].tolist() for n in 'abc'] == [[0, 1, 2, 0, 1], [2, 0], [0]]


@pytest.mark.parametrize('tau', [float('nan'), -1.0, 'abc', None,
                                 np.zeros(2), 1j])
def test_bad_tau_is_rejected_at_construction(tau):
  with pytest.raises(ValueError, match='tau'):
    mo.mimuon_mix(optax.identity(), tau)
  with pytest.raises(ValueError, match='tau'):
    mo.mimuon(0.02, tau=tau)
