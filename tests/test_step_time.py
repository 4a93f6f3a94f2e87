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
