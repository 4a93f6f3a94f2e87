"""Faults a training step meets: a non-finite gradient, degenerate matrices.

Each fault sits in one matrix of a tree of normal ones, and the neighbours'
updates, optimizer state and gate decisions must equal, bit for bit, those
of the same step without the fault (docs/reliability.md lists what happens
to the faulty matrix itself). Equal-shape matrices run as one batched
Newton-Schulz call and one padded eigensolve, so the faulty matrix shares
those calls with its neighbours: a fault that leaked through a batch-wide
reduction would show here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mimuon_optax as mo

SHAPE = (16, 24)
STEPS = 5  # > gap_every=4: every matrix has its turn to be measured
_UV = np.random.default_rng(3).standard_normal((SHAPE[0] + SHAPE[1], 1))
RANK1 = jnp.asarray(_UV[:SHAPE[0]] @ _UV[SHAPE[0]:].T, jnp.float32)
OPTIMIZERS = {
    'muon': lambda: mo.muon(0.02),
    'mimuon': lambda: mo.mimuon(0.02),
    'mimuon_gap_every_4': lambda: mo.mimuon(0.02, gap_every=4),
    'mimuon_lagged': lambda: mo.mimuon(0.02, lagged_gate=True),
}


def _normal_tree(rng):
  """Four equal-shape matrices (batched together), one other shape, a bias."""
  tree = {f'w{i}': rng.standard_normal(SHAPE) for i in range(4)}
  tree['v'] = rng.standard_normal((8, 12))
  tree['b'] = rng.standard_normal(SHAPE[1])
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def _leaves(tree, skip=()):
  """{keystr: leaf} of every array leaf whose path names none of `skip`."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in flat
          if not any(f"'{s}'" in jax.tree_util.keystr(p) for s in skip)}


def _assert_bit_equal(a, b, skip=()):
  a, b = _leaves(a, skip), _leaves(b, skip)
  assert a.keys() == b.keys() and a
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key, strict=True)


@pytest.mark.parametrize('bad', [np.nan, np.inf])
@pytest.mark.parametrize('name', list(OPTIMIZERS))
def test_non_finite_gradient_leaves_other_matrices_bit_identical(name, bad):
  tx = OPTIMIZERS[name]()
  rng = np.random.default_rng(0)
  params = _normal_tree(rng)
  update = jax.jit(tx.update)
  state = tx.init(params)
  nan_stats = []
  for _ in range(STEPS):
    grads = _normal_tree(rng)
    faulty = {**grads, 'w1': grads['w1'].at[3, 5].set(bad)}
    clean_updates, clean_state = update(grads, state, params)
    updates, faulty_state = update(faulty, state, params)
    # Every other leaf: update, momentum, Adam moments, gap statistics and
    # gate decisions, bit for bit.
    _assert_bit_equal(updates, clean_updates, skip=('w1',))
    _assert_bit_equal(faulty_state, clean_state, skip=('w1',))
    # The fault is not hidden: the faulty matrix's update is not finite.
    assert not np.isfinite(np.asarray(updates['w1'])).all()
    if name != 'muon':
      diag = mo.mix_diagnostics(faulty_state)
      measured = bool(np.isnan(diag.min_gap['w1']))
      nan_stats.append(measured)
      if measured:  # NaN statistics: the gate takes the SGD branch
        assert not diag.orthogonalized['w1']
        assert np.isnan(diag.rho['w1'])
    state = clean_state
  if name == 'mimuon':
    assert all(nan_stats)  # measured every step
  elif name == 'mimuon_gap_every_4':
    assert sum(nan_stats[:4]) == 1  # measured on its turn only
  elif name == 'mimuon_lagged':
    assert not any(nan_stats)  # It measures the previous, clean, input.


def test_lagged_gate_sees_the_fault_one_step_later():
  """A NaN in step t's gradient: step t+1 measures NaN statistics for
  that matrix and takes its SGD branch; every other leaf stays bit for bit
  on the clean trajectory."""
  tx = OPTIMIZERS['mimuon_lagged']()
  rng = np.random.default_rng(0)
  params = _normal_tree(rng)
  update = jax.jit(tx.update)
  g1, g2 = _normal_tree(rng), _normal_tree(rng)
  faulty = {**g1, 'w1': g1['w1'].at[3, 5].set(np.nan)}
  _, clean = update(g1, tx.init(params), params)
  _, dirty = update(faulty, tx.init(params), params)
  clean_updates, clean = update(g2, clean, params)
  updates, dirty = update(g2, dirty, params)
  diag = mo.mix_diagnostics(dirty)
  assert np.isnan(diag.rho['w1']) and not diag.orthogonalized['w1']
  assert not np.isfinite(np.asarray(updates['w1'])).all()
  _assert_bit_equal(updates, clean_updates, skip=('w1',))
  _assert_bit_equal(dirty, clean, skip=('w1',))


