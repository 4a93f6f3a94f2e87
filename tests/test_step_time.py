"""benchmarks/step_time.py's bookkeeping on the tiny preset (no timing claims)."""

import argparse
import re

import numpy as np

from benchmarks import step_time


def test_interleaved_rows_print_each_round_and_the_median_ratio(capsys):
  params = step_time.matrix_params('tiny', np.float32)
  grads = {k: v + 1 for k, v in params.items()}
  ours = dict(learning_rate=0.02, ns_steps=5, ns_dtype='bfloat16')
  step_time.interleaved_rows(params, grads, ours,
                             argparse.Namespace(rounds=3, repeats=2))
  lines = capsys.readouterr().out.splitlines()
  rounds = [line for line in lines if re.match(r'\| \d+ \|', line)]
  assert len(rounds) == 3
  ratios = []
  for line in rounds:
    _, muon, mimuon, ratio = (c.strip() for c in line.strip('|').split('|'))
    ratios.append(float(ratio.rstrip('x')))
    # Printed to 0.1 ms and 0.01x: the ratio is the two times' quotient, up
    # to those roundings (0.05 ms on each time, 0.005 on the ratio).
    bound = 0.005 + 0.05 * (1 + ratios[-1] + 0.01) / (float(muon) - 0.05)
    np.testing.assert_allclose(ratios[-1], float(mimuon) / float(muon),
                               rtol=0, atol=bound + 1e-9)
  median = re.search(r'\*\*([\d.]+)x\*\* \(([\d.]+)-([\d.]+)x\)', lines[-1])
  assert median, lines[-1]
  assert float(median[1]) == np.median(ratios)
  assert (float(median[2]), float(median[3])) == (min(ratios), max(ratios))


def test_stepper_steps_like_the_optimizer():
  """Stepper's params after its warm-up step == one optax update by hand.

  float32 Newton-Schulz (bf16 rounds differently jitted and eager); the
  tolerance, 1e-6 on entries of ~0.02, is float32 rounding over 5 steps.
  """
  import optax  # pylint: disable=import-outside-toplevel
  import mimuon_optax as mo  # pylint: disable=import-outside-toplevel
  params = step_time.matrix_params('tiny', np.float32)
  grads = {k: v * 3 for k, v in params.items()}
  opt = mo.muon(learning_rate=0.02, ns_dtype='float32')
  stepper = step_time.Stepper(opt, params, grads)
  updates, _ = opt.update(grads, opt.init(params), params)
  want = optax.apply_updates(params, updates)
  for k in params:
    np.testing.assert_allclose(stepper.params[k], want[k], rtol=0,
                               atol=1e-6)


def _table_rows(lines):
  return [[c.strip() for c in line.strip('|').split('|')] for line in lines
          if line.startswith('| ') and not line.startswith('| optimizer')
          and not line.startswith('| shape')]


def test_train_step_rows_time_every_arm_against_muon(capsys):
  """--train-step: one row per arm; muon's own ratio is 1.00x in every
  round; the host gate's start is recorded in the gap_every=1 arms only."""
  args = argparse.Namespace(preset='tiny', train_step='2,16', rounds=2,
                            repeats=1, ns_steps=5, ns_dtype='bfloat16')
  arms = ('mimuon (ours, defaults)', 'mimuon (ours, lagged_gate=True)')
  times, starts = step_time.train_step_rows(args, only=arms)
  rows = {r[0]: r for r in _table_rows(capsys.readouterr().out.splitlines())}
  assert set(rows) == set(times) == {'muon (ours)', *arms}
  assert rows['muon (ours)'][2:] == ['1.00x', '1.00-1.00x', '']
  for name, ts in times.items():
    assert len(ts) == 2 and all(t > 0 for t in ts)
    assert float(rows[name][1]) == round(float(np.median(ts)) * 1e3, 1)
  # The host gate's start callback runs in mimuon's gap_every=1 steps (the
  # overlapped path), inside the step; muon has none.
  assert {n for n, s in starts.items() if s} == set(arms)
  for name in arms:
    assert len(starts[name]) == 2 and all(0 < f < 1 for f in starts[name])
    assert rows[name][4].endswith('% of the step')


def test_host_job_rows_sum_the_preset(capsys):
  """--host-job: the tiny preset's 14 matrices, 4 shapes; the total is the
  sum of the rows (each printed to 1 ms)."""
  args = argparse.Namespace(preset='tiny', dtype='float32', repeats=1)
  total = step_time.host_job_rows(args)
  rows = _table_rows(capsys.readouterr().out.splitlines())
  assert [r[0] for r in rows[:-1]] == ['64x64', '64x32', '64x192', '192x64']
  assert sum(int(r[1]) for r in rows[:-1]) == 14 == int(rows[-1][1])
  assert abs(sum(float(r[3]) for r in rows[:-1]) - total * 1e3) <= 0.5 * 4


def test_yolo26_preset_gives_the_conv_kernels_and_their_numbers():
  """Every YOLO26n conv kernel (HWIO, ultralytics' 2.57M-param model)
  and the (kh*kw*in, out) dimension numbers muon/musgd/mimuon get."""
  from mimuon_optax.models.yolo26 import optim  # pylint: disable=import-outside-toplevel
  params, dims = step_time.yolo26_params('yolo26n', np.float32)
  assert all(x.ndim == 4 for x in params.values())
  assert len(params) == 126
  assert all(d == optim.CONV_DIMENSION_NUMBERS for d in dims.values())
  assert params['model/0/conv/kernel'].shape == (3, 3, 3, 16)
  # Kernels hold all but the BatchNorm and head-bias parameters.
  assert 2_400_000 < sum(x.size for x in params.values()) < 2_572_280
