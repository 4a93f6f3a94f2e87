"""optax.contrib.muon's options (issue 24) against float64 numpy references.

preconditioning ("frobenius", "spectral", "schatten", "aol"), adaptive=True
and complex matrices, each checked against its definition computed in
float64 / complex128 numpy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mimuon_optax as mo
from conftest import matrix_with_singular_values
from test_newton_schulz import composed_polynomial

PRECONDITIONINGS = ('frobenius', 'spectral', 'schatten', 'aol')
SHAPES = [(24, 24), (16, 40), (40, 16)]
IDENTITY = mo.ns_schedule(np.array([[1.0, 0.0, 0.0]]))  # X -> X: the scaling


def precondition_reference(x, preconditioning, scale=1.0):
  """The definition in float64 (complex128): the matrix NS starts from."""
  x = np.asarray(x, np.complex128 if np.iscomplexobj(x) else np.float64)
  tall = x.shape[0] > x.shape[1]
  w = x.T if tall else x  # the short side is the Gram's
  s = np.linalg.svd(w, compute_uv=False)
  if preconditioning == 'frobenius':
    w = w / (scale * np.sqrt(np.sum(s**2)))
  elif preconditioning == 'spectral':
    w = w / (scale * s.max())
  elif preconditioning == 'schatten':
    w = w / (scale * np.sum(s**4) ** 0.25)
  else:  # aol: D^{-1/2} W, D_ii = sum_j |(W W^H)_ij|
    d = np.abs(w @ w.conj().T).sum(axis=1)
    w = w / (scale * np.sqrt(d))[:, None]
  return w.T if tall else w


def ns_reference(x, schedule, preconditioning):
  """Newton-Schulz in float64 / complex128 from the reference scaling."""
  x = precondition_reference(x, preconditioning, schedule.frobenius_scale)
  tall = x.shape[0] > x.shape[1]
  w = x.T if tall else x
  for a, b, c in np.asarray(schedule.coeffs, np.float64):
    g = w @ w.conj().T
    w = a * w + (b * g + c * g @ g) @ w
  return w.T if tall else w


def _random(rng, shape, complex_=False):
  x = rng.standard_normal(shape)
  if complex_:
    x = x + 1j * rng.standard_normal(shape)
  return x


@pytest.mark.parametrize('preconditioning', PRECONDITIONINGS)
@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('complex_', [False, True])
def test_scaling_is_the_definition(rng, preconditioning, shape, complex_):
  """The one-step identity schedule returns the scaled input (2e-6 rel.)."""
  x = _random(rng, shape, complex_)
  x = x * np.geomspace(1, 1e-2, shape[1])  # unequal columns: AOL matters
  dtype = jnp.complex64 if complex_ else jnp.float32
  got = mo.newton_schulz(jnp.asarray(x, dtype)[None], IDENTITY,
                         ns_dtype=jnp.float32, eps=0.0,
                         preconditioning=preconditioning)[0]
  want = precondition_reference(x, preconditioning)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6,
                             atol=2e-6 * np.abs(want).max())


@pytest.mark.parametrize('preconditioning', PRECONDITIONINGS)
def test_every_scaling_bounds_the_singular_values_by_one(rng, preconditioning):
  """s_max <= 1 after each scaling (AOL: by the Schur test), float64."""
  for cond in (1.0, 1e3):
    s = np.geomspace(1.0, 1.0 / cond, 32)
    x = matrix_with_singular_values(rng, 32, 96, s)
    w = precondition_reference(x, preconditioning)
    assert np.linalg.svd(w, compute_uv=False).max() <= 1 + 1e-12


@pytest.mark.parametrize('preconditioning', PRECONDITIONINGS)
@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('schedule', [('jordan', 5), ('polar_express', 5),
                                      ('you', 5)])
def test_newton_schulz_matches_the_float64_iteration(
    rng, preconditioning, shape, schedule):
  """float32 NS == the float64 iteration from the same scaling (3e-3 abs).

  3e-3: float32 rounding amplified by the schedule's slope, as in
  tests/test_newton_schulz.py.
  """
  schedule = mo.ns_schedule(*schedule)
  x = _random(rng, shape) * np.geomspace(1, 1e-2, shape[1])
  got = mo.newton_schulz(jnp.asarray(x, jnp.float32)[None], schedule,
                         ns_dtype=jnp.float32,
                         preconditioning=preconditioning)[0]
  np.testing.assert_allclose(np.asarray(got, np.float64),
                             ns_reference(x, schedule, preconditioning),
                             atol=3e-3)


@pytest.mark.parametrize('preconditioning', PRECONDITIONINGS)
def test_zero_and_scale_free(rng, preconditioning):
  """A zero matrix maps to 0; 1e-30 and 1e30 times x give x's output."""
  tx = mo.scale_by_newton_schulz(ns_dtype='float32',
                                 preconditioning=preconditioning)
  zero, _ = tx.update(jnp.zeros((6, 9)), None)
  assert not np.any(np.asarray(zero))
  x = jnp.asarray(_random(rng, (12, 20)), jnp.float32)
  want, _ = tx.update(x, None)
  for scale in (1e-30, 1e30):
    got, _ = tx.update(x * scale, None)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize('factory', ['muon', 'mimuon'])
