"""MatrixContext: the matrix settings resolved once and shared."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from optax.contrib import MuonDimensionNumbers

import mimuon_optax
from mimuon_optax import _context
from mimuon_optax import _matrix


def _params(rng):
  return {
      'stack': jnp.asarray(rng.standard_normal((3, 8, 5)), jnp.float32),
      'w': jnp.asarray(rng.standard_normal((8, 5)), jnp.float32),
      'b': jnp.zeros(5),
  }


DIMS = {'stack': MuonDimensionNumbers(1, 2), 'w': MuonDimensionNumbers(0, 1),
        'b': None}


def test_factory_views_each_tree_once(rng, monkeypatch):
  """mimuon chains three matrix transforms; they share one context, so the
  params are turned into matrix views once, not once per transform and step
  (eager: no jit cache hides a recount)."""
  calls = []
  original = _matrix.matrix_views
  monkeypatch.setattr(_matrix, 'matrix_views',
                      lambda *a: calls.append(1) or original(*a))
  params = _params(rng)
  tx = mimuon_optax.mimuon(0.01, muon_weight_dimension_numbers=DIMS,
                           ns_dtype='float32')
  state = tx.init(params)
  for _ in range(2):
    _, state = tx.update(params, state, params)
  assert len(calls) == 1


def test_context_equals_settings(rng):
  """A transform given a context computes what it computes from the same
  settings passed directly (the stand-alone form)."""
  params = _params(rng)
  matrices = {k: v for k, v in params.items() if k != 'b'}
  dims = {k: DIMS[k] for k in matrices}
  direct = mimuon_optax.scale_by_newton_schulz(
      ns_dtype='float32', weight_dimension_numbers=dims)
  shared = mimuon_optax.scale_by_newton_schulz(
      ns_dtype='float32', context=mimuon_optax.MatrixContext(dims))
  a, _ = direct.update(matrices, direct.init(matrices))
  b, _ = shared.update(matrices, shared.init(matrices))
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a, b)


def test_context_and_settings_together_is_an_error():
  ctx = mimuon_optax.MatrixContext()
  with pytest.raises(ValueError, match='weight_dimension_numbers'):
    mimuon_optax.scale_by_newton_schulz(
        context=ctx, weight_dimension_numbers=MuonDimensionNumbers(1, 2))
  with pytest.raises(ValueError, match='mesh'):
    mimuon_optax.mimuon_mix(mimuon_optax.scale_by_newton_schulz(),
                            context=ctx, mesh_axes='x')


def test_run_groups_equal_shapes_in_one_call(rng):
  """Locally, stacks of equal shape share one call (batch_same_shapes) and
  each output lands back at its own stack."""
  stacks = [jnp.asarray(rng.standard_normal((b, 4, 3)), jnp.float32)
            for b in (1, 2)] + [jnp.ones((1, 3, 3))]
  seen = []

  def fn(xs):
    seen.append([x.shape for x in xs])
    return [x * 2 for x in xs]

  out = _context.MatrixContext().run(fn, stacks)
  assert seen == [[(3, 4, 3), (1, 3, 3)]]
  for x, y in zip(stacks, out):
    np.testing.assert_array_equal(y, x * 2)
  seen.clear()
  _context.MatrixContext(batch_same_shapes=False).run(fn, stacks)
  assert seen == [[(1, 4, 3), (2, 4, 3), (1, 3, 3)]]


def test_bad_mesh_axes_fail_when_the_context_is_built():
  mesh = jax.make_mesh((1,), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  with pytest.raises(ValueError, match='mesh_axes'):
    mimuon_optax.MatrixContext(mesh=mesh, mesh_axes='model')
