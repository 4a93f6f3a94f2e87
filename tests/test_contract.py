"""The contract every optax optimizer keeps (ported from optax/contrib/_common_test.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mimuon_optax as mo

FACTORIES = {
    'muon': functools.partial(mo.muon, learning_rate=1e-2),
    'mimuon': functools.partial(mo.mimuon, learning_rate=1e-2, tau=1e-3),
    'mimuon_gap_every': functools.partial(mo.mimuon, learning_rate=1e-2,
                                          tau=1e-3, gap_every=4),
    # optax's options and Gram Newton-Schulz (issue 24):
    'muon_aol_adaptive_gram': functools.partial(
        mo.muon, learning_rate=1e-2, preconditioning='aol', adaptive=True,
        ns_method='gram'),
    'mimuon_schatten_auto': functools.partial(
        mo.mimuon, learning_rate=1e-2, tau=1e-3, preconditioning='schatten',
        ns_method='auto'),
    # ultralytics' MuSGD, the optimizer YOLO26 is trained with (issue 31):
    'musgd': functools.partial(mo.musgd, learning_rate=1e-2),
}


def _params(dtype):
  return {'w': jnp.linspace(-1, 1, 12, dtype=dtype).reshape(4, 3),
          'b': jnp.array([1.0, 2.0], dtype)}


def _loss(params):
  return sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
             for x in jax.tree.leaves(params))


@pytest.mark.parametrize('name', sorted(FACTORIES))
def test_jit_does_not_recompile_on_second_call(name):
  opt = FACTORIES[name]()

  @jax.jit
  def step(params, state):
    updates, state = opt.update(jax.grad(_loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  params = _params(jnp.float32)
  state = opt.init(params)
  params, state = step(params, state)
  params, state = step(params, state)
  assert step._cache_size() == 1


@pytest.mark.parametrize('name', sorted(FACTORIES))
def test_inject_hyperparams(name):
  factory = FACTORIES[name].func
  dims = {'w': mo.MuonDimensionNumbers(), 'b': mo.MuonDimensionNumbers(1, 2)}
  kwargs = dict(FACTORIES[name].keywords, weight_decay=0.1,
                weight_dimension_numbers=dims)
  opt = factory(**kwargs)
  opt_inject = optax.inject_hyperparams(factory, static_args=('ns_steps',))(
      **kwargs)
  params = {'w': -jnp.ones((2, 3)), 'b': jnp.ones((2, 5, 2))}
  grads = {'w': jnp.ones((2, 3)), 'b': -jnp.ones((2, 5, 2))}
  updates, state = jax.jit(opt.update)(grads, jax.jit(opt.init)(params),
                                       params)
  updates_i, state_i = jax.jit(opt_inject.update)(
      grads, jax.jit(opt_inject.init)(params), params)
  chex_close = functools.partial(np.testing.assert_allclose, rtol=1e-5,
                                 atol=1e-5)
  jax.tree.map(chex_close, updates_i, updates)
  jax.tree.map(chex_close, state_i.inner_state, state)


@pytest.mark.parametrize('name', sorted(FACTORIES))
@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float32])
def test_preserve_dtype_and_multisteps(name, dtype):
  opt = FACTORIES[name]()
  params = _params(dtype)
  grads = jax.grad(_loss)(params)
  updates, _ = jax.jit(opt.update)(grads, jax.jit(opt.init)(params), params)
  for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
    assert u.dtype == p.dtype

  multi = optax.MultiSteps(opt, every_k_schedule=4)
  updates, _ = jax.jit(multi.update)(grads, jax.jit(multi.init)(params), params)
  for u in jax.tree.leaves(updates):
    assert u.dtype == dtype and not np.any(np.asarray(u, np.float32))


@pytest.mark.parametrize('name', sorted(FACTORIES))
def test_multisteps_equals_one_step_on_the_mean_gradient(name):
  params = _params(jnp.float32)
  g1 = jax.tree.map(lambda x: jnp.cos(3 * x) + 0.1, params)
  g2 = jax.tree.map(lambda x: jnp.sin(5 * x), params)
  multi = optax.MultiSteps(FACTORIES[name](), every_k_schedule=2)
  state = multi.init(params)
  _, state = multi.update(g1, state, params)
  updates, _ = multi.update(g2, state, params)
  single = FACTORIES[name]()
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
  want, _ = single.update(mean, single.init(params), params)
  # rtol: adaptive=True scales updates by the gradient's nuclear norm (~1e3).
  jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-6,
                                 rtol=1e-6), updates, want)


@pytest.mark.parametrize('name', sorted(FACTORIES))
@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float32])
def test_state_dtype_is_stable_under_lax_cond(name, dtype):
  opt = FACTORIES[name]()
  params = _params(dtype)

  @jax.jit
  def step(params, state):
    grads = jax.grad(_loss)(params)
    cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
    # lax.cond raises at trace time if the branches' dtypes differ: the
    # updates must come back in the params' dtype, the state unchanged.
    updates, state = jax.lax.cond(
        cond, lambda: opt.update(grads, state, params),
        lambda: (params, state))
    return optax.apply_updates(params, updates), state, updates

  state = opt.init(params)
  for _ in range(2):
    params, state, updates = step(params, state)
    assert all(u.dtype == dtype for u in jax.tree.leaves(updates))


@pytest.mark.parametrize('name', sorted(FACTORIES))
def test_learning_rate_schedule_equals_constant(name):
  factory = FACTORIES[name].func
  kwargs = dict(FACTORIES[name].keywords)
  with_lr = factory(**kwargs)
  kwargs['learning_rate'] = optax.constant_schedule(1e-2)
  with_schedule = factory(**kwargs)
  params = _params(jnp.float32)
  p1, s1, p2, s2 = params, with_lr.init(params), params, with_schedule.init(
      params)
  for _ in range(5):
    u1, s1 = with_lr.update(jax.grad(_loss)(p1), s1, p1)
    u2, s2 = with_schedule.update(jax.grad(_loss)(p2), s2, p2)
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
  jax.tree.map(np.testing.assert_array_equal, p1, p2)


@pytest.mark.parametrize('factory', [mo.muon, mo.mimuon])
def test_converges_on_least_squares_inside_scan(factory):
  """min_W ||A W - B||^2 with W* known; a decaying lr reaches W* closely."""
  key_a, key_w = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, (64, 16)) / 8.0
  w_star = jax.random.normal(key_w, (16, 8))
  b = a @ w_star
  params = {'w': jnp.zeros((16, 8))}
  loss = lambda p: 0.5 * jnp.sum(jnp.square(a @ p['w'] - b))
  steps = 2000
  opt = factory(optax.cosine_decay_schedule(0.1, steps), ns_dtype='float32')

  def body(carry, _):
    params, state = carry
    updates, state = opt.update(jax.grad(loss)(params), state, params)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.lax.scan(body, (params, opt.init(params)),
                                length=steps)
  rel_err = jnp.linalg.norm(params['w'] - w_star) / jnp.linalg.norm(w_star)
  assert rel_err < 2e-2, rel_err
