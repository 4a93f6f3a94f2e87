"""muon() and mimuon(): equivalences, references, routing, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mimuon_optax as mo


def make_params(rng, dtype=jnp.float32):
  return {
      'embed': jnp.asarray(rng.standard_normal((11, 6)), dtype),
      'dense': {'kernel': jnp.asarray(rng.standard_normal((6, 10)), dtype),
                'bias': jnp.zeros((10,), dtype)},
      'out': {'kernel': jnp.asarray(rng.standard_normal((10, 4)), dtype)},
      'lm_head': jnp.asarray(rng.standard_normal((4, 11)), dtype),
  }


def grads_like(params, seed):
  keys = jax.random.split(jax.random.key(seed), len(jax.tree.leaves(params)))
  leaves, treedef = jax.tree.flatten(params)
  return treedef.unflatten([jax.random.normal(k, x.shape, x.dtype)
                            for k, x in zip(keys, leaves)])


def run(tx, params, steps, seed0=0):
  state = tx.init(params)
  step = jax.jit(tx.update)
  history = []
  for t in range(steps):
    updates, state = step(grads_like(params, seed0 + t), state, params)
    params = optax.apply_updates(params, updates)
    history.append(updates)
  return params, state, history


def test_mimuon_with_tau_zero_is_muon(rng):
  params = make_params(rng)
  kw = dict(learning_rate=0.03, weight_decay=0.1, ns_dtype='float32')
  p_muon, _, h_muon = run(mo.muon(**kw), params, 6)
  p_mimuon, state, h_mimuon = run(mo.mimuon(tau=0.0, **kw), params, 6)
  jax.tree.map(np.testing.assert_array_equal, h_mimuon, h_muon)
  jax.tree.map(np.testing.assert_array_equal, p_mimuon, p_muon)
  assert int(mo.mix_diagnostics(state).orth_count['dense']['kernel']) == 6


def test_mimuon_with_tau_inf_is_momentum_sgd_with_decoupled_decay(rng):
  params = make_params(rng)
  lr, wd, beta = 0.05, 0.1, 0.9
  tx = mo.mimuon(learning_rate=lr, tau=jnp.inf, beta=beta, weight_decay=wd,
                 sgd_scale='none', nesterov=False, lr_scaling='none')
  final, state, _ = run(tx, params, 10)
  for path in [('dense', 'kernel'), ('out', 'kernel')]:
    theta = np.asarray(params[path[0]][path[1]], np.float64)
    mu = np.zeros_like(theta)
    for t in range(10):
      g = np.asarray(grads_like(params, t)[path[0]][path[1]], np.float64)
      mu = beta * mu + (1 - beta) * g
      theta = (1 - lr * wd) * theta - lr * mu
    np.testing.assert_allclose(final[path[0]][path[1]], theta, rtol=1e-5,
                               atol=1e-6)
  assert int(mo.mix_diagnostics(state).orth_count['dense']['kernel']) == 0


@pytest.mark.parametrize('nesterov,steps', [(True, 1), (False, 5)])
def test_muon_direction_agrees_with_optax_contrib(rng, nesterov, steps):
  """Same gradients -> same direction as optax.contrib.muon (cos > 0.999).

  optax bias-corrects its momentum; without Nesterov that is a scalar, which
  Newton-Schulz's normalization removes, so the steps agree at every step.
  With Nesterov the two terms are corrected differently after step 1.
  """
  params = {'a': jnp.asarray(rng.standard_normal((16, 24)), jnp.float32),
            'b': jnp.asarray(rng.standard_normal((32, 8)), jnp.float32)}
  ours = mo.muon(0.01, ns_coeffs='jordan', ns_dtype='float32',
                 nesterov=nesterov)
  theirs = optax.contrib.muon(0.01, nesterov=nesterov)
  _, _, h_ours = run(ours, params, steps)
  _, _, h_theirs = run(theirs, params, steps)
  for t in range(steps):
    for name in params:
      a, b = np.ravel(h_ours[t][name]), np.ravel(h_theirs[t][name])
      cosine = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
      assert cosine > 0.999, (t, name, cosine)
      assert np.linalg.norm(a) == pytest.approx(np.linalg.norm(b), rel=1e-2)


def test_default_labels():
  params = {'embed_tokens': jnp.ones((5, 4)), 'wte': jnp.ones((5, 4)),
            'lm_head': jnp.ones((4, 5)), 'cls_head': {'kernel': jnp.ones((4, 2))},
            'dense': {'kernel': jnp.ones((4, 4)), 'bias': jnp.ones(4)},
            'conv': jnp.ones((3, 3, 1, 2)), 'scale': jnp.ones(())}
  assert mo.default_param_labels(params) == {
      'embed_tokens': 'adam', 'wte': 'adam', 'lm_head': 'adam',
      'cls_head': {'kernel': 'adam'},
      'dense': {'kernel': 'muon', 'bias': 'adam'},
      'conv': 'adam', 'scale': 'adam'}  # ndim != 2 -> AdamW, as in optax
  dn = jax.tree.map(lambda _: None, params)
  dn['conv'] = mo.MuonDimensionNumbers((0, 1, 2), 3)
  labels = mo.default_param_labels(params, lambda p: dn)
  assert labels['conv'] == 'muon' and labels['dense']['kernel'] == 'adam'


def test_labels_match_path_components_not_substrings():
  params = {'multihead_attn': {'kernel': jnp.ones((4, 4))},
            'heads_proj': jnp.ones((4, 4)), 'overhead': jnp.ones((4, 4)),
            'embedding': jnp.ones((4, 4)), 'decoder': {'head': jnp.ones((4, 4))},
            'cls-head': jnp.ones((4, 4)), 'layers': [jnp.ones((4, 4))]}
  assert mo.default_param_labels(params) == {
      'multihead_attn': {'kernel': 'muon'}, 'heads_proj': 'muon',
      'overhead': 'muon', 'embedding': 'adam', 'decoder': {'head': 'adam'},
      'cls-head': 'adam', 'layers': ['muon']}


def test_prefix_dimension_numbers():
  params = {'w1': {'a': jnp.ones((2, 3)), 'b': jnp.ones((2, 3))},
            'w2': {'a': jnp.ones((2, 3)), 'b': jnp.ones((2, 3))}}
  dn = {'w1': mo.MuonDimensionNumbers(), 'w2': None}
  assert mo.default_param_labels(params, dn) == {
      'w1': {'a': 'muon', 'b': 'muon'}, 'w2': {'a': 'adam', 'b': 'adam'}}
  for factory in (mo.muon, mo.mimuon):
    tx = factory(0.1, weight_dimension_numbers=dn)
    updates, _ = tx.update(params, tx.init(params), params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    with pytest.raises(ValueError, match='prefix'):
      factory(0.1, weight_dimension_numbers={"x": None}).init(params)


def test_nd_leaf_routed_to_matrix_optimizer_without_dims_names_path():
  params = {'block': {'conv': jnp.ones((3, 3, 1, 2))}}
  labels = {'block': {'conv': 'muon'}}
  for factory in (mo.muon, mo.mimuon):
    with pytest.raises(ValueError, match=r"\['block'\]\['conv'\]"):
      factory(0.1, param_labels=labels).init(params)


def test_conv_kernel_with_dimension_numbers_trains(rng):
  params = {'conv': jnp.asarray(rng.standard_normal((3, 3, 2, 4)),
                                jnp.float32), 'bias': jnp.zeros(4)}
  dn = {'conv': mo.MuonDimensionNumbers((0, 1, 2), 3), 'bias': None}
  _, state, hist = run(mo.mimuon(0.1, weight_dimension_numbers=dn), params, 2)
  assert mo.mix_diagnostics(state).orthogonalized['conv'].shape == ()
  assert np.all(np.isfinite(hist[-1]['conv']))


@pytest.mark.parametrize('lr_scaling,factor', [
    ('none', 1.0), ('original', 2.0), ('match_adamw', 0.2 * 8.0)])
def test_lr_scaling(lr_scaling, factor):
  tx = mo.scale_by_lr_scaling(lr_scaling)
  u = {'w': jnp.ones((16, 64)), 'v': jnp.ones((64, 16))}
  out, _ = tx.update(u, tx.init(u))
  np.testing.assert_allclose(out['w'], factor)
  tall = 1.0 if lr_scaling != 'match_adamw' else factor
  np.testing.assert_allclose(out['v'], tall)


def test_inject_hyperparams_equality_and_changing_tau(rng):
  params = make_params(rng)
  grads = grads_like(params, 0)
  for factory, kw in [(mo.muon, {}), (mo.mimuon, {'tau': 0.02})]:
    kw = dict(kw, learning_rate=0.02, weight_decay=0.1)
    plain = factory(**kw)
    injected = optax.inject_hyperparams(factory, static_args=('ns_steps',))(
        **kw)
    u1, s1 = jax.jit(plain.update)(grads, plain.init(params), params)
    u2, s2 = jax.jit(injected.update)(grads, injected.init(params), params)
    # rtol 1e-5 as optax's own inject test: the AdamW leaves are Nesterov
    # AdamW (optax.contrib.muon's default), whose bias corrections round
    # differently with injected float32 b1 than with a Python float.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5),
                 u2, u1)
  # Changing tau on the fly flips the decision without re-jitting.
  tx = optax.inject_hyperparams(mo.mimuon, static_args=('ns_steps',))(
      learning_rate=0.02, tau=0.0)
  step = jax.jit(tx.update)
  state = tx.init(params)
  _, state = step(grads, state, params)
  assert bool(mo.mix_diagnostics(state).orthogonalized['dense']['kernel'])
  state.hyperparams['tau'] = jnp.full_like(state.hyperparams['tau'], jnp.inf)
  _, state = step(grads, state, params)
  assert not bool(mo.mix_diagnostics(state).orthogonalized['dense']['kernel'])
  assert step._cache_size() == 1


def test_zero_gradients_give_zero_updates(rng):
  params = make_params(rng)
  zeros = jax.tree.map(jnp.zeros_like, params)
  for tx in (mo.muon(0.1), mo.mimuon(0.1, sgd_scale='rms_match')):
    updates, state = tx.update(zeros, tx.init(params), params)
    for u in jax.tree.leaves(updates):
      assert not np.any(np.asarray(u))
  diag = mo.mix_diagnostics(state)
  assert bool(diag.orthogonalized['dense']['kernel'])  # gap=inf -> Muon
  assert np.isinf(diag.min_gap['dense']['kernel'])


def test_decoupled_weight_decay_with_zero_gradient(rng):
  params = make_params(rng)
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = mo.mimuon(0.1, weight_decay=0.5)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates['dense']['kernel'],
                             -0.1 * 0.5 * params['dense']['kernel'], rtol=1e-6)


def test_nan_gradients_do_not_crash_and_apply_if_finite_skips(rng):
  params = make_params(rng)
  bad = grads_like(params, 0)
  bad['dense']['kernel'] = bad['dense']['kernel'].at[0, 0].set(jnp.nan)
  bad['out']['kernel'] = bad['out']['kernel'].at[1, 1].set(jnp.inf)
  raw = mo.mimuon(0.1)
  updates, state = jax.jit(raw.update)(bad, raw.init(params), params)
  # Documented: the gap is NaN, the gate falls to the SGD branch, the NaN
  # stays where it came from (and in the momentum).
  assert np.isnan(np.asarray(updates['dense']['kernel'])).any()
  assert np.isnan(mo.mix_diagnostics(state).min_gap['dense']['kernel'])
  assert not mo.mix_diagnostics(state).orthogonalized['dense']['kernel']

  tx = optax.apply_if_finite(mo.mimuon(0.1), max_consecutive_errors=5)
  state = tx.init(params)
  step = jax.jit(tx.update)
  updates, state = step(bad, state, params)
  for u in jax.tree.leaves(updates):
    assert not np.any(np.asarray(u))
  assert int(state.notfinite_count) == 1
  updates, state = step(grads_like(params, 1), state, params)
  assert all(np.isfinite(u).all() and np.any(u)
             for u in jax.tree.leaves(updates))


def test_empty_tree_and_none_leaves(rng):
  for tx in (mo.muon(0.1), mo.mimuon(0.1)):
    updates, _ = tx.update({}, tx.init({}), {})
    assert updates == {}
    params = {'w': jnp.ones((3, 4)), 'frozen': None}
    grads = {'w': jnp.ones((3, 4)), 'frozen': None}
    updates, _ = tx.update(grads, tx.init(params), params)
    assert updates['frozen'] is None and updates['w'].shape == (3, 4)