def test_apply_if_finite_skips_the_step_and_keeps_the_state_usable():
  rng = np.random.default_rng(1)
  params = _normal_tree(rng)
  inner = mo.mimuon(0.02)
  tx = optax.apply_if_finite(inner, max_consecutive_errors=3)
  step = jax.jit(tx.update)
  state = tx.init(params)
  for _ in range(2):  # some history in the momenta and gate counters
    state = step(_normal_tree(rng), state, params)[1]
  grads = _normal_tree(rng)
  bad = {**grads, 'v': grads['v'].at[0, 0].set(np.nan)}
  updates, skipped = step(bad, state, params)
  for leaf in jax.tree.leaves(updates):
    np.testing.assert_array_equal(leaf, np.zeros_like(leaf))
  assert int(skipped.notfinite_count) == 1
  assert not bool(skipped.last_finite)
  _assert_bit_equal(skipped.inner_state, state.inner_state)
  # The next finite step is exactly the step the skipped one would have
  # been, and resets the error count.
  updates, after = step(grads, skipped, params)
  expected, expected_inner = jax.jit(inner.update)(
      grads, state.inner_state, params)
  _assert_bit_equal(updates, expected)
  _assert_bit_equal(after.inner_state, expected_inner)
  assert int(after.notfinite_count) == 0 and bool(after.last_finite)


def _with_degenerate_matrices(tree):
  """`tree` plus a huge (2**100 * w0), a rank-1 and a zero matrix.

  The rank-1 one is a multiple of one fixed u v^T, so that the momentum
  stays rank 1. Their names sort after w0..w3: with gap_every > 1 a
  matrix's turn is its position among equal-shape matrices, which the new
  ones leave unchanged (and x_huge's turn is w0's).
  """
  return {**tree,
          # 2**100 ~ 1.27e30, a power of two: exactly w0 scaled.
          'x_huge': tree['w0'] * 2.0**100,
          'y_rank1': (1 + jnp.abs(tree['w0'][0, 0])) * RANK1,
          'z_zero': jnp.zeros(SHAPE, jnp.float32)}


@pytest.mark.parametrize('name', list(OPTIMIZERS))
def test_zero_rank1_and_huge_matrices_are_defined_and_leave_neighbours(name):
  tx = OPTIMIZERS[name]()
  rng = np.random.default_rng(2)
  params = _normal_tree(rng)
  params_odd = _with_degenerate_matrices(params)
  update = jax.jit(tx.update)
  state, state_odd = tx.init(params), tx.init(params_odd)
  for _ in range(STEPS):
    grads = _normal_tree(rng)
    grads_odd = _with_degenerate_matrices(grads)
    updates, state = update(grads, state, params)
    updates_odd, state_odd = update(grads_odd, state_odd, params_odd)
    odd = ('x_huge', 'y_rank1', 'z_zero')
    _assert_bit_equal(updates_odd, updates, skip=odd)
    _assert_bit_equal(_leaves(state_odd, skip=odd), _leaves(state))
    for key in odd:
      assert np.isfinite(np.asarray(updates_odd[key])).all(), key
    # Zero in, zero out.
    np.testing.assert_array_equal(updates_odd['z_zero'], np.zeros(SHAPE))
    # Scale-free: 2**100 * w0 gets exactly w0's update.
    np.testing.assert_array_equal(updates_odd['x_huge'], updates['w0'])
    if name != 'muon':
      d, d_odd = mo.mix_diagnostics(state), mo.mix_diagnostics(state_odd)
      assert d_odd.rho['x_huge'] == d.rho['w0']
      assert d_odd.orthogonalized['x_huge'] == d.orthogonalized['w0']
      assert d_odd.min_gap['x_huge'] == d.min_gap['w0'] * 2.0**100
      # Fewer than two nonzero singular values: no gap, kappa = +inf.
      assert d_odd.min_gap['z_zero'] == np.inf == d_odd.min_gap['y_rank1']
      assert d_odd.orthogonalized['y_rank1']  # +inf >= tau: Muon's step
  # A rank-1 momentum u v^T orthogonalizes to (about) u v^T: checked in
  # float32 Newton-Schulz, where rounding stays below Polar Express's floor.
  tx32 = mo.scale_by_newton_schulz(ns_dtype='float32')
  rank1 = params_odd['y_rank1']
  out = np.asarray(tx32.update(rank1, tx32.init(rank1))[0], np.float64)
  s = np.linalg.svd(out, compute_uv=False)
  uv = np.linalg.svd(np.asarray(rank1, np.float64))
  polar = np.outer(uv[0][:, 0], uv[2][0])
  assert 0.7 < s[0] < 1.2 and s[1] < 1e-3 * s[0], s[:3]
  assert np.sum(out * polar) > (1 - 1e-6) * s[0]


def test_rank1_matrix_takes_sgd_step_at_tau_inf():
  """tau=inf is momentum SGD for every matrix, rank <= 1 included."""
  rng = np.random.default_rng(4)
  params = _with_degenerate_matrices(_normal_tree(rng))
  tx = mo.mimuon(0.02, tau=float('inf'), lr_scaling='none')
  updates, state = tx.update(params, tx.init(params), params)
  diag = mo.mix_diagnostics(state)
  for key in ('w0', 'v', 'x_huge', 'y_rank1', 'z_zero'):
    assert not diag.orthogonalized[key], key
  # First Nesterov EMA step: beta (1 - beta) g + (1 - beta) g; times -lr.
  np.testing.assert_allclose(updates['y_rank1'],
                             -0.02 * 0.0975 * params['y_rank1'], rtol=1e-6)