@pytest.mark.parametrize('ns_method', ['standard', 'gram'])
def test_complex_step_is_the_complex128_polar_factor(rng, factory, ns_method):
  """A complex muon()/mimuon(tau=0) step == U p(S) V^H (complex128).

  p is the composed polynomial of polar_express (8 steps): the update,
  divided by -lr * shape scale, has the singular vectors of the complex128
  SVD and singular values p(s) within 3e-3, hence lies in the schedule's
  band around the polar factor U V^H.
  """
  s = np.geomspace(1.0, 0.1, 12)
  x = (matrix_with_singular_values(rng, 12, 20, s)
       + 1j * matrix_with_singular_values(rng, 12, 20, s))
  params = {'w': jnp.zeros((12, 20), jnp.complex64)}
  make = mo.muon if factory == 'muon' else (
      lambda *a, **k: mo.mimuon(*a, tau=0.0, **k))
  tx = make(0.1, ns_steps=8, ns_dtype='float32', ns_method=ns_method,
            nesterov=False, beta=0.5)
  u, _ = tx.update({'w': jnp.asarray(x, jnp.complex64)}, tx.init(params),
                   params)
  out = -np.asarray(u['w'], np.complex128) / (0.1 * (20 / 12) ** 0.5)
  uu, ss, vh = np.linalg.svd(x, full_matrices=False)
  schedule = mo.ns_schedule('polar_express', 8)
  p = composed_polynomial(schedule, ss, np.linalg.norm(ss))
  np.testing.assert_allclose(out, (uu * p) @ vh, atol=3e-3)
  assert np.linalg.norm(out - uu @ vh, 2) < 0.05  # 8-step band


def test_adaptive_is_the_dual_norm_per_matrix(rng):
  """adaptive: O * Re tr(M^H O) for each matrix of a layer stack (1e-5)."""
  stack = jnp.asarray(_random(rng, (3, 10, 14)) * np.array(
      [1e-2, 1.0, 1e2])[:, None, None], jnp.float32)
  dims = mo.MuonDimensionNumbers(1, 2)
  plain, adaptive = (mo.scale_by_newton_schulz(
      ns_dtype='float32', weight_dimension_numbers=dims, adaptive=flag)
                     for flag in (False, True))
  o, _ = plain.update(stack, None)
  got, _ = adaptive.update(stack, None)
  m, o = np.asarray(stack, np.float64), np.asarray(o, np.float64)
  factor = np.einsum('bij,bij->b', m, o)
  np.testing.assert_allclose(got, o * factor[:, None, None], rtol=1e-5)
  # Re tr(M^T O) is M's nuclear norm within the polynomial's band.
  nuclear = np.linalg.svd(m, compute_uv=False).sum(-1)
  assert np.all(np.abs(factor / nuclear - 1) < 0.25), factor / nuclear


