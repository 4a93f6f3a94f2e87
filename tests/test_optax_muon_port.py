"""optax's own Muon tests, run against mimuon_optax.muon and mimuon(tau=0).

Ported from optax 0.2.8 (Apache-2.0, Copyright 2025 DeepMind Technologies
Limited): ``optax/contrib/_muon_test.py`` and the ``muon`` entry of
``optax/contrib/_common_test.py``. Adapted minimally: ``_muon.muon`` is the
factory under test (``MuonTest.make``; ``MiMuonTauZeroTest`` reruns every case
on ``mimuon(tau=0)``), ``_muon._compute_muon_reshape`` and
``_muon.orthogonalize_via_newton_schulz`` are our ``MatrixView`` and
``newton_schulz``, and the momentum is found by type in the state (our chain
differs: optax reads ``state[0]['muon'][0][0][1]``, a layout of its own
chain that is not part of the contract). Every case runs; none skips.
"""

import functools
import inspect
import math
import typing

from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax import contrib
from optax._src import base
from optax._src import numerics
from optax._src import test_utils
from optax._src import update
from optax._src import utils
from optax.schedules import _inject
from optax.schedules import _schedule
from optax.transforms import _accumulation
from optax.transforms import _masking

import mimuon_optax as mo
from mimuon_optax import _matrix

_muon = contrib  # MuonDimensionNumbers is shared with optax.

UNSPECIFIED = object()


def _get_muon_mu(state):
  """The matrix leaves' momentum (optax: ``state[0]['muon'][0][0][1]``)."""
  is_mom = lambda x: isinstance(x, mo.MomentumState)
  found = [x for x in jax.tree.leaves(state[0]['muon'], is_leaf=is_mom)
           if is_mom(x)]
  assert len(found) == 1
  return found[0].mu


def _setup_mixed_tensor_target_complex(dtype):
  """Complex version of _common_test._setup_mixed_tensor_target."""
  initial_params = jnp.zeros((2, 2), dtype=dtype)
  final_params = jnp.array(
      [[1.0 + 2.0j, 0.0], [-1.0 + 1.0j, 1.0 - 3.0j]],
      dtype=dtype,
  )

  def obj_fn(params):
    return jnp.sum(numerics.abs_sq(params - final_params))

  return initial_params, final_params, obj_fn


# ---------------------------------------------------------------------------
# _common_test.py targets
def _setup_parabola(dtype):
  initial_params = jnp.array([-1.0, 10.0, 1.0], dtype=dtype)
  final_params = jnp.array([1.0, -1.0, 1.0], dtype=dtype)

  def obj_fn(params):
    return jnp.sum(numerics.abs_sq(params - final_params))

  return initial_params, final_params, obj_fn


def _setup_rosenbrock(dtype):
  a = 1.0
  b = 100.0
  initial_params = jnp.array([0.0, 0.0], dtype=dtype)
  final_params = jnp.array([a, a**2], dtype=dtype)

  def obj_fn(params):
    return numerics.abs_sq(a - params[0]) + b * numerics.abs_sq(
        params[1] - params[0] ** 2
    )

  return initial_params, final_params, obj_fn


def _setup_matrix_parabola(dtype):
  initial_params = jnp.zeros((2, 2), dtype=dtype)
  final_params = jnp.array([[3.0, -2.0], [1.0, 4.0]], dtype=dtype)

  def obj_fn(params):
    return jnp.sum(numerics.abs_sq(params - final_params))

  return initial_params, final_params, obj_fn


def _setup_mixed_tensor_target(dtype):
  initial_1d_params = jnp.zeros((3,), dtype=dtype)
  final_1d_params = jnp.array([1.0, -1.0, 2.0], dtype=dtype)
  initial_2d_params = jnp.zeros((2, 2), dtype=dtype)
  final_2d_params = jnp.array([[1.0, 0.0], [-1.0, 1.0]], dtype=dtype)

  def obj_fn(params):
    params_1d, params_2d = params
    loss_1d = jnp.sum(numerics.abs_sq(params_1d - final_1d_params))
    loss_2d = jnp.sum(numerics.abs_sq(params_2d - final_2d_params))
    return loss_1d + loss_2d

  initial_params = (initial_1d_params, initial_2d_params)
  final_params = (final_1d_params, final_2d_params)
  return initial_params, final_params, obj_fn


