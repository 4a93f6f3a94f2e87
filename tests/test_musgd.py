"""musgd(): ultralytics' MuSGD (torch) step for step; conv kernels as matrices."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from torch import nn
from ultralytics.engine.trainer import BaseTrainer
from ultralytics.nn.modules import Conv
from ultralytics.nn.modules import DWConv
from ultralytics.optim import muon as ultralytics_muon

import mimuon_optax as mo
from mimuon_optax import _musgd
from mimuon_optax.models.yolo26 import optim as yolo26_optim
from conftest import matrix_with_singular_values
from conftest import polar_factor

CONV = yolo26_optim.CONV_DIMENSION_NUMBERS


class _Head(nn.Module):
  """A Detect-like last layer: box branch cv2, class branch cv3 (3x lr)."""

  def __init__(self, c, nc):
    super().__init__()
    self.cv2 = nn.Conv2d(c, 4, 1)
    self.cv3 = nn.Sequential(DWConv(c, c, 3), nn.Conv2d(c, nc, 1))

  def forward(self, x):
    return self.cv2(x), self.cv3(x)


class _Net(nn.Module):
  """Conv+BN+SiLU blocks, biased 1x1 heads, as ultralytics' DetectionModel."""

  def __init__(self):
    super().__init__()
    self.model = nn.Sequential(Conv(3, 8, 3, 2), Conv(8, 16, 3, 2),
                               _Head(16, 5))

  def forward(self, x):
    return self.model(x)


def _jax_name(torch_name, ndim):
  """``model.2.cv3.1.bn.weight`` -> ``('model', '2', ..., 'scale')``."""
  *path, leaf = torch_name.split('.')
  if leaf == 'weight':
    leaf = 'kernel' if ndim == 4 else 'scale'
  return tuple(path) + (leaf,)


def _to_jax(named_tensors):
  """A nested dict of HWIO kernels, BN scales and biases from torch's."""
  tree = {}
  for name, t in named_tensors:
    x = t.detach().numpy().astype(np.float32)
    x = x.transpose(2, 3, 1, 0) if x.ndim == 4 else x  # OIHW -> HWIO
    *path, leaf = _jax_name(name, x.ndim)
    node = tree
    for key in path:
      node = node.setdefault(key, {})
    node[leaf] = jnp.asarray(x)
  return tree


@pytest.fixture(autouse=True)
def _one_torch_thread():
  """A tiny net: torch's thread pool only costs time on a busy machine."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def _float32_ns(monkeypatch):
  """ultralytics' own NS code, with its bfloat16 cast made a float32 one."""
  monkeypatch.setattr(torch.Tensor, 'bfloat16', lambda t: t.float())


