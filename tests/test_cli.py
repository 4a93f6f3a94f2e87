"""The experiments' command lines: bad values are one-line errors (exit 2),
and the demo writes only under runs/ of its working directory."""

import dataclasses
import importlib
import os
import pathlib
import subprocess
import sys
import typing

import pytest

from experiments.harness import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args, cwd=ROOT, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT))
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
    ('experiments.train_lm', ['--lr', '-1'], '--lr'),
])
def test_bad_values_are_one_line_errors(module, args, needle):
  proc = _run(module, *args, timeout=120)
  assert proc.returncode == 2, proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr
  error = [l for l in proc.stderr.splitlines() if 'error:' in l]
  assert len(error) == 1 and needle in error[0], proc.stderr
  # usage: names the module the way the README runs it.
  assert proc.stderr.startswith(f'usage: python -m {module}'), proc.stderr


@pytest.mark.slow
def test_demo_writes_only_under_runs(tmp_path):
  """The demo's command, run from a scratch folder: it writes runs/demo/ under
  its working directory and nothing else (tests/conftest.py checks that no
  test writes into the checkout, whose runs/demo/ is the user's)."""
  proc = _run('experiments.compare', '--preset', 'demo', '--steps', '4',
              '--eval-every', '2', '--model-preset', 'micro', '--seq-len',
              '16', '--batch-size', '2', '--no-progress', cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = (tmp_path / 'runs' / 'demo').resolve()
  assert f'results: {out}' in proc.stdout
  assert f'plot: {out / "loss_curves.png"}' in proc.stdout
  assert (out / 'loss_curves.png').exists() and (out / 'results.md').exists()
  written = [p for p in tmp_path.rglob('*') if p.is_file()]
  assert written and all(p.is_relative_to(out) for p in written), written


# Every experiment config with a float flag (tuple elements included).
STUDIES = ('compare', 'gap_every', 'gen_gap', 'qwen3_0_6b', 'tau_sweep',
           'train_lm', 'train_vision', 'lm_small_data', 'lm_finetune',
           'gate_scaling')


def _float_fields():
  """(config class, field) for every float-valued --flag of the studies."""
  found = {}
  for name in STUDIES:
    module = importlib.import_module(f'experiments.{name}')
    for obj in vars(module).values():
      if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        continue
      hints = typing.get_type_hints(obj)
      for f in dataclasses.fields(obj):
        if 'help' not in f.metadata:
          continue  # Not a command-line config.
        tp = cli._strip_optional(hints[f.name])[0]  # pylint: disable=protected-access
        if typing.get_origin(tp) is tuple:
          tp = typing.get_args(tp)[0]
        if tp is float:
          found[(obj.__name__, f.name)] = (obj, f)
  return list(found.values())


def test_every_float_flag_has_a_bound():
  """A float flag says what it accepts: `positive` or a `minimum`."""
  fields = _float_fields()
  assert len(fields) >= 10, fields
  unbounded = [f'{cls.__name__}.{f.name}' for cls, f in fields
               if not f.metadata.get('positive')
               and f.metadata.get('minimum') is None]
  assert not unbounded, unbounded


def _parse_error(config_cls, argv, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.parse_config(config_cls, 'test', argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  errors = [l for l in err.splitlines() if 'error:' in l]
  assert len(errors) == 1, err
  return errors[0]


@pytest.mark.parametrize('value', ['0', '-1', '-1e-9', 'nan', 'inf', '-inf'])
def test_positive_flags_reject_nonpositive_nan_and_inf(value, capsys):
  fields = [(cls, f) for cls, f in _float_fields() if f.metadata['positive']]
  assert {f.name for _, f in fields} >= {'lr', 'adam_lr', 'lrs', 'grid_scale'}
  for cls, f in fields:
    flag = '--' + f.name.replace('_', '-')
    error = _parse_error(cls, [f'{flag}={value}'], capsys)
    assert f'argument {flag}:' in error and value in error, error


@pytest.mark.parametrize('value', ['nan', 'NaN', '-1'])
def test_bounded_flags_reject_nan_and_values_below(value, capsys):
  fields = [(cls, f) for cls, f in _float_fields()
            if f.metadata.get('minimum') is not None]
  assert {f.name for _, f in fields} >= {'tau', 'weight_decay'}
  for cls, f in fields:
    flag = '--' + f.name.replace('_', '-')
    error = _parse_error(cls, [f'{flag}={value}'], capsys)
    assert f'argument {flag}:' in error, error


def test_meaningful_edge_values_are_accepted():
  from experiments import train_lm  # pylint: disable=g-import-not-at-top
  cfg = cli.parse_config(train_lm.TrainLMConfig, 'test',
                         ['--tau', 'inf', '--weight-decay', '0', '--lr',
                          '1e-5', '--adam-lr', 'none'])
  assert cfg.tau == float('inf') and cfg.weight_decay == 0.0
  assert cfg.lr == 1e-5 and cfg.adam_lr is None
  # tau = 0 is Muon, a valid MiMuon setting.
  assert cli.parse_config(train_lm.TrainLMConfig, 'test',
                          ['--tau', '0']).tau == 0.0


def _study_clis():
  """Every study (a module with a `main` directly in experiments/), and the
  harness's replot tool that takes a study's --out."""
  root = ROOT / 'experiments'
  return [f'experiments.{p.stem}' for p in sorted(root.glob('*.py'))
          if 'def main(' in p.read_text()] + [
              'experiments.harness.spectra_plots',
              'experiments.harness.data_detection']


STUDY_CLIS = _study_clis()


def test_every_study_cli_is_checked_for_out():
  assert len(STUDY_CLIS) >= 14, STUDY_CLIS  # 13 studies and spectra_plots
  assert {'experiments.tau_sweep', 'experiments.compare',
          'experiments.regime_map', 'experiments.gate_scaling',
          'experiments.harness.spectra_plots'} <= set(STUDY_CLIS)


@pytest.mark.parametrize('module', STUDY_CLIS)
@pytest.mark.parametrize('out', ['/proc/forbidden', 'FILE'])
def test_unwritable_out_is_one_line_exit_2_before_any_work(module, out,
                                                           tmp_path, capsys):
  """`--out` that cannot be written: one line on stderr, exit 2, and the
  study never starts (its output folder is not created)."""
  if out == 'FILE':  # an existing file where the folder should be
    out = str(tmp_path / 'a_file')
    pathlib.Path(out).write_text('')
  main = importlib.import_module(module).main
  with pytest.raises(SystemExit) as exit_info:
    main(['--out', f'{out}/sub'])
  assert exit_info.value.code == 2
  captured = capsys.readouterr()
  assert captured.out == ''
  lines = captured.err.splitlines()
  assert len(lines) == 1, captured.err
  assert f'error: --out {out}/sub: ' in lines[0], lines[0]
  assert not pathlib.Path(out, 'sub').exists()


def test_unwritable_out_from_the_command_line():
  proc = _run('experiments.gate_scaling', '--out', '/proc/forbidden',
              timeout=120)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.startswith(
      'python -m experiments.gate_scaling: error: --out /proc/forbidden:'
      ' cannot create a folder in /proc ('), proc.stderr
  assert len(proc.stderr.splitlines()) == 1, proc.stderr


def test_writable_out_leaves_nothing_behind(tmp_path):
  assert cli.unwritable(tmp_path / 'new' / 'deeper') is None
  assert cli.unwritable(tmp_path) is None
  assert list(tmp_path.iterdir()) == []
