"""python -m benchmarks.accelerator_check runs on CPU and writes the promised schema."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ITEM_NAMES = ['environment', 'ns_bands', 'gram_ns', 'mimuon_tau0',
              'gate_decisions', 'qwen3_forward', 'step_time', 'train_step',
              'flop_floor', 'spectrum_cost']
BOOKKEEPING = {'status', 'wall_s', 'peak_bytes_in_use'}
pytestmark = pytest.mark.slow  # One whole benchmark run (~1 min).


def run_check(out, budget_s):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, '-m', 'benchmarks.accelerator_check', '--preset', 'small', '--budget-s',
       str(budget_s), '--out', str(out)],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (json_path,) = out.glob('accelerator_check_*_small.json')
  (md_path,) = out.glob('accelerator_check_*_small.md')
  assert str(json_path) in proc.stdout and str(md_path) in proc.stdout
  assert '| item | status | measurement | value |' in md_path.read_text()
  return json.loads(json_path.read_text())


def check_schema(report):
  meta, items = report['meta'], report['items']
  assert meta['preset'] == 'small' and meta['backend'] == 'cpu'
  assert meta['items'] == ITEM_NAMES and list(items) == ITEM_NAMES
  assert meta['complete']
  for name, item in items.items():
    assert item['status'] in ('ok', 'skipped', 'error'), name
    assert isinstance(item['wall_s'], float), name
    assert 'peak_bytes_in_use' in item, name
    if item['status'] == 'ok':
      assert set(item) - BOOKKEEPING, f'{name}: ok without measurements'
    else:
      assert isinstance(item['reason'], str) and item['reason'].strip(), name


@pytest.fixture(scope='module')
def small_report(tmp_path_factory):
  return run_check(tmp_path_factory.mktemp('accelerator'), 60)


def test_small_preset_writes_the_schema(small_report):
  check_schema(small_report)
  items = small_report['items']
  assert items['environment']['status'] == 'ok'
  assert items['environment']['versions']['jax']
  measured = [n for n in ITEM_NAMES[1:] if items[n]['status'] == 'ok']
  assert measured, {n: items[n].get('reason') for n in ITEM_NAMES}


def test_small_preset_measurements_are_sane(small_report):
  """What did run on CPU gives the CPU answers (skipped items are allowed)."""
  items = small_report['items']
  if items['mimuon_tau0']['status'] == 'ok':
    assert items['mimuon_tau0']['max_abs_diff'] == 0.0
  if items['ns_bands']['status'] == 'ok':
    assert items['ns_bands']['float32_within_3e-3']
  if items['gram_ns']['status'] == 'ok':
    assert items['gram_ns']['gram_float32_within_3e-3']
    assert all(r > 0 for r in items['gram_ns']['gram_vs_standard'].values())
  if items['gate_decisions']['status'] == 'ok':
    agree, total = items['gate_decisions']['agree'], items['gate_decisions']['total']
    assert all(agree[k] == total[k] for k in total)
  if items['qwen3_forward']['status'] == 'ok':
    assert items['qwen3_forward']['max_rel_err_highest'] < 1e-5
  if items['step_time']['status'] == 'ok':
    times = items['step_time']['ms']['float32']
    assert all(t > 0 for t in times.values())
  if items['spectrum_cost']['status'] == 'ok':
    jacobi = items['spectrum_cost']['impl']['eigh jacobi float32']
    assert jacobi['status'] in ('skipped', 'ok')  # No Jacobi eigh on CPU.
    assert jacobi['reason'] if jacobi['status'] == 'skipped' else True


def test_zero_budget_skips_every_measurement(tmp_path):
  report = run_check(tmp_path, 0)
  check_schema(report)
  items = report['items']
  assert items['environment']['status'] == 'ok'
  for name in ITEM_NAMES[1:]:
    assert items[name]['status'] == 'skipped', name
    assert items[name]['reason'].startswith('budget'), name


def test_host_parts_times_the_copy_and_the_host_work():
  """The host gate's split (device-to-host copy, host LAPACK) runs on CPU."""
  import jax  # pylint: disable=import-outside-toplevel
  from benchmarks import accelerator_check  # pylint: disable=import-outside-toplevel
  stacks = [jax.random.normal(jax.random.key(0), (2, 16, 48)),
            jax.random.normal(jax.random.key(1), (1, 32, 8))]
  parts = accelerator_check.host_parts(stacks, 2)
  assert set(parts) == {'device-to-host copy ms',
                        'host LAPACK + statistics ms'}
  assert all(v > 0 for v in parts.values())


def test_yolo26n_preset_times_muon_musgd_mimuon(tmp_path, monkeypatch):
  """The yolo26n preset: step_time on YOLO26n's conv kernels (muon, musgd,
  mimuon and their ratios to muon); every other item says it is skipped.

  The wiring only: the preset reads `step_time.yolo26_params` (all 126
  kernels: tests/test_step_time.py), cut here to the first 6 and 2 repeats:
  compiling 3 optimizers x 2 dtypes over all 126 cost minutes of CI."""
  from benchmarks import accelerator_check  # pylint: disable=import-outside-toplevel
  from benchmarks import step_time  # pylint: disable=import-outside-toplevel
  full = step_time.yolo26_params

  def first_kernels(preset, dtype):
    params, dims = full(preset, dtype)
    keep = list(params)[:6]
    return ({k: params[k] for k in keep}, {k: dims[k] for k in keep})

  monkeypatch.setattr(step_time, 'yolo26_params', first_kernels)
  monkeypatch.setitem(accelerator_check.PRESETS, 'yolo26n', dict(
      accelerator_check.PRESETS['yolo26n'], repeats=2))
  accelerator_check.main(['--preset', 'yolo26n', '--budget-s', '600',
                          '--out', str(tmp_path)])
  (json_path,) = tmp_path.glob('accelerator_check_*_yolo26n.json')
  items = json.loads(json_path.read_text())['items']
  assert list(items) == ITEM_NAMES
  step = items['step_time']
  assert step['status'] == 'ok' and step['n_matrices'] == 6
  assert step['preset'] == 'yolo26n'
  for dtype in ('float32', 'bfloat16'):
    assert set(step['ms'][dtype]) == {'muon (ours)', 'musgd (ours)',
                                      'mimuon (ours)'}
    assert all(t > 0 for t in step['ms'][dtype].values())
    assert step['vs_our_muon'][dtype]['muon (ours)'] == 1.0
  skipped = [n for n in ITEM_NAMES if n not in ('environment', 'step_time')]
  assert all(items[n]['status'] == 'skipped' and 'yolo26n' in
             items[n]['reason'] for n in skipped)
