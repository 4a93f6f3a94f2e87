"""muon/mimuon on a simulated 8-device CPU mesh, and Orbax checkpoints.

Each test runs one case of this file in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``: the flag only acts
before jax initializes its CPU backend, and a pytest(-xdist) worker may have
done that already for other test files. The cases import jax themselves;
the module's top level imports nothing of it.

  python -m tests.test_sharding step_matches mimuon   # run one case by hand
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

NUM_DEVICES = 8
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE_FLAG = f'--xla_force_host_platform_device_count={NUM_DEVICES}'


# Each case's limit is >= 5x its time on a busy 2-core CPU (load 3-4,
# 2026-11-30), given next to it: it catches a hang, never slowness.
def _run_case(*args: str, timeout: float) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {DEVICE_FLAG}")
  proc = subprocess.run([sys.executable, '-m', 'tests.test_sharding', *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)
  noise = re.compile(r'Involuntary full rematerialization')
  stderr = '\n'.join(l for l in proc.stderr.splitlines() if not noise.search(l))
  assert proc.returncode == 0, f'{proc.stdout[-3000:]}\n{stderr[-6000:]}'
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize('optimizer', ['muon', 'mimuon'])
def test_sharded_steps_match_unsharded(optimizer):
  # A hang (jaxlib's CPU LAPACK kernels against GSPMD collectives, see
  # _platform.one_matrix_at_a_time) fails here by timeout instead of
  # blocking the suite.
  result = _run_case('step_matches', optimizer, timeout=450)  # mimuon 59 s
  assert result['max_err_mesh'] < 1e-5
  # Plain GSPMD (no mesh=) finishes (the subprocess has a timeout) and agrees.
  assert result['max_err_gspmd'] < 1e-5
  if optimizer == 'mimuon':
    assert 0 < result['orth_fraction'] < 1  # both branches were taken


def test_distributed_ns_has_no_gram_all_reduce():
  result = _run_case('hlo', timeout=300)  # 12 s
  assert result['distributed_gram_all_reduces'] == 0
  assert result['gspmd_gram_all_reduces'] >= 6  # >= one per NS iteration
  # Communication of the distributed path does not grow with ns_steps.
  assert result['distributed_collectives_3'] == result[
      'distributed_collectives_6']
  assert result['gspmd_collectives_6'] > result['gspmd_collectives_3']
  assert result['mimuon_distributed_gram_all_reduces'] == 0


@pytest.mark.slow
def test_qwen3_sharded_train_step_and_checkpoint():
  result = _run_case('qwen3', timeout=600)  # 80 s
  for layout in ('fsdp', 'layers'):
    assert result[layout]['max_loss_err'] < 1e-5
    assert result[layout]['max_param_err'] < 1e-5
  assert result['fsdp']['resumed_bit_identical']


@pytest.mark.slow
def test_train_lm_mesh_flags():
  """`experiments.train_lm --mesh`: same training as one device, resumable."""
  result = _run_case('train_lm', timeout=900)  # 145 s
  assert result['single_last'] < result['single_first'] - 0.5  # it learns
  for layout in ('fsdp', 'layers'):
    r = result[layout]
    assert r['steps'] == list(range(1, 9)), layout
    # bf16 Newton-Schulz on differently partitioned matmuls: rounding-level
    # drift, larger where a near-tau gate flips on the 2x4 mesh.
    assert r['max_rel_loss_err'] < 3e-3, (layout, r)
    assert r['val_loss_rel_err'] < 3e-3, (layout, r)
    # tau=0.15 (spacing) sends some matrices down each branch (88% Muon);
    # gates that sit near tau may flip under that drift, so the fractions
    # agree within 0.1. (At the default 0.3, with ~70% Muon, more gates sit
    # near tau and one flip moved the 'layers' loss by 4.6e-3.)
    assert 0 < r['single_orth_frac'] < 1, r
    assert abs(r['orth_frac'] - r['single_orth_frac']) < 0.1, r
  assert result['resumed_bit_identical']
  assert result['resumed_losses_equal']
  assert result['one_device_resume_rel_loss_err'] < 3e-3, result


def test_qwen3_param_specs():
  from jax.sharding import PartitionSpec as P
  from mimuon_optax.models.qwen3 import Qwen3Config
  from mimuon_optax.models.qwen3 import Qwen3ForCausalLM
  from mimuon_optax.models.qwen3 import sharding
  from flax import nnx
  import jax

  for scan in (False, True):
    config = Qwen3Config.tiny(scan_layers=scan)
    params = nnx.as_pure(nnx.eval_shape(
        lambda: nnx.split(Qwen3ForCausalLM(config, rngs=nnx.Rngs(0)),
                          nnx.Param)[1]))
    for shard_layers in (False, True):
      specs = {jax.tree_util.keystr(k): v for k, v in
               jax.tree_util.tree_flatten_with_path(sharding.param_specs(
                   params, 4, shard_layers=shard_layers))[0]}
      layer = '' if scan else '[0]'
      q = specs[f"['model']['layers']{layer}['self_attn']['q_proj']['kernel']"]
      gate = specs[f"['model']['layers']{layer}['mlp']['gate_proj']['kernel']"]
      if scan and shard_layers:  # (L, D, H, Dh), (L, D, F): layer axis
        assert q == P('fsdp') and gate == P('fsdp')
      elif scan:  # D=128 and F=384 are the largest axes after L
        assert q == P(None, 'fsdp') and gate == P(None, None, 'fsdp')
      else:
        assert q == P('fsdp') and gate == P(None, 'fsdp')
      assert specs["['model']['embed_tokens']['embedding']"] == P('fsdp')
      assert specs["['model']['norm']['scale']"] == P()


def test_mesh_argument_is_checked_at_construction():
  import jax
  import mimuon_optax as mo

  auto = jax.make_mesh((1,), ('x',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  explicit = jax.make_mesh((1,), ('x',),
                           axis_types=(jax.sharding.AxisType.Explicit,))
  with pytest.raises(ValueError, match='must name axes of the mesh'):
    mo.muon(0.1, mesh=auto, mesh_axes='model')
  with pytest.raises(ValueError, match='AxisType.Auto'):
    mo.mimuon(0.1, mesh=explicit)


def test_one_device_mesh_matches_and_injects():
  """In-process (one CPU device): mesh= changes nothing but the placement."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  import mimuon_optax as mo

  mesh = jax.make_mesh((1,), ('x',), axis_types=(jax.sharding.AxisType.Auto,))
  keys = jax.random.split(jax.random.key(0), 3)
  params = {'w': jax.random.normal(keys[0], (16, 24)),
            'layers': jax.random.normal(keys[1], (3, 24, 8)),
            'b': jnp.zeros(8)}
  grads = jax.tree.map(lambda p: jnp.sin(p) + 0.1, params)
  dims = {'w': mo.MuonDimensionNumbers(0, 1),
          'layers': mo.MuonDimensionNumbers(1, 2), 'b': None}
  static = ('ns_steps', 'weight_dimension_numbers', 'mesh', 'mesh_axes')
  outs = []
  for mesh_arg in (None, mesh):
    tx = optax.inject_hyperparams(mo.mimuon, static_args=static)(
        learning_rate=0.02, tau=1e-3, ns_dtype='float32',
        weight_dimension_numbers=dims, mesh=mesh_arg)
    state = tx.init(params)
    for _ in range(2):
      updates, state = jax.jit(tx.update)(grads, state, params)
    outs.append((updates, mo.mix_diagnostics(state).orthogonalized))
  for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
    np.testing.assert_allclose(a, b, atol=1e-6)