class MuonTest(parameterized.TestCase):
  """optax/contrib/_muon_test.py::MuonTest, on mimuon_optax.muon."""

  make = staticmethod(mo.muon)

  def get_updates(self, params, muon_weight_dimension_numbers=UNSPECIFIED,
                  preconditioning='frobenius'):
    if muon_weight_dimension_numbers is UNSPECIFIED:
      opt = self.make(learning_rate=1e-3, preconditioning=preconditioning)
    else:
      opt = self.make(
          learning_rate=1e-3,
          preconditioning=preconditioning,
          muon_weight_dimension_numbers=muon_weight_dimension_numbers
      )
    state = opt.init(params)
    grad = params
    updates, state = opt.update(grad, state, params=params)
    return updates, state

  @parameterized.named_parameters(
      {
          'testcase_name': '2d_tuple_axes',
          'input_shape': (2, 3),
          'dim_nums': _muon.MuonDimensionNumbers(reduction_axis=0,
                                                 output_axis=1),
          'expected_flat_shape': (1, 2, 3),
      },
      {
          'testcase_name': '3d_batch_axis',
          'input_shape': (2, 3, 4),
          'dim_nums': _muon.MuonDimensionNumbers(reduction_axis=0,
                                                 output_axis=2),
          'expected_flat_shape': (3, 2, 4),
      },
      {
          'testcase_name': '3d_negative_axes_indices',
          'input_shape': (2, 3, 4),
          'dim_nums': _muon.MuonDimensionNumbers(reduction_axis=-3,
                                                 output_axis=-1),
          'expected_flat_shape': (3, 2, 4),
      },
      {
          'testcase_name': '4d_multiple_batch_axes',
          'input_shape': (2, 3, 4, 5),
          'dim_nums': _muon.MuonDimensionNumbers(reduction_axis=2,
                                                 output_axis=3),
          'expected_flat_shape': (6, 4, 5),
      },
      {
          'testcase_name': '4d_multiple_output_axes',
          'input_shape': (2, 3, 4, 5),
          'dim_nums': _muon.MuonDimensionNumbers(reduction_axis=2,
                                                 output_axis=(0, 3)),
          'expected_flat_shape': (3, 4, 10),
      },
  )
  def test_reshape_inverse(self, input_shape, dim_nums, expected_flat_shape):
    x = jnp.arange(math.prod(input_shape), dtype=jnp.float32).reshape(
        input_shape
    )
    view = _matrix.matrix_view((), x.shape, dim_nums)  # adapted
    reshaped_x = view.to_matrices(x)
    reconstructed_x = view.from_matrices(reshaped_x)
    self.assertEqual(reshaped_x.shape, expected_flat_shape)
    self.assertEqual(reconstructed_x.shape, x.shape)
    test_utils.assert_trees_all_close(reconstructed_x, x)

  @parameterized.named_parameters(
      ('frobenius', 'frobenius'), ('aol', 'aol'), ('schatten', 'schatten')
  )
  def test_callable_weight_dim_nums(self, preconditioning):

    def weight_dim_nums_fn(params):
      fn_ = lambda x: _muon.MuonDimensionNumbers(0, 1) if x.ndim == 2 else None
      return jax.tree.map(fn_, params)

    opt = self.make(learning_rate=1e-3, preconditioning=preconditioning,
                    muon_weight_dimension_numbers=weight_dim_nums_fn)
    params = {'w1': jnp.ones((10, 10)), 'w2': jnp.ones((2, 10))}
    state = opt.init(params)
    _, _ = opt.update(params, state, params=params)

    def weight_dim_nums_fn(params):  # pylint: disable=function-redefined
      del params
      return {'w1': _muon.MuonDimensionNumbers(), 'w2': None}

    opt = self.make(learning_rate=1e-3, preconditioning=preconditioning,
                    muon_weight_dimension_numbers=weight_dim_nums_fn)
    params = {'w1': jnp.ones((10, 10)), 'w2': jnp.ones((2, 10))}
    state = opt.init(params)
    _, _ = opt.update(params, state, params=params)

  @parameterized.named_parameters(
      ('frobenius', 'frobenius'), ('aol', 'aol'), ('schatten', 'schatten')
  )
  def test_reshape_update_for_square_parameter_matches_muon_without_dim_nums(
      self, preconditioning
  ):
    key = jax.random.key(0)
    params_sq = {'w': jax.random.normal(key, shape=(10, 10))}
    updates_sq, _ = self.get_updates(params_sq,
                                     preconditioning=preconditioning)
    dim_nums = {
        'w': _muon.MuonDimensionNumbers(reduction_axis=0, output_axis=1)}
    reshape_updates_sq, _ = self.get_updates(
        params_sq, preconditioning=preconditioning,
        muon_weight_dimension_numbers=dim_nums)
    test_utils.assert_trees_all_close(
        updates_sq, reshape_updates_sq, rtol=1e-8, atol=1e-8
    )

  @parameterized.named_parameters(
      ('frobenius', 'frobenius'), ('aol', 'aol'), ('schatten', 'schatten')
  )
  def test_reshape_and_update_single_param(self, preconditioning):
    key = jax.random.key(0)
    w = jax.random.normal(key, shape=(10, 12))
    params = {'w': w}
    updates, _ = self.get_updates(params, preconditioning=preconditioning)

    with self.subTest('2D with dimension numbers, (10, 12)'):
      params = {'w': w}
      dim_nums = {
          'w': _muon.MuonDimensionNumbers(reduction_axis=0, output_axis=1)}
      reshape_updates, _ = self.get_updates(
          params, preconditioning=preconditioning,
          muon_weight_dimension_numbers=dim_nums)
      test_utils.assert_trees_all_close(updates, reshape_updates, rtol=1e-8,
                                        atol=1e-8)

    with self.subTest('4D with dim nums, (10, 12) -> (4, 1, 10, 3)'):
      reshape_fn = lambda x: x.reshape(10, 3, 1, 4).transpose(3, 2, 0, 1)
      reshape_params = {'w': reshape_fn(w)}
      dim_nums = {'w': _muon.MuonDimensionNumbers(reduction_axis=(2,),
                                                  output_axis=(0, 3))}
      reshape_updates, _ = self.get_updates(
          reshape_params, preconditioning=preconditioning,
          muon_weight_dimension_numbers=dim_nums)
      test_utils.assert_trees_all_close(
          jax.tree.map(reshape_fn, updates), reshape_updates, rtol=1e-8,
          atol=1e-8)

    with self.subTest('4D with dim_nums, (10, 12) -> (5, 12, 1, 2)'):
      reshape_fn = lambda x: x.reshape(2, 1, 5, 12).transpose(2, 3, 1, 0)
      reshape_params = {'w': reshape_fn(w)}
      dim_nums = {'w': _muon.MuonDimensionNumbers(reduction_axis=(0, 3),
                                                  output_axis=(1,))}
      reshape_updates, _ = self.get_updates(
          reshape_params, preconditioning=preconditioning,
          muon_weight_dimension_numbers=dim_nums)
      test_utils.assert_trees_all_close(
          jax.tree.map(reshape_fn, updates), reshape_updates, rtol=1e-5,
          atol=1e-5)

  @parameterized.named_parameters(
      ('frobenius', 'frobenius'), ('aol', 'aol'), ('schatten', 'schatten')
  )
  def test_dim_nums_combinations(self, preconditioning):
    get_muon_mu = _get_muon_mu  # adapted: our chain's state differs
    dim_num = _muon.MuonDimensionNumbers(reduction_axis=(1,),
                                         output_axis=(2,))

    # Test 1: full dim_nums
    params = {'w1': jnp.ones((1, 2, 3)), 'w2': jnp.ones((2, 3, 4))}
    dim_nums = {'w1': dim_num, 'w2': dim_num}
    _, state = self.get_updates(params, dim_nums,
                                preconditioning=preconditioning)
    self.assertNotIsInstance(get_muon_mu(state)['w1'], _masking.MaskedNode)
    self.assertNotIsInstance(get_muon_mu(state)['w2'], _masking.MaskedNode)

    # Test 2: no dim_nums
    params = {'w1': jnp.ones((1, 2, 3)), 'w2': jnp.ones((3, 4))}
    _, state = self.get_updates(params, preconditioning=preconditioning)
    self.assertIsInstance(get_muon_mu(state)['w1'], _masking.MaskedNode)
    self.assertNotIsInstance(get_muon_mu(state)['w2'], _masking.MaskedNode)

    # Test 3: partial dim_nums with none
    params = {'w1': jnp.ones((1, 2, 3)), 'w2': jnp.ones((2, 3, 4))}
    dim_nums = {'w1': None, 'w2': dim_num}
    _, state = self.get_updates(params, dim_nums,
                                preconditioning=preconditioning)
    self.assertIsInstance(get_muon_mu(state)['w1'], _masking.MaskedNode)

    # Test 4: prefix None, full dim_nums
    params = {
        'w1': {'a': jnp.ones((2, 3)), 'b': jnp.ones((2, 3))},
        'w2': {'a': jnp.ones((2, 3)), 'b': jnp.ones((2, 3))},
    }
    dim_num = _muon.MuonDimensionNumbers()
    dim_nums = {'w1': None, 'w2': {'a': dim_num, 'b': None}}
    _, state = self.get_updates(params, dim_nums,
                                preconditioning=preconditioning)
    state_structure = jax.tree.structure(
        get_muon_mu(state),
        is_leaf=lambda x: isinstance(x, _masking.MaskedNode))
    self.assertEqual(state_structure, jax.tree.structure(params))
    self.assertIsInstance(get_muon_mu(state)['w1']['a'], _masking.MaskedNode)
    self.assertIsInstance(get_muon_mu(state)['w1']['b'], _masking.MaskedNode)
    self.assertNotIsInstance(get_muon_mu(state)['w2']['a'], _masking.MaskedNode)
    self.assertIsInstance(get_muon_mu(state)['w2']['b'], _masking.MaskedNode)

    # Test 5: prefix None and dim_nums
    params = {
        'w1': {'a': jnp.ones((2, 3)), 'b': jnp.ones((2, 3))},
        'w2': {'a': jnp.ones((2, 3)), 'b': jnp.ones((2, 3))},
    }
    dim_num = _muon.MuonDimensionNumbers()
    dim_nums = {'w1': dim_num, 'w2': None}
    _, state = self.get_updates(params, dim_nums)
    state_structure = jax.tree.structure(
        get_muon_mu(state),
        is_leaf=lambda x: isinstance(x, _masking.MaskedNode))
    self.assertEqual(state_structure, jax.tree.structure(params))
    self.assertNotIsInstance(get_muon_mu(state)['w1']['a'], _masking.MaskedNode)
    self.assertNotIsInstance(get_muon_mu(state)['w1']['b'], _masking.MaskedNode)
    self.assertIsInstance(get_muon_mu(state)['w2']['a'], _masking.MaskedNode)
    self.assertIsInstance(get_muon_mu(state)['w2']['b'], _masking.MaskedNode)

  def test_newton_schulz(self):
    """Real part of optax's test_newton_schulz (complex part: see below)."""
    mat_real = jax.random.normal(jax.random.key(0), (4, 3), dtype=jnp.float32)
    ns_coeffs = jnp.array([2.0, -1.5, 0.5])
    atol, rtol = 1e-5, 1e-5
    # adapted: orthogonalize_via_newton_schulz(x, coeffs, ns_steps=20,
    # eps=1e-12) is newton_schulz(x[None], ns_schedule(coeffs, 20), ...).
    mat_real_orth = mo.newton_schulz(
        mat_real[None], mo.ns_schedule(ns_coeffs, 20), ns_dtype=jnp.float32,
        eps=1e-12)[0]
    gram_real = mat_real_orth.T @ mat_real_orth
    np.testing.assert_allclose(gram_real, jnp.eye(mat_real.shape[1]),
                               atol=atol, rtol=rtol)

  def test_newton_schulz_complex(self):
    """Complex part of optax's test_newton_schulz."""
    mat_complex = jax.random.normal(jax.random.key(0), (4, 3),
                                    dtype=jnp.complex64)
    ns_coeffs = jnp.array([2.0, -1.5, 0.5])
    atol, rtol = 1e-5, 1e-5
    # adapted: as in test_newton_schulz (ns_steps=10, eps=1e-8).
    mat_complex_orth = mo.newton_schulz(
        mat_complex[None], mo.ns_schedule(ns_coeffs, 10), eps=1e-8)[0]
    gram_complex = mat_complex_orth.conj().T @ mat_complex_orth
    np.testing.assert_allclose(gram_complex, jnp.eye(mat_complex.shape[1]),
                               atol=atol, rtol=rtol)
    self.assertEqual(mat_complex_orth.shape, mat_complex.shape)

  @parameterized.product(
      target=(_setup_mixed_tensor_target_complex,),
      dtype=('complex64',),
      adaptive=(True, False),
      nesterov=(True, False),
  )
  def test_complex_mixed_target(self, target, dtype, adaptive, nesterov):
    """Test Muon optimizer on a complex mixed tensor optimization target."""
    dtype = getattr(jnp, dtype)

    opt = self.make(learning_rate=1e-2, adaptive=adaptive, nesterov=nesterov)
    initial_params, final_params, obj_fn = target(dtype)

    @jax.jit
    def step(params, state):
      _, updates = jax.value_and_grad(obj_fn)(params)
      updates = jax.tree.map(jnp.conj, updates)
      updates, state = opt.update(updates, state, params)
      params = update.apply_updates(params, updates)
      return params, state

    params = initial_params
    state = opt.init(params)

    def f(params_state, _):
      return step(*params_state), None

    (params, _), _ = jax.lax.scan(f, (params, state), length=1000)

    test_utils.assert_trees_all_close(
        params, final_params, rtol=3e-2, atol=3e-2
    )

  @parameterized.named_parameters(
      ('standard_square', 'frobenius', (100, 100)),
      ('standard_tall', 'frobenius', (100, 50)),
      ('standard_wide', 'frobenius', (50, 100)),
      ('aol_square', 'aol', (100, 100)),
      ('aol_tall', 'aol', (100, 50)),
      ('aol_wide', 'aol', (50, 100)),
  )
  def test_muon_orthogonalization_modes(self, preconditioning, shape):
    key = jax.random.key(42)
    params = {'w': jax.random.normal(key, shape)}
    opt = self.make(learning_rate=1.0, weight_decay=0.0,
                    preconditioning=preconditioning)
    state = opt.init(params)
    updates, _ = opt.update(params, state, params=params)
    self.assertEqual(updates['w'].shape, shape)
    if shape[0] == shape[1]:
      s = jnp.linalg.svd(updates['w'], compute_uv=False)
      max_s = jnp.max(s)
      min_s = jnp.min(s)
      self.assertLess(max_s, 2.0, msg=f'Max singular value {max_s} too high')
      self.assertGreater(min_s, 0.1, msg=f'Min singular value {min_s} too low')

  def test_aol_numerical_difference(self):
    """Ensures that AOL=True produces different updates than Standard Muon."""
    params = {'w': jnp.eye(8) * 2.0}

    def _get_updates(preconditioning, **kwargs):
      opt = self.make(learning_rate=0.1,
                      preconditioning=preconditioning, **kwargs)
      updates, _ = opt.update(params, opt.init(params), params)
      for leaf in jax.tree_util.tree_leaves(updates):
        self.assertFalse(jnp.isnan(leaf).any(),
                         f'Found NaN values in {preconditioning}')
      return updates

    u_std = _get_updates('frobenius')
    u_aol = _get_updates('aol', ns_coeffs='dion')
    u_schatten = _get_updates('schatten', ns_coeffs='dion')

    with self.assertRaises(AssertionError,
                           msg='AOL should differ from Frobenius and Schatten'):
      test_utils.assert_trees_all_close(u_std, u_aol)
      test_utils.assert_trees_all_close(u_schatten, u_aol)

  @parameterized.named_parameters(
      ('frobenius', 'frobenius'), ('aol', 'aol'), ('schatten', 'schatten')
  )
  def test_orthogonality(self, preconditioning):
    params = {'w': jnp.eye(8) * 2.0}
    opt = self.make(learning_rate=0.1, preconditioning=preconditioning)
    updates, _ = opt.update(params, opt.init(params), params)
    w_update = updates['w']
    for leaf in jax.tree_util.tree_leaves(updates):
      self.assertFalse(jnp.isnan(leaf).any(), 'Found NaN values in updates')
    gram = jnp.dot(w_update.T, w_update)
    gram = gram / jnp.max(gram)
    ortho_error = jnp.linalg.norm(gram - jnp.eye(gram.shape[0]))
    self.assertLess(ortho_error, 1e-3,
                    f'Orthogonality error too high: {ortho_error}')

  # -------------------------------------------------------------------------
  # optax/contrib/_common_test.py::ContribTest, entry
  # {'opt_name': 'muon', 'opt_kwargs': {'learning_rate': 1e-2}}.
  opt_kwargs = {'learning_rate': 1e-2}

  @parameterized.parameters(True, False)
  def test_optimizers_accept_extra_args(self, wrap):
    del wrap  # The muon entry has no wrapper.
    opt = self.make(**self.opt_kwargs)
    initial_params, _, objective = _setup_rosenbrock(jnp.float32)

    @jax.jit
    def step(params, state):
      _, updates = jax.value_and_grad(objective)(params)
      update_kwargs = {'unexpected_extra_args_your_optimizer_doesnt_expect': 1}
      updates, state = opt.update(updates, state, params, **update_kwargs)
      params = update.apply_updates(params, updates)
      return params, state

    params = initial_params
    state = opt.init(params)
    for _ in range(2):
      params, state = step(params, state)
    params = initial_params
    state = opt.init(params)
    params, state = step(params, state)
    with test_utils.log_compilations() as compilation_logs:
      _ = step(params, state)
    self.assertEmpty(
        compilation_logs, 'Optimizer recompiles on second call to "update".')

  @parameterized.parameters(
      _setup_parabola, _setup_rosenbrock, _setup_matrix_parabola,
      _setup_mixed_tensor_target)
  def test_optimizers(self, target):
    dtype = jnp.dtype('float32')
    opt = self.make(**self.opt_kwargs)
    initial_params, final_params, obj_fn = target(dtype)

    @jax.jit
    def step(params, state):
      _, updates = jax.value_and_grad(obj_fn)(params)
      updates, state = opt.update(updates, state, params)
      params = update.apply_updates(params, updates)
      return params, state

    params = initial_params
    state = opt.init(params)
    state = optax.tree.map_params(opt, lambda v: v, state)

    def f(params_state, _):
      return step(*params_state), None

    (params, state), _ = jax.lax.scan(f, (params, state), length=30_000)
    test_utils.assert_trees_all_close(
        params, final_params, rtol=3e-2, atol=3e-2)

  def test_optimizers_can_be_wrapped_in_inject_hyperparams(self):
    factory = self.make
    hparams = self.opt_kwargs
    opt = factory(**hparams)
    static_args = []
    for uninjectable_hparam in ['warmup_steps', 'num_betas', 'clip_value_fn',
                                'ns_steps', 'rank', 'update_proj_gap']:
      if uninjectable_hparam in inspect.signature(factory).parameters.keys():
        static_args.append(uninjectable_hparam)
    static_args = tuple(static_args)
    opt_inject = _inject.inject_hyperparams(factory, static_args)(**hparams)

    params = [jnp.negative(jnp.ones((2, 3))), jnp.ones((2, 5, 2))]
    grads = [jnp.ones((2, 3)), jnp.negative(jnp.ones((2, 5, 2)))]

    state = jax.jit(opt.init)(params)
    updates, new_state = jax.jit(opt.update)(grads, state, params)
    state_inject = jax.jit(opt_inject.init)(params)
    updates_inject, new_state_inject = jax.jit(opt_inject.update)(
        grads, state_inject, params)
    test_utils.assert_trees_all_close(updates_inject, updates, rtol=1e-5)
    test_utils.assert_trees_all_close(
        new_state_inject.inner_state, new_state, rtol=1e-5, atol=1e-5)

  @parameterized.parameters('bfloat16', 'float32')
  def test_preserve_dtype(self, dtype):
    dtype = jnp.dtype(dtype)
    opt = self.make(**self.opt_kwargs)
    fun = lambda x: jnp.sum(x**2)
    params = jnp.array([1.0, 2.0], dtype=dtype)
    _, grads = jax.value_and_grad(fun)(params)
    state = jax.jit(opt.init)(params)
    updates, _ = jax.jit(opt.update)(grads, state, params)
    self.assertEqual(updates.dtype, params.dtype)

  @parameterized.parameters('bfloat16', 'float32')
  def test_gradient_accumulation(self, dtype):
    dtype = jnp.dtype(dtype)
    opt = self.make(**self.opt_kwargs)
    fun = lambda x: jnp.sum(x**2)
    opt = base.GradientTransformationExtraArgs(opt.init, opt.update)
    opt = _accumulation.MultiSteps(opt, every_k_schedule=4)
    params = jnp.array([1.0, 2.0], dtype=dtype)
    _, grads = jax.value_and_grad(fun)(params)
    state = jax.jit(opt.init)(params)
    updates, _ = jax.jit(opt.update)(grads, state, params)
    test_utils.assert_trees_all_equal(updates, jnp.zeros_like(grads))

  @parameterized.parameters(jnp.float16, jnp.bfloat16, jnp.float32,
                            jnp.float64)
  def test_state_shape_dtype_shard_stability(self, dtype):
    with utils.x64_precision(dtype in (jnp.float64, jnp.complex128)):
      opt = self.make(**self.opt_kwargs)
      initial_params, _, objective = _setup_parabola(dtype)

      @jax.jit
      def step(params, state):
        value, updates = jax.value_and_grad(objective)(params)
        value = value.astype(jnp.float16 if dtype != jnp.float16
                             else jnp.bfloat16)
        cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
        updates, state = jax.lax.cond(
            cond, lambda: opt.update(updates, state, params),
            lambda: (params, state))
        params = update.apply_updates(params, updates)
        return params, state

      params = initial_params
      state = opt.init(params)
      for _ in range(2):
        params, new_state = step(params, state)
        assert jax.tree.leaves(params)[0].dtype == dtype
        cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
        # pylint: disable=cell-var-from-loop
        state = jax.lax.cond(cond, lambda: state,  # noqa: B023
                             lambda: new_state)    # noqa: B023

  def test_optimizers_accept_learning_rate_schedule_if_type_annotated_as_such(
      self):
    initial_params, _, obj_fn = _setup_parabola(jnp.float32)
    opt_setup = self.make
    # adapted: our module uses `from __future__ import annotations`, so the
    # annotation is resolved with typing.get_type_hints.
    target = getattr(opt_setup, 'func', opt_setup)
    lr_annotation = typing.get_type_hints(target).get('learning_rate')
    if lr_annotation not in (base.ScalarOrSchedule, base.Schedule):
      self.skipTest('Optimizer doesn\'t accept a learning schedule.')
    opt_kwargs_with_schedule = dict(
        self.opt_kwargs, learning_rate=_schedule.constant_schedule(1e-3))
    opt_kwargs_with_lr = dict(self.opt_kwargs, learning_rate=1e-3)
    opt_with_schedule = opt_setup(**opt_kwargs_with_schedule)
    opt_with_lr = opt_setup(**opt_kwargs_with_lr)

    def step(opt, params, state):
      _, updates = jax.value_and_grad(obj_fn)(params)
      updates, state = opt.update(updates, state, params)
      params = update.apply_updates(params, updates)
      return params, state

    params_with_schedule, params_with_lr = initial_params, initial_params
    state_with_schedule = opt_with_schedule.init(params_with_schedule)
    state_with_lr = opt_with_lr.init(params_with_lr)
    for _ in range(10):
      params_with_schedule, state_with_schedule = step(
          opt_with_schedule, params_with_schedule, state_with_schedule)
      params_with_lr, state_with_lr = step(
          opt_with_lr, params_with_lr, state_with_lr)
    test_utils.assert_trees_all_close(params_with_schedule, params_with_lr)


class MiMuonTauZeroTest(MuonTest):
  """Every case above on mimuon(tau=0), which is muon exactly."""

  make = staticmethod(functools.partial(mo.mimuon, tau=0.0))