def _run_both(steps, lr, momentum, decay):
  """``steps`` of torch MuSGD (its trainer's groups) and of yolo26_musgd.

  Both take the same gradients (a fixed loss of the torch net at torch's
  weights) and the same warmup: lr 0 -> ``lr`` and momentum 0.8 ->
  ``momentum`` over the first half (ultralytics' trainer sets both per
  group; ours are injected hyperparameters). Returns (ours, torch's)
  weights as two trees of float64 arrays.
  """
  torch.manual_seed(0)
  net = _Net().train()
  opt = BaseTrainer.build_optimizer(
      types.SimpleNamespace(), net, name='MuSGD', lr=lr, momentum=momentum,
      decay=decay)
  assert (opt.muon, opt.sgd) == (0.2, 1.0)
  lr_factors = [group['lr'] / lr for group in opt.param_groups]
  x = torch.randn(2, 3, 16, 16)
  box_target, cls_target = torch.randn(2, 4, 4, 4), torch.randn(2, 5, 4, 4)
  params = _to_jax(net.named_parameters())
  tx = optax.inject_hyperparams(yolo26_optim.yolo26_musgd)(
      lr, momentum, decay)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for t in range(steps):
    warm = min(1.0, (t + 1) / (steps // 2))
    lr_t, momentum_t = lr * warm, 0.8 + (momentum - 0.8) * warm
    for group, factor in zip(opt.param_groups, lr_factors):
      group['lr'], group['momentum'] = lr_t * factor, momentum_t
    state.hyperparams['learning_rate'] = jnp.asarray(lr_t)
    state.hyperparams['momentum'] = jnp.asarray(momentum_t)
    opt.zero_grad()
    box, cls = net(x)
    loss = ((box - box_target)**2).mean() + ((cls - cls_target)**2).mean()
    loss.backward()
    grads = _to_jax((n, p.grad) for n, p in net.named_parameters())
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    opt.step()
  assert update._cache_size() == 1  # pylint: disable=protected-access
  as64 = lambda t: jax.tree.map(lambda a: np.asarray(a, np.float64), t)
  return as64(params), as64(_to_jax(net.named_parameters()))


def _max_relative_error(ours, ref):
  errors = jax.tree.map(
      lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b), ours, ref)
  return max(jax.tree.leaves(errors))


def _side_by_side(first, second):
  """in_turn with the decay read before the Muon step (the wrong order)."""
  def update_fn(updates, state, params=None):
    u1, s1 = first.update(updates, state.first, params)
    u2, s2 = second.update(updates, state.second, params)
    return optax.tree.add(u1, u2), _musgd.InTurnState(s1, s2)
  return optax.GradientTransformation(
      lambda p: _musgd.InTurnState(first.init(p), second.init(p)), update_fn)


def test_matches_ultralytics_musgd_for_20_steps(monkeypatch):
  _float32_ns(monkeypatch)
  lr, momentum, decay = 0.02, 0.937, 0.05  # large decay: its order shows.
  ours, ref = _run_both(20, lr, momentum, decay)
  assert _max_relative_error(ours, ref) < 1e-5
  # The test can fail: with the decay read before the Muon step the
  # weights leave the tolerance.
  monkeypatch.setattr(_musgd, 'in_turn', _side_by_side)
  early, _ = _run_both(20, lr, momentum, decay)
  assert _max_relative_error(early, ref) > 1e-4


def test_conv_kernel_is_the_transposed_ultralytics_matrix(monkeypatch, rng):
  """(kh*kw*in, out) vs ultralytics' (out, in*kh*kw): one polar factor."""
  _float32_ns(monkeypatch)
  w_oihw = rng.standard_normal((6, 4, 3, 3))
  w_hwio = w_oihw.transpose(2, 3, 1, 0)
  theirs = w_oihw.reshape(6, -1)  # columns ordered (in, kh, kw)
  ours = w_hwio.reshape(-1, 6)  # rows ordered (kh, kw, in)
  perm = np.arange(36).reshape(4, 3, 3).transpose(1, 2, 0).reshape(-1)
  np.testing.assert_array_equal(ours, theirs[:, perm].T)
  np.testing.assert_allclose(np.linalg.svd(ours, compute_uv=False),
                             np.linalg.svd(theirs, compute_uv=False),
                             rtol=1e-12)
  np.testing.assert_allclose(polar_factor(ours), polar_factor(theirs)[:, perm].T,
                             atol=1e-12)
  # Newton-Schulz (Jordan's 5 steps, float32) on each side agrees too.
  tx = mo.scale_by_newton_schulz('jordan', 5, 'float32', 1e-7,
                                 weight_dimension_numbers=CONV)
  o_hwio, _ = tx.update(jnp.asarray(w_hwio, jnp.float32), None)
  o_oihw = ultralytics_muon.zeropower_via_newtonschulz5(
      torch.tensor(w_oihw, dtype=torch.float32).reshape(6, -1)).reshape(
          w_oihw.shape)
  np.testing.assert_allclose(np.asarray(o_hwio),
                             o_oihw.numpy().transpose(2, 3, 1, 0), atol=2e-6)


def _conv_params(rng):
  return {'conv': jnp.asarray(rng.standard_normal((3, 3, 4, 6)), jnp.float32),
          'b': jnp.zeros(6)}


_DIMS = {'conv': CONV, 'b': None}


def test_muon_takes_hwio_kernels_as_one_matrix(rng):
  params = _conv_params(rng)
  grads = {'conv': jnp.asarray(rng.standard_normal((3, 3, 4, 6)), jnp.float32),
           'b': jnp.ones(6)}
  kw = dict(learning_rate=0.1, ns_dtype='float32')
  tx = mo.muon(weight_dimension_numbers=_DIMS, **kw)
  updates, _ = tx.update(grads, tx.init(params), params)
  flat = lambda t: {'conv': t['conv'].reshape(36, 6), 'b': t['b']}
  tx2 = mo.muon(**kw)
  updates2, _ = tx2.update(flat(grads), tx2.init(flat(params)), flat(params))
  np.testing.assert_allclose(updates['conv'].reshape(36, 6),
                             updates2['conv'], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('planted_gap', [0.15, 0.25])
def test_mimuon_gate_runs_on_the_flattened_kernel(rng, planted_gap):
  """The gate decides on the (kh*kw*in, out) spectrum (float64 SVD)."""
  s = 1.0 - planted_gap * np.arange(4)  # min gap / s_max = planted_gap
  g = jnp.asarray(matrix_with_singular_values(rng, 18, 4, s).reshape(
      3, 3, 2, 4), jnp.float32)
  sv = np.linalg.svd(np.asarray(g, np.float64).reshape(18, 4),
                     compute_uv=False)[::-1]
  rel_gap = np.min(np.diff(sv)) / sv[-1]
  tau = 0.2
  tx = mo.mimuon(learning_rate=0.1, tau=tau, tau_mode='relative',
                 ns_dtype='float32', weight_dimension_numbers=_DIMS)
  params = {'conv': jnp.zeros((3, 3, 2, 4)), 'b': jnp.zeros(4)}
  _, state = tx.update({'conv': g, 'b': jnp.ones(4)}, tx.init(params), params)
  diag = mo.mix_diagnostics(state)
  assert diag.rel_gap['conv'].shape == ()  # one matrix per kernel
  np.testing.assert_allclose(float(diag.rel_gap['conv']), rel_gap, rtol=1e-4)
  assert bool(diag.orthogonalized['conv']) == (rel_gap >= tau)
  assert abs(rel_gap - tau) > 0.04  # planted on one side of tau


def _musgd_params(rng):
  return _conv_params(rng), _DIMS


def _grads(params, seed):
  keys = jax.random.split(jax.random.key(seed), 2)
  return {'conv': jax.random.normal(keys[0], params['conv'].shape),
          'b': jax.random.normal(keys[1], params['b'].shape)}


def test_musgd_jit_inject_hyperparams_and_zero_gradient(rng):
  params, dims = _musgd_params(rng)
  plain = mo.musgd(0.01, weight_dimension_numbers=dims)
  injected = optax.inject_hyperparams(mo.musgd, static_args=('ns_steps',))(
      learning_rate=0.01, weight_dimension_numbers=dims)
  p1, p2 = params, params
  s1, s2 = plain.init(params), injected.init(params)
  jit_update = jax.jit(injected.update)
  for t in range(3):
    u1, s1 = plain.update(_grads(params, t), s1, p1)
    u2, s2 = jit_update(_grads(params, t), s2, p2)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6,
                                                         atol=1e-8), u1, u2)
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
  assert jit_update._cache_size() == 1  # pylint: disable=protected-access
  s2.hyperparams['learning_rate'] = jnp.asarray(0.02)
  u_double, _ = jit_update(_grads(params, 3), s2, p2)
  u_single, _ = plain.update(_grads(params, 3), s1, p1)
  np.testing.assert_allclose(u_double['b'], 2 * u_single['b'], rtol=1e-6)
  # A zero gradient on a fresh state: NS(0) = 0, so only the decay moves
  # the kernel: -lr * (lambda W + mu * lambda W).
  lr, mu, wd = 0.01, 0.937, 5e-4
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = mo.musgd(lr, mu, wd, weight_dimension_numbers=dims)
  updates, _ = tx.update(zeros, tx.init(params), params)
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
  np.testing.assert_allclose(updates['conv'],
                             -lr * (1 + mu) * wd * params['conv'], rtol=1e-6)
  np.testing.assert_array_equal(updates['b'], jnp.zeros(6))


