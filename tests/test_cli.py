"""The experiments' command lines: bad values are one-line errors (exit 2),
and the demo writes only under runs/ (no tracked file changes)."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args, cwd=ROOT, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('module, args, needle', [
    ('experiments.train_lm', ['--steps', '0'], '--steps'),
    ('experiments.train_lm', ['--steps', '-1'], '--steps'),
    ('experiments.train_lm', ['--optimizer', 'foo'], '--optimizer'),
    ('experiments.train_lm', ['--tau-mode', 'weird'], '--tau-mode'),
    ('experiments.train_lm', ['--tau', '-1'], '--tau'),
    ('experiments.train_lm', ['--batch-size', 'x'], '--batch-size'),
    ('experiments.train_vision', ['--model', 'vgg'], '--model'),
    ('experiments.compare', ['--preset', 'nope'], '--preset'),
    ('experiments.compare', ['--optimizers', 'muon', 'sgd'], '--optimizers'),
    ('experiments.compare', ['--eval-every', '0'], '--eval-every'),
])
def test_bad_values_are_one_line_errors(module, args, needle):
  proc = _run(module, *args, timeout=120)
  assert proc.returncode == 2, proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr
  error = [l for l in proc.stderr.splitlines() if 'error:' in l]
  assert len(error) == 1 and needle in error[0], proc.stderr
  # usage: names the module the way the README runs it.
  assert proc.stderr.startswith(f'usage: python -m {module}'), proc.stderr


def _git_status():
  return subprocess.run(['git', 'status', '--porcelain'], cwd=ROOT,
                        capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_demo_writes_only_under_runs(tmp_path):
  before = _git_status()
  proc = _run('experiments.compare', '--preset', 'demo', '--steps', '4',
              '--eval-every', '2', '--model-preset', 'micro', '--seq-len',
              '16', '--batch-size', '2', '--no-progress')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _git_status() == before
  out = (ROOT / 'runs' / 'demo').resolve()
  assert f'results: {out}' in proc.stdout
  assert f'plot: {out / "loss_curves.png"}' in proc.stdout
  assert (out / 'loss_curves.png').exists() and (out / 'results.md').exists()
