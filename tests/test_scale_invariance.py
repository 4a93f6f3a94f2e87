"""The Newton-Schulz step does not depend on the gradient's scale (issue 14)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mimuon_optax as mo


def _grad(shape=(12, 8), seed=0):
  g = jax.random.normal(jax.random.key(seed), shape)
  return g / jnp.max(jnp.abs(g)) * 0.9  # max |entry| < 1


@pytest.mark.parametrize('scale', [1e-30, 1e-20, 1e-5, 1e5, 1e20, 1e30])
def test_newton_schulz_float32_any_scale(scale):
  g = _grad()
  schedule = mo.ns_schedule()
  ref = mo.newton_schulz(g[None], schedule, ns_dtype=jnp.float32)[0]
  out = mo.newton_schulz((g * scale)[None], schedule, ns_dtype=jnp.float32)[0]
  np.testing.assert_allclose(out, ref, atol=2e-5)


@pytest.mark.parametrize('exponent', [-110, -100, -30, 30, 100, 127])
def test_newton_schulz_bfloat16_full_range(exponent):
  """Power-of-two scalings are exact in bf16: the output is the same bits.

  Down to entries ~2^-120 (normal numbers: XLA flushes subnormals to zero).
  """
  g = _grad().astype(jnp.bfloat16)
  schedule = mo.ns_schedule()
  ref = mo.newton_schulz(g[None], schedule)[0]
  scaled = jnp.ldexp(g.astype(jnp.float32), exponent).astype(jnp.bfloat16)
  assert np.all(np.isfinite(np.asarray(scaled, np.float32)))
  out = mo.newton_schulz(scaled[None], schedule)[0]
  np.testing.assert_array_equal(np.asarray(out, np.float32),
                                np.asarray(ref, np.float32))


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('scale', [1e-30, 1e20, 1e30])
def test_muon_and_mimuon_updates_do_not_depend_on_scale(dtype, scale):
  params = {'w': jnp.zeros((12, 8), dtype), 'v': jnp.zeros((16, 16), dtype)}
  grads = {'w': _grad((12, 8), 0), 'v': _grad((16, 16), 1)}
  big = jax.tree.map(lambda g: (g * scale).astype(dtype), grads)
  grads = jax.tree.map(lambda g: g.astype(dtype), grads)
  for tx in (mo.muon(0.1), mo.mimuon(0.1, tau=0.0), mo.mimuon(0.1)):
    u_ref, s_ref = tx.update(grads, tx.init(params), params)
    u_big, s_big = tx.update(big, tx.init(params), params)
    for name in params:
      assert np.all(np.isfinite(np.asarray(u_big[name], np.float32)))
    if any(isinstance(x, mo.MiMuonMixState) for x in jax.tree.leaves(
        s_ref, is_leaf=lambda x: isinstance(x, mo.MiMuonMixState))):
      d_ref, d_big = mo.mix_diagnostics(s_ref), mo.mix_diagnostics(s_big)
      assert d_ref.orthogonalized == d_big.orthogonalized
      assert all(np.isfinite(d_big.min_gap[k]) for k in params)
      orth = d_ref.orthogonalized
    else:
      orth = {k: True for k in params}
    for name in params:
      if not bool(orth[name]):
        continue  # SGD branch: proportional to the gradient by definition.
      np.testing.assert_allclose(np.asarray(u_big[name], np.float32),
                                 np.asarray(u_ref[name], np.float32),
                                 atol=2e-2 if dtype == jnp.bfloat16 else 2e-5)


def test_non_finite_keeps_documented_behaviour():
  schedule = mo.ns_schedule()
  g = _grad()
  for bad in (jnp.inf, -jnp.inf, jnp.nan):
    out = mo.newton_schulz(g.at[0, 0].set(bad)[None], schedule)[0]
    assert np.isnan(np.asarray(out, np.float32)).any()
  np.testing.assert_array_equal(
      mo.newton_schulz(jnp.zeros((1, 3, 4)), schedule), 0.0)
