"""Newton-Schulz accuracy against float64 SVD references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mimuon_optax as mo
from conftest import matrix_with_singular_values, polar_factor

SHAPES = [(32, 32), (24, 64), (64, 24)]  # square, wide, tall
CONDITIONS = [1.0, 10.0, 1e3]
SCHEDULES = [('jordan', 5), ('you', 5), ('polar_express', 5),
             ('polar_express', 8), ('cans', None)]


def _schedule(name, steps):
  if steps is None:  # the preset's own length
    return next(mo.ns_schedule(name, n) for n in range(1, 20)
                if _has_steps(name, n))
  return mo.ns_schedule(name, steps)


def _has_steps(name, n):
  try:
    mo.ns_schedule(name, n)
    return True
  except ValueError:
    return False


def composed_polynomial(schedule, s, frob):
  """Where exact arithmetic sends singular values s of a matrix with ||.||_F."""
  x = np.asarray(s, np.float64) / (schedule.frobenius_scale * frob)
  for a, b, c in np.asarray(schedule.coeffs, np.float64):
    x = a * x + b * x**3 + c * x**5
  return x


def _input(rng, shape, cond):
  k = min(shape)
  s = np.geomspace(1.0, 1.0 / cond, k) if cond > 1 else np.ones(k)
  return matrix_with_singular_values(rng, *shape, s), s


@pytest.mark.parametrize('name,steps', SCHEDULES)
@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('cond', CONDITIONS)
def test_singular_values_follow_the_schedule_polynomial(
    rng, name, steps, shape, cond):
  """float32 NS == the scalar polynomial on each singular value (3e-3 abs).

  The tolerance covers float32 rounding amplified by the schedule's slope
  (the composed polynomial has slope up to ~1500 near 0 for cans).
  """
  schedule = _schedule(name, steps)
  x, s = _input(rng, shape, cond)
  out = mo.newton_schulz(jnp.asarray(x, jnp.float32)[None], schedule,
                         ns_dtype=jnp.float32)[0]
  got = np.linalg.svd(np.asarray(out, np.float64), compute_uv=False)
  want = np.sort(composed_polynomial(schedule, s, np.linalg.norm(x)))[::-1]
  np.testing.assert_allclose(got, want, atol=3e-3)
  # The band this schedule promises on this input's range of singular values
  # (min/max of the composed polynomial over [x_min, x_max], float64 grid).
  grid = np.geomspace(s.min(), s.max(), 4000) if cond > 1 else s[:1]
  band = composed_polynomial(schedule, grid, np.linalg.norm(x))
  assert band.min() - 3e-3 <= got.min() and got.max() <= band.max() + 3e-3


@pytest.mark.parametrize('shape', SHAPES)
def test_polar_express_is_close_to_the_polar_factor(rng, shape):
  """Well-conditioned inputs (cond <= 10): |NS - UV^T|_2 within the band."""
  x, _ = _input(rng, shape, 10.0)
  want = polar_factor(x)
  for steps, tol in [(5, 0.35), (8, 0.05)]:
    out = mo.newton_schulz(jnp.asarray(x, jnp.float32)[None],
                           mo.ns_schedule('polar_express', steps),
                           ns_dtype=jnp.float32)[0]
    err = np.linalg.norm(np.asarray(out, np.float64) - want, 2)
    assert err < tol, (steps, err)


@pytest.mark.parametrize('name,steps', SCHEDULES)
def test_float32_is_tighter_than_bfloat16(rng, name, steps):
  schedule = _schedule(name, steps)
  x, s = _input(rng, (48, 96), 10.0)
  want = np.sort(composed_polynomial(schedule, s, np.linalg.norm(x)))[::-1]
  errors = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    out = mo.newton_schulz(jnp.asarray(x, jnp.float32)[None], schedule,
                           ns_dtype=dtype)[0]
    assert out.dtype == jnp.float32  # returns the input dtype
    got = np.linalg.svd(np.asarray(out, np.float64), compute_uv=False)
    errors[dtype] = np.abs(got - want).max()
  assert errors[jnp.float32] < 1e-3 < errors[jnp.bfloat16] < 0.15, errors


def test_transposed_input_gives_transposed_output(rng):
  x = jnp.asarray(rng.standard_normal((16, 40)), jnp.float32)
  tx = mo.scale_by_newton_schulz(ns_dtype='float32')
  wide, _ = tx.update(x, tx.init(x))
  tall, _ = tx.update(x.T, tx.init(x.T))
  np.testing.assert_allclose(wide, tall.T, atol=1e-6)


def test_zero_matrix_maps_to_zero():
  tx = mo.scale_by_newton_schulz()
  z = jnp.zeros((8, 5))
  out, _ = tx.update(z, tx.init(z))
  assert out.dtype == z.dtype and not np.any(np.asarray(out))


def test_explicit_coefficients_match_presets(rng):
  x = jnp.asarray(rng.standard_normal((8, 12)), jnp.float32)
  jordan = mo.scale_by_newton_schulz('jordan', 4, 'float32')
  explicit = mo.scale_by_newton_schulz(
      np.array([3.4445, -4.7750, 2.0315]), 4, 'float32')
  table = mo.scale_by_newton_schulz(
      np.array([[3.4445, -4.7750, 2.0315]] * 4), 99, 'float32')
  ref = jordan.update(x, jordan.init(x))[0]
  np.testing.assert_array_equal(explicit.update(x, None)[0], ref)
  np.testing.assert_array_equal(table.update(x, None)[0], ref)


def test_bad_schedules_raise():
  with pytest.raises(ValueError, match='Unknown ns_coeffs'):
    mo.ns_schedule('nope')
  with pytest.raises(ValueError, match='ns_steps'):
    mo.ns_schedule('polar_express', 6)
  with pytest.raises(ValueError, match=r'shape \(3,\) or \(n, 3\)'):
    mo.ns_schedule(np.ones((2, 4)))


def test_conv_kernel_orthogonalizes_the_flattened_matrix(rng):
  """(H, W, Cin, Cout) with reduction (0, 1, 2): one 36 x 8 matrix."""
  k = jnp.asarray(rng.standard_normal((3, 3, 4, 8)), jnp.float32)
  dn = mo.MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)
  tx = mo.scale_by_newton_schulz('polar_express', 8, 'float32',
                                 weight_dimension_numbers=dn)
  out, _ = tx.update(k, tx.init(k))
  assert out.shape == k.shape
  flat = np.asarray(out).reshape(36, 8)
  np.testing.assert_allclose(flat, polar_factor(np.asarray(k).reshape(36, 8)),
                             atol=0.05)


def test_layer_stack_orthogonalizes_each_layer_alone(rng):
  """(L, Din, Dout) with the layer axis as batch == per-layer NS."""
  stack = jnp.asarray(rng.standard_normal((3, 16, 8)), jnp.float32)
  stack = stack * jnp.array([1e-3, 1.0, 1e3])[:, None, None]  # scales differ
  dn = {'w': mo.MuonDimensionNumbers(reduction_axis=1, output_axis=2)}
  tx = mo.scale_by_newton_schulz(ns_dtype='float32',
                                 weight_dimension_numbers=dn)
  out, _ = tx.update({'w': stack}, tx.init({'w': stack}))
  single = mo.scale_by_newton_schulz(ns_dtype='float32')
  for layer in range(3):
    want, _ = single.update(stack[layer], None)
    np.testing.assert_allclose(out['w'][layer], want, atol=1e-5)


def test_nd_leaf_without_dimension_numbers_names_its_path():
  params = {'block': {'conv': jnp.ones((3, 3, 2, 4))}}
  tx = mo.scale_by_newton_schulz()
  with pytest.raises(ValueError, match=r"\['block'\]\['conv'\].*\(3, 3, 2, 4\)"):
    tx.init(params)
  with pytest.raises(ValueError, match=r"\['block'\]\['conv'\]"):
    tx.update(params, optax.EmptyState())


def test_overlapping_axes_raise():
  tx = mo.scale_by_newton_schulz(
      weight_dimension_numbers=mo.MuonDimensionNumbers(0, (0, 1)))
  with pytest.raises(ValueError, match='disjoint'):
    tx.init({'w': jnp.ones((2, 3))})


def test_jit_and_bfloat16_params(rng):
  x = jnp.asarray(rng.standard_normal((16, 8)), jnp.bfloat16)
  tx = mo.scale_by_newton_schulz()
  out, _ = jax.jit(tx.update)(x, tx.init(x))
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32),
                             polar_factor(np.asarray(x, np.float32)),
                             atol=0.35)


def test_batched_fast_path_equals_per_leaf_path(rng):
  """Grouping equal shapes into one batched call changes only rounding."""
  shapes = {'q': (32, 64), 'k': (32, 64), 'o': (64, 32), 'up': (32, 96),
            'stack': (3, 32, 64)}
  params = {k: jnp.asarray(rng.standard_normal(s), jnp.float32)
            for k, s in shapes.items()}
  dims = {k: mo.MuonDimensionNumbers(1, 2) if k == 'stack' else None
          for k in shapes}
  for ns_dtype, atol in [('float32', 1e-5), ('bfloat16', 2e-2)]:
    fast, slow = (mo.scale_by_newton_schulz(
        ns_dtype=ns_dtype, weight_dimension_numbers=dims,
        batch_same_shapes=flag) for flag in (True, False))
    out_fast, _ = jax.jit(fast.update)(params, fast.init(params))
    out_slow, _ = jax.jit(slow.update)(params, slow.init(params))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        np.asarray(a, np.float32), np.asarray(b, np.float32), atol=atol),
                 out_fast, out_slow)
  # The gate measures every matrix in one padded spectrum call; per leaf:
  gate = mo.mimuon_mix(
      mo.scale_by_newton_schulz(weight_dimension_numbers=dims), 1e-2,
      weight_dimension_numbers=dims)
  _, state = jax.jit(gate.update)(params, gate.init(params))
  for name, x in params.items():
    alone = mo.spectral_gap(x if x.ndim == 3 else x[None])
    # Gaps relative to s_max agree to float32 rounding of the result.
    np.testing.assert_allclose(np.ravel(state.rel_gap[name]), alone.rel_gap,
                               atol=1e-5)
