"""mimuon_optax.muon is a drop-in for optax.contrib.muon (0.2.8), issue 14."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mimuon_optax as mo

MDN = mo.MuonDimensionNumbers
JORDAN = (3.4445, -4.7750, 2.0315)
DION = ((4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037), (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012))

# Documented differences of defaults (README, "Drop-in for
# optax.contrib.muon"): only these.
DIFFERENT_DEFAULTS = {'ns_coeffs': 'polar_express'}


def test_signature_is_optax_then_ours():
  theirs = inspect.signature(optax.contrib.muon).parameters
  for factory in (mo.muon, mo.mimuon):
    ours = inspect.signature(factory).parameters
    names = list(ours)
    for i, (name, p) in enumerate(theirs.items()):
      assert name in ours, (factory.__name__, name)
      q = ours[name]
      assert q.kind == p.kind, (factory.__name__, name, q.kind)
      if p.kind == p.POSITIONAL_OR_KEYWORD:
        assert names[i] == name, (factory.__name__, name)
      expected = DIFFERENT_DEFAULTS.get(name, p.default)
      assert q.default == expected, (factory.__name__, name, q.default)
    extras = [n for n in names if n not in theirs]
    assert all(ours[n].kind == inspect.Parameter.KEYWORD_ONLY
               for n in extras)
  assert 'tau' in inspect.signature(mo.mimuon).parameters
  assert inspect.signature(mo.mimuon).parameters['tau'].kind == (
      inspect.Parameter.KEYWORD_ONLY)


def _params():
  rng = np.random.default_rng(0)
  f = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
  return {'a': f(16, 24), 'b': f(32, 8),
          'enc': {'k': f(8, 8), 'bias': f(8)}, 'stack': f(2, 4, 6)}


def _grads(params, seed):
  keys = jax.random.split(jax.random.key(seed), len(jax.tree.leaves(params)))
  leaves, treedef = jax.tree.flatten(params)
  return treedef.unflatten([jax.random.normal(k, x.shape, x.dtype)
                            for k, x in zip(keys, leaves)])


# (args, kwargs) written for optax.contrib.muon. Settings whose NS matches
# ours: explicit ns_coeffs (optax's default is 'standard'), float32 NS.
CALLS = [
    ((1e-2, JORDAN), {}),
    ((1e-2, 'standard'), {}),
    ((1e-2, 'dion'), {}),
    ((1e-2, DION), {}),
    ((3e-3, JORDAN, 5, 0.9, 1e-8, 0.1), {}),
    ((3e-3, JORDAN, 6, 0.9, 1e-8, 0.1, {'a': True, 'b': False,
                                        'enc': {'k': True, 'bias': False},
                                        'stack': False}), {}),
    ((1e-2, JORDAN), dict(nesterov=False, adam_b1=0.8, adam_b2=0.98,
                          adam_eps_root=1e-9, adam_weight_decay=0.01,
                          adam_learning_rate=1e-3)),
    ((1e-2, JORDAN), dict(consistent_rms=0.2)),
    ((1e-2, 'standard'), dict(muon_weight_dimension_numbers={
        'a': MDN(), 'b': MDN(), 'enc': None, 'stack': MDN(1, 2)})),
    ((1e-2, 'standard'), dict(muon_weight_dimension_numbers=lambda p: {
        'a': MDN(), 'b': None, 'enc': {'k': MDN(), 'bias': None},
        'stack': MDN((0, 1), 2)})),
    ((optax.linear_schedule(1e-2, 1e-3, 10), 'standard'),
     dict(weight_decay=0.05)),
    ((1e-2, JORDAN), dict(preconditioning='aol')),
    ((1e-2, 'dion'), dict(preconditioning='aol')),
    ((1e-2, 'dion'), dict(preconditioning='schatten')),
    ((1e-2, JORDAN), dict(preconditioning='spectral', nesterov=False)),
]


@pytest.mark.parametrize('factory', ['muon', 'mimuon_tau0'])
@pytest.mark.parametrize('call', range(len(CALLS)))
def test_updates_match_optax(call, factory):
  """Same grads -> updates within 1e-4 relative (per leaf).

  optax bias-corrects its momentum (we do not). Without Nesterov that is one
  scalar per step, which the Newton-Schulz normalization removes, so every
  step matches; with Nesterov the two terms are corrected differently after
  step 1, so only the first step is compared on matrix leaves. AdamW leaves
  (optax.adamw with the same arguments) match at every step.
  """
  args, kwargs = CALLS[call]
  ours_fn = mo.muon if factory == 'muon' else (
      lambda *a, **k: mo.mimuon(*a, tau=0.0, **k))
  theirs = optax.contrib.muon(*args, **kwargs)
  ours = ours_fn(*args, **kwargs, ns_dtype='float32')
  params = _params()
  s_t, s_o = theirs.init(params), ours.init(params)
  p_t = p_o = params
  nesterov = kwargs.get('nesterov', True)
  labels = mo.default_param_labels(
      params, kwargs.get('muon_weight_dimension_numbers'))
  for step in range(3):
    g = _grads(params, step)
    u_t, s_t = jax.jit(theirs.update)(g, s_t, p_t)
    u_o, s_o = jax.jit(ours.update)(g, s_o, p_o)
    flat_t = jax.tree_util.tree_leaves_with_path(u_t)
    flat_o = jax.tree.leaves(u_o)
    flat_l = jax.tree.leaves(labels)
    for (path, a), b, label in zip(flat_t, flat_o, flat_l):
      if label == 'muon' and nesterov and step > 0:
        continue
      a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
      err = np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30)
      assert err < 1e-4, (step, jax.tree_util.keystr(path), label, err)
    p_t = optax.apply_updates(p_t, u_t)
    p_o = optax.apply_updates(p_o, u_o)


@pytest.mark.parametrize('factory', [mo.muon, mo.mimuon])
def test_bad_options_raise_naming_the_argument(factory):
  with pytest.raises(ValueError, match='preconditioning'):
    factory(1e-2, preconditioning='frobenious')
  with pytest.raises(ValueError, match='ns_method'):
    factory(1e-2, ns_method='fast')
  with pytest.raises(ValueError, match='consistent_rms'):
    factory(1e-2, lr_scaling='match_adamw', consistent_rms=0.2)
  with pytest.raises(ValueError, match='weight_dimension_numbers'):
    factory(1e-2, weight_dimension_numbers=MDN(),
            muon_weight_dimension_numbers=MDN())


def _matrix_updates(tx, params, steps):
  """The matrix leaf 'a' of ``tx``'s updates for the same grads, per step."""
  state, out = tx.init(params), []
  for step in range(steps):
    u, state = jax.jit(tx.update)(_grads(params, step), state, params)
    out.append(np.asarray(u['a']))
  return out