# ---------------------------------------------------------------------------
# Cases, run in the subprocess.
# ---------------------------------------------------------------------------


def _mesh():
  import jax
  assert jax.device_count() == NUM_DEVICES, jax.devices()
  from mimuon_optax.models.qwen3 import sharding
  return sharding.make_mesh(data=2, fsdp=4)


def _same_shardings(a, b) -> bool:
  import jax
  same = jax.tree.map(
      lambda x, y: x.sharding.is_equivalent_to(y.sharding, x.ndim), a, b)
  return all(jax.tree.leaves(same))


def _max_err(a, b) -> float:
  import jax
  import numpy as np
  errs = [0.0]
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    diff = np.where(x == y, 0.0, np.abs(x - y))  # inf == inf counts as equal
    errs.append(float(np.max(diff, initial=0.0)))
  return max(errs)


def case_step_matches(optimizer: str) -> dict:
  """5 steps: single device vs FSDP / layer-stacked shardings on 2x4."""
  import jax
  import numpy as np
  import optax
  from jax.sharding import NamedSharding, PartitionSpec as P
  import mimuon_optax as mo
  from mimuon_optax import MuonDimensionNumbers as DN

  mesh = _mesh()
  shapes = {  # name: (shape, spec, dimension numbers)
      'w_in': ((64, 192), P(None, 'fsdp'), DN(0, 1)),   # FSDP, fan-out
      'w_out': ((192, 64), P('fsdp', None), DN(0, 1)),  # FSDP, fan-in
      'w_sq': ((64, 64), P('fsdp', None), DN(0, 1)),
      'layers_a': ((4, 64, 96), P('fsdp'), DN(1, 2)),  # layer axis
      'layers_b': ((8, 96, 64), P(('data', 'fsdp')), DN(1, 2)),
      'layers_c': ((4, 128, 64), P(None, 'fsdp'), DN(1, 2)),  # FSDP stack
      'embed': ((256, 64), P('fsdp'), None),  # AdamW
      'bias': ((64,), P(), None),  # AdamW
  }
  keys = iter(jax.random.split(jax.random.key(0), 64))
  params = {n: jax.random.normal(next(keys), s) * 0.1
            for n, (s, _, _) in shapes.items()}
  grads = [{n: jax.random.normal(next(keys), s) for n, (s, _, _) in
            shapes.items()} for _ in range(5)]
  dims = {n: d for n, (_, _, d) in shapes.items()}
  shardings = {n: NamedSharding(mesh, p) for n, (_, p, _) in shapes.items()}
  make = {'muon': mo.muon, 'mimuon': mo.mimuon}[optimizer]  # default tau
  kwargs = dict(learning_rate=0.02, ns_dtype='float32', weight_decay=0.1,
                weight_dimension_numbers=dims)

  def train(tx, sharded):
    p = jax.device_put(params, shardings) if sharded else params
    if sharded:
      state_sharding = mo.opt_state_shardings(tx.init, p, shardings, mesh)
      state = jax.jit(tx.init, out_shardings=state_sharding)(p)
      # Param copies in the state (momentum, Adam moments) follow the params.
      follows = jax.tree.map(lambda s: s.spec != P(), state_sharding)
      assert sum(jax.tree.leaves(follows)) == 8, state_sharding
    else:
      state = tx.init(p)

    @jax.jit  # plain jit: shardings come from the arguments
    def step(p, state, g):
      updates, state = tx.update(g, state, p)
      return optax.apply_updates(p, updates), state

    diagnostics = []
    for g in grads:
      g = jax.device_put(g, shardings) if sharded else g
      new_p, new_state = step(p, state, g)
      if sharded:  # GSPMD keeps the params' and the momentum's shardings.
        assert _same_shardings(p, new_p)
        assert _same_shardings(
            [x for x, f in zip(jax.tree.leaves(state), jax.tree.leaves(follows))
             if f],
            [x for x, f in zip(jax.tree.leaves(new_state),
                               jax.tree.leaves(follows)) if f])
      p, state = new_p, new_state
      if optimizer == 'mimuon':
        diagnostics.append(mo.mix_diagnostics(state))
    return p, state, diagnostics

  ref_p, ref_state, ref_diag = train(make(**kwargs), sharded=False)
  mesh_p, mesh_state, mesh_diag = train(make(mesh=mesh, **kwargs),
                                        sharded=True)
  result = {'max_err_mesh': max(_max_err(ref_p, mesh_p),
                                _max_err(ref_state, mesh_state))}
  # Plain GSPMD on the same shardings (no mesh=): correct, just slower.
  gspmd_p, gspmd_state, gspmd_diag = train(make(**kwargs), sharded=True)
  result['max_err_gspmd'] = max(_max_err(ref_p, gspmd_p),
                                _max_err(ref_state, gspmd_state))
  if optimizer == 'mimuon':
    orth = []
    from mimuon_optax._mix import DEFAULT_TAU as tau
    for ref, got, gspmd in zip(ref_diag, mesh_diag, gspmd_diag):
      for r, m, g, rho in zip(jax.tree.leaves(ref.orthogonalized),
                              jax.tree.leaves(got.orthogonalized),
                              jax.tree.leaves(gspmd.orthogonalized),
                              jax.tree.leaves(ref.rho)):
        np.testing.assert_array_equal(r, m)
        np.testing.assert_array_equal(r, g)
        # Decisions far enough from tau not to flip on float rounding.
        assert np.all(np.abs(np.asarray(rho) / tau - 1) > 1e-3), rho
        orth.extend(np.ravel(r).tolist())
    result['orth_fraction'] = float(np.mean(orth))
  return result


