"""lagged_gate=True: step t decides on the spectrum of step t-1's input.

The reference is the exact gate (``lagged_gate=False``) fed the same inputs:
the lagged decision at step t must be the exact decision of step t-1 (the
zero matrix, hence a Muon step, at t = 0), and the selected step must still
be built from step t's own input, bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mimuon_optax as mo
from mimuon_optax import checkpoint
from test_host_gate import train_injected


def _inputs(rng, steps=8):
  """Per step, a (24, 40) matrix and a (3, 16, 16) stack.

  Every other step the matrix has a planted near-double singular value
  (rho ~ 0), the other steps a random spectrum (rho ~ 1): the exact gate
  flips every step at tau = 0.3, so a lag of one step shows everywhere.
  """
  out = []
  for t in range(steps):
    u, _ = np.linalg.qr(rng.standard_normal((24, 24)))
    v, _ = np.linalg.qr(rng.standard_normal((40, 24)))
    s = np.linspace(1.0, 0.1, 24)
    if t % 2:
      s[5] = s[4] * (1 - 1e-6)
    w = (u * s) @ v.T
    out.append({'w': jnp.asarray(w, jnp.float32),
                'stack': jnp.asarray(rng.standard_normal((3, 16, 16)),
                                     jnp.float32)})
  return out


DIMS = {'w': None, 'stack': mo.MuonDimensionNumbers(1, 2)}


def _run(tx, inputs):
  state = tx.init(inputs[0])
  update = jax.jit(tx.update)
  outs, states = [], []
  for x in inputs:
    out, state = update(x, state, inputs[0])
    outs.append(out)
    states.append(state)
  return outs, states


@pytest.mark.parametrize('precision', ['float64', 'host'])
def test_lagged_decision_is_the_exact_decision_one_step_late(rng, precision):
  inputs = _inputs(rng)
  ns = mo.scale_by_newton_schulz(weight_dimension_numbers=DIMS)
  mix = lambda tau, **kw: mo.mimuon_mix(
      ns, tau, precision=precision, weight_dimension_numbers=DIMS, **kw)
  _, exact = _run(mix(0.3), inputs)
  lag_out, lagged = _run(mix(0.3, lagged_gate=True), inputs)
  orth_out, _ = _run(mix(0.0), inputs)  # Newton-Schulz of every input.
  for name in ('w', 'stack'):
    d_exact = np.array([s.orthogonalized[name] for s in exact])
    d_lag = np.array([s.orthogonalized[name] for s in lagged])
    assert d_exact.any() and not d_exact.all()  # Both branches.
    np.testing.assert_array_equal(d_lag[0], True)  # Zero matrix: no gap.
    np.testing.assert_array_equal(d_lag[1:], d_exact[:-1])
    np.testing.assert_array_equal(
        np.array([s.rho[name] for s in lagged])[1:],
        np.array([s.rho[name] for s in exact])[:-1])
    for t, x in enumerate(inputs):
      pick = d_lag[t].reshape(d_lag[t].shape + (1, 1))
      np.testing.assert_array_equal(
          lag_out[t][name], np.where(pick, orth_out[t][name], x[name]))
  # The 'w' decision flips every step, so the lag decides differently on
  # every step after the first.
  d_w = [bool(s.orthogonalized['w']) for s in exact]
  assert d_w == [bool(t % 2 == 0) for t in range(len(inputs))]


def test_lagged_measurement_depends_on_the_state_alone(rng):
  """Two different inputs from one state: the same statistics and decision.

  The outputs differ: the step itself is built from the new input.
  """
  a, b = _inputs(rng, 2)
  tx = mo.mimuon_mix(mo.scale_by_newton_schulz(weight_dimension_numbers=DIMS),
                     lagged_gate=True, weight_dimension_numbers=DIMS)
  state = tx.update(a, tx.init(a), a)[1]
  out_a, s_a = tx.update(a, state, a)
  out_b, s_b = tx.update(b, state, a)
  for field in ('orthogonalized', 'rho', 'min_gap', 'tau_floor'):
    for x, y in zip(jax.tree.leaves(getattr(s_a, field)),
                    jax.tree.leaves(getattr(s_b, field))):
      np.testing.assert_array_equal(x, y)
  assert not np.array_equal(out_a['w'], out_b['w'])
  np.testing.assert_array_equal(s_b.previous['w'], b['w'])


def test_previous_holds_matrix_leaves_only_in_float32():
  params = {'w': jnp.ones((8, 4), jnp.bfloat16), 'b': jnp.zeros(4)}
  state = mo.mix_diagnostics(
      mo.mimuon(0.02, lagged_gate=True).init(params))
  # The bias is routed to AdamW: a passthrough leaf, no array kept.
  assert isinstance(state.previous['b'], optax.MaskedNode)
  assert jax.tree.leaves(state.previous['b']) == []
  assert state.previous['w'].dtype == jnp.float32
  assert state.previous['w'].shape == (8, 4)
  # The default (exact) gate keeps no copy.
  assert mo.mix_diagnostics(mo.mimuon(0.02).init(params)).previous is None


def test_lagged_gate_must_be_a_bool():
  with pytest.raises(TypeError, match='lagged_gate'):
    mo.mimuon(0.02, lagged_gate=1)


@pytest.mark.parametrize('gap_every,static', [(1, True), (3, True),
                                              (3, False)])
def test_lagged_host_trains_like_lagged_float64(rng, gap_every, static):
  """The host and float64 paths agree bit for bit, lagged.

  Composes with gap_every (static: staggered; injected: lax.cond) and
  inject_hyperparams.
  """
  params = {f'w{i}': jnp.asarray(rng.standard_normal(s), jnp.float32)
            for i, s in enumerate([(32, 64), (32, 64), (48, 48)])}
  grads = [jax.tree.map(lambda p: jnp.asarray(
      rng.standard_normal(p.shape), jnp.float32), params) for _ in range(8)]

  p_host, d_host = train_injected(params, grads, 'host', gap_every, static,
                                  lagged_gate=True)
  p_f64, d_f64 = train_injected(params, grads, 'float64', gap_every, static,
                                lagged_gate=True)
  np.testing.assert_array_equal(d_host, d_f64)
  assert 0 < d_host.mean() < 1
  for k in params:
    np.testing.assert_array_equal(p_host[k], p_f64[k])


def test_lagged_gate_resumes_bit_for_bit(rng, tmp_path):
  """6 steps straight == 3 steps, an Orbax checkpoint, a restore, 3 more."""
  params = {'w': jnp.asarray(rng.standard_normal((32, 48)), jnp.float32),
            'v': jnp.asarray(rng.standard_normal((48, 32)), jnp.float32),
            'b': jnp.zeros(32)}
  grads = [jax.tree.map(lambda p: jnp.asarray(
      rng.standard_normal(p.shape), jnp.float32), params) for _ in range(6)]
  tx = mo.mimuon(0.02, tau=0.5, precision='host', lagged_gate=True)
  step = jax.jit(tx.update)

  def train(p, state, gs):
    for g in gs:
      u, state = step(g, state, p)
      p = optax.apply_updates(p, u)
    return p, state

  p_all, s_all = train(params, tx.init(params), grads)
  p_half, s_half = train(params, tx.init(params), grads[:3])
  checkpoint.save_state(str(tmp_path), 3, p_half, s_half)
  step_read, p_read, s_read = checkpoint.restore_state(
      str(tmp_path), checkpoint.abstract_like(params, tx.init(params)))
  assert step_read == 3
  p_res, s_res = train(p_read, s_read, grads[3:])
  for x, y in zip(jax.tree.leaves((p_all, s_all)),
                  jax.tree.leaves((p_res, s_res))):
    np.testing.assert_array_equal(x, y)
  assert jax.tree.structure(s_all) == jax.tree.structure(s_res)