@pytest.mark.parametrize('factory', ['muon', 'mimuon_tau0'])
def test_adaptive_is_optax_times_the_bias_correction(factory):
  """adaptive=True: O * Re tr(M^H O), with our (uncorrected) momentum M.

  Without Nesterov optax's momentum is ours / (1 - beta^t), and the factor
  is linear in M while O is not changed by its scale: ours = optax's *
  (1 - beta^t) exactly, step t = 1, 2, 3 (1e-4 relative).
  """
  ours_fn = mo.muon if factory == 'muon' else (
      lambda *a, **k: mo.mimuon(*a, tau=0.0, **k))
  kwargs = dict(adaptive=True, nesterov=False, beta=0.9)
  theirs = optax.contrib.muon(1e-2, JORDAN, **kwargs)
  ours = ours_fn(1e-2, JORDAN, **kwargs, ns_dtype='float32')
  params = _params()
  for t, (a, b) in enumerate(zip(_matrix_updates(theirs, params, 3),
                                 _matrix_updates(ours, params, 3)), 1):
    want = a * (1 - 0.9**t)
    assert np.linalg.norm(b - want) < 1e-4 * np.linalg.norm(want), t
  # The factor is the nuclear norm of the momentum, up to NS's band.
  plain = ours_fn(1e-2, JORDAN, nesterov=False, beta=0.9, ns_dtype='float32')
  o = _matrix_updates(plain, params, 1)[0]
  m = 0.1 * np.asarray(_grads(params, 0)['a'], np.float64)
  nuclear = np.linalg.svd(m, compute_uv=False).sum()
  ratio = np.linalg.norm(_matrix_updates(ours, params, 1)[0]) / (
      np.linalg.norm(o) * nuclear)
  assert 0.7 < ratio < 1.3, ratio  # Jordan's band, s in [0.7, 1.2]


@pytest.mark.parametrize('factory', ['muon', 'mimuon_tau0'])
def test_complex_matrix_matches_optax(factory):
  """A complex64 matrix leaf: the first update equals optax's (1e-4)."""
  ours_fn = mo.muon if factory == 'muon' else (
      lambda *a, **k: mo.mimuon(*a, tau=0.0, **k))
  rng = np.random.default_rng(1)
  w = rng.standard_normal((12, 20)) + 1j * rng.standard_normal((12, 20))
  params = {'a': jnp.asarray(w, jnp.complex64)}
  theirs = optax.contrib.muon(1e-2, JORDAN)
  ours = ours_fn(1e-2, JORDAN, ns_dtype='float32')
  a = _matrix_updates(theirs, params, 1)[0]
  b = _matrix_updates(ours, params, 1)[0]
  assert b.dtype == np.complex64
  assert np.linalg.norm(b - a) < 1e-4 * np.linalg.norm(a)


def test_old_names_still_work():
  params = _params()
  dims = {'a': MDN(), 'b': MDN(), 'enc': None, 'stack': None}
  a = mo.muon(1e-2, weight_dimension_numbers=dims, lr_scaling='match_adamw')
  b = mo.muon(1e-2, muon_weight_dimension_numbers=dims, consistent_rms=0.2)
  g = _grads(params, 0)
  u_a, _ = a.update(g, a.init(params), params)
  u_b, _ = b.update(g, b.init(params), params)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6),
               u_a, u_b)
