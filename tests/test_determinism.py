"""Determinism: two identical 50-step mimuon() runs give bit-identical params.

On one device, in this process; on the 8-device simulated CPU mesh
(``mesh=``, params sharded over it), in two fresh processes, so that
nothing (compilation cache, thread timing, collective order) carries over
from one run to the other. (The 2-process run is compared with its own
rerun in tests/test_multihost.py.)

  python -m tests.test_determinism mesh   # one mesh run by hand
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 50
DEVICE_FLAG = '--xla_force_host_platform_device_count=8'
# A mesh run: 8-15 s on a busy 2-core CPU (start, compile, 50 steps);
# 10x margin, so the limit catches a hang only.
MESH_TIMEOUT = 150


def _train(mesh=None):
  """{path: params leaf as numpy} after STEPS mimuon() steps."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  import mimuon_optax
  from mimuon_optax import training

  key = jax.random.key(0)
  shapes = {'w1': (32, 64), 'w2': (64, 64), 'w3': (64, 16), 'b': (16,)}
  params = {n: jax.random.normal(jax.random.fold_in(key, i), s) / 8
            for i, (n, s) in enumerate(shapes.items())}
  # tau at the median rho of these momenta: both branches are taken.
  tx = mimuon_optax.mimuon(0.02, tau=0.6, gap_every=2, mesh=mesh)

  def loss_fn(p, batch):
    x, y = batch
    h = jnp.tanh(jnp.tanh(x @ p['w1']) @ p['w2'])
    return jnp.mean((h @ p['w3'] + p['b'] - y) ** 2)

  def batch(step):
    k = jax.random.fold_in(jax.random.key(1), step)
    x = jax.random.normal(k, (64, 32))
    return x, jnp.sin(x[:, :16])

  if mesh is None:
    opt_state = tx.init(params)
    step_fn = training.make_train_step(tx, loss_fn)
  else:
    sharding = {n: NamedSharding(mesh, P(None, 'fsdp') if len(s) == 2
                                 else P()) for n, s in shapes.items()}
    params, opt_state, state_sharding = training.place_train_state(
        params, tx, mesh, sharding)
    step_fn = training.make_train_step(
        tx, loss_fn, mesh=mesh, param_sharding=sharding,
        opt_state_sharding=state_sharding,
        batch_sharding=NamedSharding(mesh, P('data')))
  orthogonalized = 0
  for step in range(STEPS):
    params, opt_state, _ = step_fn(params, opt_state, batch(step))
    orthogonalized += sum(int(np.sum(o)) for o in jax.tree.leaves(
        mimuon_optax.mix_diagnostics(opt_state).orthogonalized))
  out = {n: np.asarray(jax.device_get(x)) for n, x in params.items()}
  return out, orthogonalized / (3 * STEPS)


def _digest(params) -> str:
  h = hashlib.sha256()
  for name in sorted(params):
    h.update(name.encode())
    h.update(params[name].tobytes())
  return h.hexdigest()


def test_single_device_runs_are_bit_identical():
  import numpy as np  # pylint: disable=g-import-not-at-top
  first, orth_fraction = _train()
  second, _ = _train()
  assert 0 < orth_fraction < 1, orth_fraction  # both branches taken
  assert first.keys() == second.keys()
  for name in first:
    np.testing.assert_array_equal(first[name], second[name], err_msg=name)
  assert all(np.isfinite(x).all() for x in first.values())


def _mesh_run() -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {DEVICE_FLAG}")
  proc = subprocess.run([sys.executable, '-m', 'tests.test_determinism',
                         'mesh'], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=MESH_TIMEOUT)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_mesh_runs_are_bit_identical_across_processes():
  first, second = _mesh_run(), _mesh_run()
  assert first['devices'] == 8
  assert 0 < first['orth_fraction'] < 1, first
  assert first == second


def case_mesh() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  mesh = jax.make_mesh((2, 4), ('data', 'fsdp'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  params, orth_fraction = _train(mesh)
  return {'devices': jax.device_count(), 'digest': _digest(params),
          'orth_fraction': orth_fraction}


if __name__ == '__main__':
  print(json.dumps(globals()[f'case_{sys.argv[1]}'](*sys.argv[2:])))