def _gram_all_reduces(hlo: str, grams: set[tuple[int, int]]) -> int:
  """All-reduces in compiled HLO with an operand whose last dims are a Gram."""
  count = 0
  for line in hlo.splitlines():
    match = re.search(r'= (.*?) all-reduce(?:-start)?\(', line)
    if not match:
      continue
    for dims in re.findall(r'\[([\d,]*)\]', match.group(1)):
      dims = tuple(int(d) for d in dims.split(',') if d)
      if len(dims) >= 2 and dims[-2:] in grams:
        count += 1
  return count


def _collectives(hlo: str) -> int:
  return len(re.findall(
      r' (?:all-reduce|all-gather|all-to-all|collective-permute|'
      r'reduce-scatter)(?:-start)?\(', hlo))


def case_hlo() -> dict:
  """Compiled HLO of one muon step, distributed vs plain GSPMD."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P
  import mimuon_optax as mo
  from mimuon_optax import MuonDimensionNumbers as DN

  mesh = _mesh()
  # FSDP on the long side: X X^T contracts over the sharded axis, so plain
  # GSPMD all-reduces a 96x96 Gram in every Newton-Schulz iteration.
  params = {'w': jnp.ones((96, 320)), 'layers': jnp.ones((4, 320, 96))}
  specs = {'w': P(None, 'fsdp'), 'layers': P(None, 'fsdp', None)}
  dims = {'w': DN(0, 1), 'layers': DN(1, 2)}
  shardings = {n: NamedSharding(mesh, s) for n, s in specs.items()}
  params = jax.device_put(params, shardings)
  grams = {(96, 96)}

  def compiled_hlo(tx):
    state = jax.eval_shape(tx.init, params)
    step = lambda p, s, g: tx.update(g, s, p)
    return jax.jit(step).lower(params, state, params).compile().as_text()

  result = {}
  for steps in (3, 6):
    kwargs = dict(learning_rate=0.02, ns_coeffs='jordan', ns_steps=steps,
                  ns_dtype='float32', weight_dimension_numbers=dims)
    distributed = compiled_hlo(mo.muon(mesh=mesh, **kwargs))
    gspmd = compiled_hlo(mo.muon(**kwargs))
    result[f'distributed_collectives_{steps}'] = _collectives(distributed)
    result[f'gspmd_collectives_{steps}'] = _collectives(gspmd)
    if steps == 6:
      result['distributed_gram_all_reduces'] = _gram_all_reduces(
          distributed, grams)
      result['gspmd_gram_all_reduces'] = _gram_all_reduces(gspmd, grams)
      result['mimuon_distributed_gram_all_reduces'] = _gram_all_reduces(
          compiled_hlo(mo.mimuon(mesh=mesh, **kwargs)), grams)
  return result


def case_qwen3() -> dict:
  """Tiny Qwen3 train steps on 2x4 (two layouts) vs one device; resume."""
  import tempfile
  import jax
  from flax import nnx
  import mimuon_optax as mo
  from mimuon_optax import checkpoint
  from mimuon_optax import training
  from mimuon_optax.models import qwen3
  from mimuon_optax.models.qwen3 import sharding

  mesh = _mesh()
  config = qwen3.Qwen3Config.tiny(
      scan_layers=True, vocab_size=128, hidden_size=64, intermediate_size=128,
      num_attention_heads=2, num_key_value_heads=1)
  model = qwen3.Qwen3ForCausalLM(config, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  params = nnx.as_pure(params)
  dims = qwen3.qwen3_weight_dimension_numbers(params)
  tokens = jax.random.randint(jax.random.key(1), (3, 8, 17), 0,
                              config.vocab_size)
  kwargs = dict(learning_rate=1e-2, ns_dtype='float32',
                weight_dimension_numbers=dims)

  # Reference: one device, no mesh.
  tx = mo.mimuon(**kwargs)
  ref_params, ref_state = params, tx.init(params)

  ref_step = training.make_train_step(tx, qwen3.next_token_loss,
                                      graphdef=graphdef, donate=False)

  ref_losses = []
  for batch in tokens:
    ref_params, ref_state, loss = ref_step(ref_params, ref_state, batch)
    ref_losses.append(float(loss))

  result = {}
  for layout in ('fsdp', 'layers'):
    param_sharding = sharding.param_shardings(
        params, mesh, shard_layers=layout == 'layers')
    tx = mo.mimuon(mesh=mesh, **kwargs)
    p, s, state_sharding = training.place_train_state(params, tx, mesh,
                                                      param_sharding)
    step = training.make_train_step(
        tx, qwen3.next_token_loss, graphdef=graphdef, mesh=mesh,
        param_sharding=param_sharding, opt_state_sharding=state_sharding,
        batch_sharding=sharding.batch_sharding(mesh), donate=False)
    losses = []
    for i, batch in enumerate(tokens):
      new_p, new_s, loss = step(p, s, batch)
      assert _same_shardings(p, new_p) and _same_shardings(s, new_s)
      if i == 1 and layout == 'fsdp':
        with tempfile.TemporaryDirectory() as tmp:
          checkpoint.save_state(tmp, 2, new_p, new_s)
          restored_step, restored_p, restored_s = checkpoint.restore_state(
              tmp, checkpoint.abstract_like(new_p, new_s))
        assert restored_step == 2
        assert _same_shardings(new_p, restored_p)
        assert _same_shardings(new_s, restored_s)
      p, s = new_p, new_s
      losses.append(float(loss))
    result[layout] = {
        'max_loss_err': max(abs(a - b) for a, b in zip(ref_losses, losses)),
        'max_param_err': _max_err(ref_params, p),
    }
    if layout == 'fsdp':  # The third step again, from the checkpoint.
      resumed = step(restored_p, restored_s, tokens[2])
      result[layout]['resumed_bit_identical'] = all(
          bool((a == b).all()) for a, b in zip(
              jax.tree.leaves((p, s, losses[-1])), jax.tree.leaves(resumed)))
  return result


def case_train_lm() -> dict:
  """experiments/train_lm on --mesh 2x4 and 4x2 vs one device; resume."""
  import shutil
  import tempfile
  import numpy as np
  from experiments.harness import reporting
  from experiments import train_lm
  from mimuon_optax import checkpoint

  tmp = tempfile.mkdtemp()

  def run(name, **kw):
    cfg = train_lm.TrainLMConfig(
        out=f'{tmp}/{name}', preset='micro', optimizer='mimuon', steps=8,
        seq_len=32, batch_size=8, eval_batches=1, warmup_steps=2, log_every=1,
        eval_every=4, checkpoint_every=4, progress=False, plot=False,
        scan_layers=True, cache_dir=f'{tmp}/cache', tau=0.15, **kw)
    train_lm.run(cfg)
    return reporting.read_jsonl(f'{tmp}/{name}/metrics.jsonl')

  def losses(records):
    return np.array([r['train_loss'] for r in records])

  def orth(records):  # fraction of matrix steps orthogonalized
    return float(np.mean([r['orth_frac_mean'] for r in records]))

  def ckpt(name):
    return checkpoint.load_numpy(f'{tmp}/{name}/ckpt')

  single = run('single')
  result = {'single_first': single[0]['train_loss'],
            'single_last': single[-1]['train_loss']}
  runs = {}
  for name, kw in (('fsdp', dict(mesh='2x4')),
                   ('layers', dict(mesh='4x2', mesh_shard_layers=True))):
    records = runs[name] = run(name, **kw)
    result[name] = {
        'steps': [r['step'] for r in records],
        'max_rel_loss_err': float(np.max(np.abs(
            losses(records) / losses(single) - 1))),
        'val_loss_rel_err': abs(records[-1]['val_loss'] /
                                single[-1]['val_loss'] - 1),
        'orth_frac': orth(records),
        'single_orth_frac': orth(single),
    }
  # Interrupted at step 4 on the 2x4 mesh, resumed on it: bit for bit.
  run('resumed', mesh='2x4', stop_at=4)
  shutil.copytree(f'{tmp}/resumed', f'{tmp}/to_one_device')
  resumed = run('resumed', mesh='2x4', resume=True)
  # The same checkpoint resumed on one device.
  result['one_device_resume_rel_loss_err'] = float(np.max(np.abs(
      losses(run('to_one_device', resume=True)) / losses(single) - 1)))
  a, b = ckpt('fsdp'), ckpt('resumed')
  result['resumed_bit_identical'] = a.keys() == b.keys() and all(
      np.array_equal(a[k], b[k]) for k in a)
  result['resumed_losses_equal'] = bool(
      np.array_equal(losses(resumed), losses(runs['fsdp'])))
  return result


if __name__ == '__main__':
  _case, *_args = sys.argv[1:]
  print(json.dumps(globals()[f'case_{_case}'](*_args)))