def test_musgd_bad_input(rng):
  params, dims = _musgd_params(rng)
  tx = mo.musgd(0.01, weight_dimension_numbers=dims)
  with pytest.raises(ValueError, match='params'):
    tx.update(_grads(params, 0), tx.init(params))
  with pytest.raises(ValueError, match='momentum must be'):
    mo.musgd(0.01, momentum=1.0)
  with pytest.raises(ValueError, match=r"\['conv'\].*weight_dimension_numbers"):
    mo.musgd(0.01, param_labels={'conv': 'muon', 'b': 'sgd'}).init(params)


def test_yolo26_groups_and_dimension_numbers():
  net = _Net()
  params = _to_jax(net.named_parameters())
  groups = yolo26_optim.yolo26_param_groups(params)
  dims = yolo26_optim.yolo26_weight_dimension_numbers(params)
  layer0, head = params['model']['0'], groups['model']['2']
  assert groups['model']['0'] == {'conv': {'kernel': 'muon'},
                                  'bn': {'scale': 'bn', 'bias': 'bias'}}
  assert head['cv2'] == {'kernel': 'muon', 'bias': 'bias'}
  assert head['cv3']['0'] == {'conv': {'kernel': 'muon_cls'},
                              'bn': {'scale': 'bn_cls', 'bias': 'bias_cls'}}
  assert dims['model']['0']['conv']['kernel'] == CONV
  assert dims['model']['0']['bn'] == {'scale': None, 'bias': None}
  assert layer0['conv']['kernel'].shape == (3, 3, 3, 8)  # HWIO
  with pytest.raises(ValueError, match='model/0/bn/mean'):
    yolo26_optim.yolo26_param_groups(
        {'model': {'0': {'bn': {'mean': jnp.zeros(8)}}}})
  tx = yolo26_optim.yolo26_musgd(0.01)
  with pytest.raises(ValueError, match='alpha'):
    tx.init({'model': {'0': {'alpha': jnp.zeros(3)}}})



