"""Checkpoint faults: a process killed while saving, a damaged checkpoint.

The training runs in subprocesses (``python -m tests.test_checkpoint_faults
train OUT``): mimuon() on a few matrices, a batch that depends only on the
step, an Orbax checkpoint after every step (``mimuon_optax.checkpoint``),
resuming from the latest one at start. The test SIGKILLs it at a random
moment inside a save, restarts it, and compares the losses and final
params with an uninterrupted run's, bit for bit.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from mimuon_optax import checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 8
# A run of this file's `train` case: 11 s on a busy 2-core CPU (load 5;
# start, compile, 8 steps and saves); 10x margin: it catches a hang only.
RUN_TIMEOUT = 120
# The save to kill, at a random moment drawn from SEED.
KILL_STEP = 5
SEED = int(os.environ.get('CHECKPOINT_FAULT_SEED', '0'))


def _train_cmd(out):
  return [sys.executable, '-m', 'tests.test_checkpoint_faults', 'train',
          str(out)]


def _env():
  return dict(os.environ, JAX_PLATFORMS='cpu')


def _run(out):
  proc = subprocess.run(_train_cmd(out), cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=RUN_TIMEOUT)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc.stdout


def _records(out):
  """{step: loss} of every line the run(s) logged; later lines win."""
  lines = (pathlib.Path(out) / 'losses.jsonl').read_text().splitlines()
  return {r['step']: r['loss'] for r in map(json.loads, lines)}


def _killed_during_save(out, fraction):
  """A run that SIGKILLs itself `fraction` of the way into save KILL_STEP.

  `fraction` is in units of the median earlier save, so 0..1.2 covers the
  first to past the last byte. Returns the last step whose save finished.
  """
  proc = subprocess.run(
      _train_cmd(out), cwd=ROOT, capture_output=True, text=True,
      timeout=RUN_TIMEOUT,
      env=dict(_env(), CHECKPOINT_KILL=f'{KILL_STEP}:{fraction}'))
  assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
  ends = [int(line.split()[1]) for line in proc.stdout.splitlines()
          if line.startswith('save_end')]
  assert 'save_begin %d' % KILL_STEP in proc.stdout
  return max(ends)


@pytest.mark.slow
def test_killed_during_save_resumes_from_last_complete_checkpoint(tmp_path):
  rng = random.Random(SEED)
  _run(tmp_path / 'reference')
  reference = _records(tmp_path / 'reference')
  assert sorted(reference) == list(range(1, STEPS + 1))
  final = checkpoint.load_numpy(tmp_path / 'reference' / 'ckpt', STEPS)

  # Two kills: at a random moment in the first and in the second half.
  for attempt, (low, high) in enumerate([(0, 0.6), (0.6, 1.2)]):
    out = tmp_path / f'killed_{attempt}'
    saved = _killed_during_save(out, rng.uniform(low, high))
    assert saved in (KILL_STEP - 1, KILL_STEP)
    latest = checkpoint.latest_step(out / 'ckpt')
    # The save in progress either finished (renamed) or is ignored.
    assert latest in (KILL_STEP - 1, KILL_STEP), latest
    stdout = _run(out)
    assert f'resumed {latest}' in stdout, stdout
    resumed = _records(out)
    assert resumed == reference, (SEED, attempt, resumed, reference)
    state = checkpoint.load_numpy(out / 'ckpt', STEPS)
    assert state.keys() == final.keys()
    for key in final:
      np.testing.assert_array_equal(state[key], final[key], err_msg=key)


def _two_steps(path):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import mimuon_optax  # pylint: disable=g-import-not-at-top
  params = {'w': jnp.arange(96.0).reshape(8, 12), 'b': jnp.zeros(12)}
  opt_state = mimuon_optax.mimuon(0.02).init(params)
  for step in (1, 2):
    checkpoint.save_state(path, step, params, opt_state)
  return checkpoint.abstract_like(params, opt_state)


def _truncate(file):
  data = pathlib.Path(file).read_bytes()
  pathlib.Path(file).write_bytes(data[:len(data) // 2])


def _flip_bytes(file):
  data = bytearray(pathlib.Path(file).read_bytes())
  for i in range(len(data) // 3, len(data) // 3 + 8):
    data[i] ^= 0xFF
  pathlib.Path(file).write_bytes(bytes(data))


def _data_files(step_dir):
  files = glob.glob(str(step_dir / 'default' / 'd' / '*'))
  assert files
  return files


DAMAGE = {  # name -> (how, what the error says)
    'newest_step_empty': (lambda d: (d / '3').mkdir(), 'missing default/'),
    'metadata_missing': (
        lambda d: (d / '2' / 'default' / '_METADATA').unlink(),
        'missing default/_METADATA'),
    'metadata_truncated': (
        lambda d: _truncate(d / '2' / 'default' / '_METADATA'),
        'not valid JSON'),
    'manifest_truncated': (
        lambda d: _truncate(d / '2' / 'default' / 'manifest.ocdbt'),
        'DATA_LOSS'),
    'data_truncated': (
        lambda d: [_truncate(f) for f in _data_files(d / '2')],
        'OUT_OF_RANGE'),
    'data_altered': (
        lambda d: [_flip_bytes(f) for f in _data_files(d / '2')],
        'DATA_LOSS'),
    'data_missing': (
        lambda d: [os.remove(f) for f in _data_files(d / '2')], 'NOT_FOUND'),
}


def test_damaged_checkpoint_raises_naming_step_and_problem(tmp_path):
  target = _two_steps(tmp_path / 'good')
  for name, (damage, says) in DAMAGE.items():
    path = tmp_path / name
    shutil.copytree(tmp_path / 'good', path)
    damage(path)
    step = checkpoint.latest_step(path)
    with pytest.raises(ValueError) as error:
      checkpoint.restore_state(path, target)
    message = str(error.value)
    assert f"Checkpoint '{path / str(step)}' is incomplete or damaged" in (
        message), (name, message)
    assert says in message, (name, message)
    # The step before it is still there, and restores when asked for.
    assert checkpoint.restore_state(path, target, step=1)[0] == 1
    with pytest.raises(ValueError, match='incomplete or damaged'):
      checkpoint.load_numpy(path, step)
  # An intact step that does not fit the target is not called damaged.
  other = {**target, 'params': {**target['params'], 'w': jax.ShapeDtypeStruct(
      (12, 8), target['params']['w'].dtype)}}
  with pytest.raises(ValueError, match=r"good/2' does not restore onto this"
                     r" target .*\(12, 8\)"):
    checkpoint.restore_state(tmp_path / 'good', other)


def test_directory_without_checkpoint_is_not_a_fresh_start(tmp_path):
  assert checkpoint.latest_step(tmp_path / 'absent') is None
  (tmp_path / 'empty').mkdir()
  assert checkpoint.latest_step(tmp_path / 'empty') is None
  # Only an unfinished save (a killed first save): no checkpoint yet.
  (tmp_path / 'unfinished' / '1.orbax-checkpoint-tmp-17').mkdir(parents=True)
  assert checkpoint.latest_step(tmp_path / 'unfinished') is None
  # Files, but no step: refuse rather than start afresh over them.
  (tmp_path / 'other').mkdir()
  (tmp_path / 'other' / 'notes.txt').write_text('x')
  with pytest.raises(ValueError, match=r"other' holds no checkpoint.*notes"):
    checkpoint.latest_step(tmp_path / 'other')


@pytest.mark.parametrize('scan_layers', [False, True])
def test_hf_safetensors_mismatches_are_listed_in_one_error(tmp_path,
                                                            scan_layers):
  """A wrong shape, a missing and an extra tensor: one error names all."""
  # pylint: disable=g-import-not-at-top
  import safetensors.numpy
  from flax import nnx
  from mimuon_optax.models import qwen3

  model = qwen3.Qwen3ForCausalLM(qwen3.Qwen3Config.tiny(), rngs=nnx.Rngs(0))
  qwen3.save_hf_checkpoint(model, tmp_path)
  file = tmp_path / 'model.safetensors'
  tensors = safetensors.numpy.load_file(file)
  wrong, missing = ('model.layers.0.self_attn.k_proj.weight',
                    'model.layers.1.mlp.up_proj.weight')
  expected = {'wrong': tensors[wrong].shape, 'missing': tensors[missing].shape}
  tensors[wrong] = np.zeros((3, 5), np.float32)
  del tensors[missing]
  tensors['model.layers.0.mlp.extra.weight'] = np.zeros((7, 2), np.float32)
  safetensors.numpy.save_file(tensors, file, metadata={'format': 'pt'})
  with pytest.raises(ValueError) as error:
    qwen3.load_hf_checkpoint(tmp_path, scan_layers=scan_layers)
  message = str(error.value)
  assert str(tmp_path) in message and '(3 problems)' in message, message
  assert (f"wrong shape for '{wrong}': expected {expected['wrong']}, got"
          ' (3, 5)') in message, message
  assert f"missing tensor '{missing}' {expected['missing']}" in message
  assert "unexpected tensor 'model.layers.0.mlp.extra.weight' (7, 2)" in (
      message)


def case_train(out: str) -> None:
  """Trains STEPS steps, saving after each, resuming from the latest save."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import mimuon_optax
  import optax

  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  ckpt = out / 'ckpt'
  key = jax.random.key(0)
  params = {'w1': jax.random.normal(key, (32, 48)) / 6,
            'w2': jax.random.normal(jax.random.fold_in(key, 1), (48, 16)) / 7,
            'b': jnp.zeros(16)}
  tx = mimuon_optax.mimuon(0.02)
  opt_state = tx.init(params)

  def loss_fn(p, step):
    k = jax.random.fold_in(jax.random.key(1), step)
    x = jax.random.normal(k, (64, 32))
    y = jnp.sin(x[:, :16])
    return jnp.mean((jnp.tanh(x @ p['w1']) @ p['w2'] + p['b'] - y) ** 2)

  @jax.jit
  def train_step(p, s, step):
    loss, grads = jax.value_and_grad(loss_fn)(p, step)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss

  kill_step, kill_at = os.environ.get('CHECKPOINT_KILL', '0:0').split(':')
  save_s = []
  start = checkpoint.latest_step(ckpt) or 0
  if start:
    start, params, opt_state = checkpoint.restore_state(
        ckpt, checkpoint.abstract_like(params, opt_state))
  print('resumed', start, flush=True)
  with open(out / 'losses.jsonl', 'a') as log:
    for step in range(start, STEPS):
      params, opt_state, loss = train_step(params, opt_state, step)
      log.write(json.dumps({'step': step + 1, 'loss': float(loss)}) + '\n')
      log.flush()
      print('save_begin', step + 1, flush=True)
      killer = None
      if step + 1 == int(kill_step):  # SIGKILL from a timer, mid-save
        killer = threading.Timer(float(kill_at) * float(np.median(save_s)), os.kill,
                                 (os.getpid(), signal.SIGKILL))
        killer.start()
      t0 = time.perf_counter()
      checkpoint.save_state(ckpt, step + 1, params, opt_state, keep=2)
      save_s.append(time.perf_counter() - t0)
      print('save_end', step + 1, flush=True)
      if killer is not None:
        killer.join()  # a kill after the save: before the next step


if __name__ == '__main__':
  globals()[f'case_{sys.argv[1]}'](*sys.argv[2:])