def test_adaptive_complex_takes_the_real_part(rng):
  x = jnp.asarray(_random(rng, (6, 9), complex_=True), jnp.complex64)
  plain = mo.scale_by_newton_schulz(ns_dtype='float32')
  adaptive = mo.scale_by_newton_schulz(ns_dtype='float32', adaptive=True)
  o, _ = plain.update(x, None)
  got, _ = adaptive.update(x, None)
  factor = np.real(np.vdot(np.asarray(x, np.complex128),
                           np.asarray(o, np.complex128)))
  assert got.dtype == jnp.complex64
  np.testing.assert_allclose(got, np.asarray(o) * factor, rtol=1e-5)


def test_bad_options_name_the_argument():
  with pytest.raises(ValueError, match='preconditioning'):
    mo.scale_by_newton_schulz(preconditioning='aol2')
  with pytest.raises(ValueError, match='ns_method'):
    mo.newton_schulz(jnp.ones((1, 2, 2)), mo.ns_schedule(), ns_method='x')
  with pytest.raises(ValueError, match='gram_restarts'):
    mo.scale_by_newton_schulz(gram_restarts=(0,))


def test_spectral_under_jit_with_cpu_devices(rng):
  """The spectral norm's eigensolve runs under jit (one call per matrix
  when several CPU devices share the process, _platform.serial_lapack)."""
  x = jnp.asarray(_random(rng, (4, 8, 12)), jnp.float32)
  tx = mo.scale_by_newton_schulz(
      ns_dtype='float32', preconditioning='spectral',
      weight_dimension_numbers=mo.MuonDimensionNumbers(1, 2))
  got, _ = jax.jit(tx.update)(x, None)
  for i in range(4):
    np.testing.assert_allclose(
        got[i], ns_reference(np.asarray(x[i]), mo.ns_schedule(), 'spectral'),
        atol=3e-3)


def _complex_with_singular_values(rng, m, n, s):
  """U diag(s) V^H with Haar-like complex U, V (QR of complex Gaussians)."""
  q = lambda k: np.linalg.qr(rng.standard_normal((k, k))
                             + 1j * rng.standard_normal((k, k)))[0]
  sigma = np.zeros((m, n))
  sigma[:len(s), :len(s)] = np.diag(s)
  return q(m) @ sigma @ q(n).conj().T


@pytest.mark.parametrize('s,orthogonalized', [
    ([3.0, 2.0, 2.0, 1.0], False),  # repeated: kappa = 0 -> SGD step
    ([3.0, 2.0, 1.0, 0.5], True),   # kappa = 0.5 >= tau -> U V^H
])
def test_mimuon_gate_on_a_complex_matrix(rng, s, orthogonalized):
  """mimuon's gate reads the complex singular values (not the real part's).

  The real part of U diag(s) V^H has other, distinct singular values, so a
  gate that dropped the imaginary part would orthogonalize both.
  """
  x = _complex_with_singular_values(rng, 4, 6, s)
  params = {'w': jnp.zeros((4, 6), jnp.complex64)}
  tx = mo.mimuon(0.1, tau=0.1, tau_mode='absolute', nesterov=False,
                 beta=0.0, ns_dtype='float32', ns_steps=8)
  u, state = tx.update({'w': jnp.asarray(x, jnp.complex64)},
                       tx.init(params), params)
  assert bool(mo.mix_diagnostics(state).orthogonalized['w']) == orthogonalized
  out = -np.asarray(u['w'], np.complex128) / (0.1 * 1.5**0.5)
  uu, _, vh = np.linalg.svd(x, full_matrices=False)
  want = uu @ vh if orthogonalized else x
  np.testing.assert_allclose(out, want, atol=0.05 if orthogonalized else 1e-5)