def test_yolo26n_groups_are_ultralytics_trainer_groups():
  """Our labels on the NNX yolo26n = build_optimizer's 8 groups (by shape)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from ultralytics.nn.tasks import DetectionModel  # pylint: disable=g-import-not-at-top
  from mimuon_optax.models.yolo26 import modeling  # pylint: disable=g-import-not-at-top
  net = DetectionModel('yolo26n.yaml', nc=80, verbose=False)
  opt = BaseTrainer.build_optimizer(
      types.SimpleNamespace(), net, name='MuSGD', lr=0.01, momentum=0.937,
      decay=5e-4)
  theirs = {}
  for group in opt.param_groups:
    label = group['param_group'] + ('_cls' if group['lr'] > 0.01 else '')
    theirs[label] = sorted(tuple(p.shape) for p in group['params'])
  model = nnx.eval_shape(lambda: modeling.YOLO26(
      modeling.YOLO26Config.from_scale('n', num_classes=80),
      rngs=nnx.Rngs(0)))
  params = nnx.state(model, nnx.Param)
  ours = {label: [] for label in theirs}
  for label, leaf in zip(
      jax.tree.leaves(yolo26_optim.yolo26_param_groups(params)),
      jax.tree.leaves(params)):
    shape = leaf.shape
    ours[label].append(shape[3::-1][:2] + shape[:2] if len(shape) == 4
                       else shape)
  assert {k: sorted(v) for k, v in ours.items()} == theirs
  assert len(theirs['muon']) + len(theirs['muon_cls']) == 126
