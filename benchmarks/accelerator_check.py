"""One prepared accelerator check: step time, FLOP floor, gate cost, correctness.

Runs every item of ``ITEMS`` in one process and writes
``accelerator_check_<device>_<preset>.json`` and ``.md`` (one table) to
``--out``, rewritten after every item so that a killed run keeps its
results. Each item is wrapped: an exception becomes ``{"status": "error",
"reason": ...}`` and the next item runs; once ``--budget-s`` seconds (from
the start of the script) are spent, no further item or sub-measurement
starts and each records ``{"status": "skipped", "reason": "budget: ..."}``.
Peak device memory is the process-wide high-water mark after each item.

  pip install --no-deps -e . && python -m benchmarks.accelerator_check \\
      --out benchmarks/results/                     # GPU/TPU: qwen3_0_6b
  python -m benchmarks.accelerator_check --preset small --budget-s 60  # CPU

Imports only jax, optax, flax, chex, numpy, mimuon_optax and the stdlib.
"""

from __future__ import annotations

import time

T0 = time.monotonic()

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import contextlib
import json
import pathlib
import platform
import re
import statistics
import sys
import traceback
import warnings


import chex
import flax
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax
from flax import nnx

import mimuon_optax as mo
from benchmarks import step_time
from mimuon_optax import _gap
from mimuon_optax import _platform
from mimuon_optax import training
from mimuon_optax.models.qwen3 import Qwen3Config, Qwen3ForCausalLM
from mimuon_optax.models.qwen3 import qwen3_weight_dimension_numbers
from mimuon_optax.models.qwen3.loss import next_token_loss

warnings.filterwarnings('ignore', message='Some donated buffers')

# step: step_time.PRESETS key of the step-time and spectrum matrices.
PRESETS = {
    'small': dict(step='tiny', repeats=3, matmul_n=512, spectrum_repeats=2,
                  accuracy_n=2, ns_shapes=[(64, 192), (192, 64)],
                  gate_shapes=[(64, 192)], train_model='tiny',
                  train_batch=(2, 32)),
    'qwen3_0_6b': dict(step='qwen3_0_6b', repeats=10, matmul_n=8192,
                       spectrum_repeats=3, accuracy_n=3,
                       ns_shapes=[(1024, 3072), (3072, 1024), (1024, 1024)],
                       gate_shapes=[(256, 768), (1024, 3072)],
                       train_model='qwen3_0_6b', train_batch=(8, 1024)),
    # YOLO26n's conv kernels: muon / musgd / mimuon step times only.
    'yolo26n': dict(step='yolo26n', repeats=10,
                    items=('environment', 'step_time')),
}
LR = 0.02
EPS32 = float(np.finfo(np.float32).eps)


class Budget:
  """Seconds since the script started, against ``--budget-s``."""

  def __init__(self, seconds: float):
    self.seconds = seconds

  def spent(self) -> bool:
    return time.monotonic() - T0 >= self.seconds

  def skipped(self) -> dict:
    return {'status': 'skipped', 'reason': f'budget: {time.monotonic() - T0:.0f}'
            f' s of {self.seconds:.0f} s spent before it started'}


def one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f'{type(e).__name__}: {text[0] if text else ""}'[:300]


def unsupported(e: BaseException) -> bool:
  return isinstance(e, NotImplementedError) or bool(re.search(
      r'not (implemented|supported)|unsupported|only supported', str(e), re.I))


def median_time(fn, *args, repeats: int, max_s: float = 10.0):
  """Median seconds of ``fn(*args)`` (already jitted), warm-up excluded;
  stops repeating once ``max_s`` seconds were timed (slow calls: 1 repeat)."""
  out = jax.block_until_ready(fn(*args))
  times = []
  while len(times) < repeats and sum(times) < max_s:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times), out


def host_matrix(rng, m, n, s):
  """U diag(s) V^T in float64 with Haar-random orthonormal U, V (k columns)."""
  k = min(m, n)

  def stiefel(rows):
    q, r = np.linalg.qr(rng.standard_normal((rows, k)))
    return q * np.sign(np.diag(r))

  return stiefel(m) @ (np.asarray(s, np.float64)[:, None] * stiefel(n).T)


def ms(seconds):
  return None if seconds is None else round(seconds * 1e3, 3)


# --------------------------------------------------------------- the items --


def environment(cfg, budget, results):
  del cfg, budget, results
  dev = jax.devices()[0]
  stats = dev.memory_stats() if hasattr(dev, 'memory_stats') else None
  out = {
      'status': 'ok', 'backend': jax.default_backend(),
      'device_kind': dev.device_kind, 'device': str(dev),
      'device_count': jax.device_count(), 'platform': platform.platform(),
      'processor': platform.processor() or platform.machine(),
      'python': platform.python_version(),
      'versions': {'jax': jax.__version__, 'jaxlib': jaxlib.__version__,
                   'optax': optax.__version__, 'flax': flax.__version__,
                   'chex': chex.__version__, 'numpy': np.__version__,
                   'mimuon_optax': mo.__version__},
      'memory_limit_bytes': (stats or {}).get('bytes_limit'),
  }
  out['table'] = [('device', f"{out['device_kind']} ({out['backend']},"
                   f" {out['device_count']} devices)"),
                  ('versions', ', '.join(f'{k} {v}' for k, v in
                                         out['versions'].items()))]
  return out


def optimizers():
  return {
      'optax.adamw': lambda: optax.adamw(LR),
      'optax.contrib.muon': lambda: optax.contrib.muon(LR),
      'muon (ours)': lambda: mo.muon(LR),
      'mimuon (ours)': lambda: mo.mimuon(LR),
      'mimuon (ours, precision="host")': lambda: mo.mimuon(
          LR, precision='host'),
      'mimuon (ours, precision="float64")': lambda: mo.mimuon(
          LR, precision='float64'),
      'mimuon (ours, gap_every=10)': lambda: mo.mimuon(LR, gap_every=10),
  }


def yolo26_optimizers(dims):
  # musgd's NS in bfloat16, muon's and mimuon's default, so the ratios
  # compare optimizers, not NS precisions (musgd's own default: float32).
  return {
      'muon (ours)': lambda: mo.muon(LR, weight_dimension_numbers=dims),
      'musgd (ours)': lambda: mo.musgd(LR, weight_dimension_numbers=dims,
                                       ns_dtype='bfloat16'),
      'mimuon (ours)': lambda: mo.mimuon(LR, weight_dimension_numbers=dims),
  }


def step_times(cfg, budget, results):
  """ms per jitted update + apply_updates at the preset's matrix shapes."""
  del results
  out = {'status': 'ok', 'preset': cfg['step'], 'repeats': cfg['repeats'],
         'ms': {}, 'vs_contrib_muon': {}, 'vs_our_muon': {}, 'sub': {},
         'table': []}
  for dtype in ('float32', 'bfloat16'):
    if cfg['step'] in step_time.YOLO26_PRESETS:
      params, dims = step_time.yolo26_params(cfg['step'], jnp.dtype(dtype))
      makers = yolo26_optimizers(dims)
    else:
      params = step_time.matrix_params(cfg['step'], jnp.dtype(dtype))
      makers = optimizers()
    grads = jax.tree.map(lambda p: jax.random.normal(
        jax.random.key(1), p.shape, p.dtype), params)
    out['n_matrices'] = len(params)
    out['n_params'] = int(sum(x.size for x in params.values()))
    times = out['ms'][dtype] = {}
    for name, make in makers.items():
      key = f'{dtype} / {name}'
      if budget.spent():
        out['sub'][key] = budget.skipped()
        continue
      try:
        seconds, _, _ = step_time.time_step(make(), params, grads,
                                            cfg['repeats'])
        times[name] = ms(seconds)
      except Exception as e:  # pylint: disable=broad-except
        out['sub'][key] = {'status': 'error', 'reason': one_line(e)}
    for base, field in (('optax.contrib.muon', 'vs_contrib_muon'),
                        ('muon (ours)', 'vs_our_muon')):
      out[field][dtype] = {n: round(t / times[base], 3) for n, t in
                           times.items() if base in times and n != 'optax.adamw'}
    for name, t in times.items():
      ratios = [f'{out[f][dtype][name]:.2f}x {label}' for f, label in (
          ('vs_contrib_muon', 'contrib'), ('vs_our_muon', 'ours'))
                if name in out[f][dtype]]
      out['table'].append((f'{dtype} params / {name}',
                           f'{t:.2f} ms' + (f" ({', '.join(ratios)})"
                                            if ratios else '')))
  out['table'] += [(k, f"{v['status']}: {v['reason']}")
                   for k, v in out['sub'].items()]
  if not any(out['ms'].values()):
    raise RuntimeError(f'no optimizer timed: {out["sub"]}')
  return out


def train_steps(cfg, budget, results):
  """A whole Qwen3 training step (forward, backward, optimizer) per optimizer.

  bf16 activations, float32 params; mimuon / muon of the *whole* step is the
  number a user weighs against the optimizer-only ratio of ``step_time``.
  """
  del results
  batch, seq = cfg['train_batch']
  model_cfg = (Qwen3Config.qwen3_0_6b if cfg['train_model'] == 'qwen3_0_6b'
               else Qwen3Config.tiny)(dtype=jnp.bfloat16, scan_layers=True)
  model = Qwen3ForCausalLM(model_cfg, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model, nnx.Param)
  params = nnx.as_pure(state)
  del model, state
  dims = qwen3_weight_dimension_numbers(params)
  tokens = jax.random.randint(jax.random.key(3), (batch, seq + 1), 0,
                              model_cfg.vocab_size)
  out = {'status': 'ok', 'model': cfg['train_model'], 'batch': [batch, seq],
         'ms': {}, 'sub': {}, 'table': []}
  for name, make in {
      'optax.adamw': lambda: optax.adamw(LR),
      'muon (ours)': lambda: mo.muon(LR, weight_dimension_numbers=dims),
      'mimuon (ours)': lambda: mo.mimuon(LR, weight_dimension_numbers=dims),
      'mimuon (ours, lagged_gate=True)': lambda: mo.mimuon(
          LR, lagged_gate=True, weight_dimension_numbers=dims),
      'mimuon (ours, gap_every=4)': lambda: mo.mimuon(
          LR, gap_every=4, weight_dimension_numbers=dims),
  }.items():
    if budget.spent():
      out['sub'][name] = budget.skipped()
      continue
    try:
      tx = make()
      step = training.make_train_step(tx, next_token_loss,
                                      graphdef=graphdef, donate=False)
      opt_state = tx.init(params)
      seconds, _ = median_time(step, params, opt_state, tokens,
                               repeats=cfg['repeats'])
      out['ms'][name] = ms(seconds)
      del opt_state
    except Exception as e:  # pylint: disable=broad-except
      out['sub'][name] = {'status': 'error', 'reason': one_line(e)}
  base = out['ms'].get('muon (ours)')
  out['vs_our_muon'] = {n: round(t / base, 3) for n, t in out['ms'].items()
                        if base}
  for name, t in out['ms'].items():
    ratio = out['vs_our_muon'].get(name)
    out['table'].append((f"{cfg['train_model']} {batch}x{seq} step / {name}",
                         f'{t:.1f} ms' + (f' ({ratio:.2f}x our muon)'
                                          if ratio else '')))
  out['table'] += [(k, f"{v['status']}: {v['reason']}")
                   for k, v in out['sub'].items()]
  if not out['ms']:
    raise RuntimeError(f'no step timed: {out["sub"]}')
  return out


def flop_floor(cfg, budget, results):
  """NS FLOPs per step / measured bf16 matmul throughput."""
  del budget
  n = cfg['matmul_n']
  a, b = (jax.random.normal(jax.random.key(i), (n, n), jnp.bfloat16)
          for i in (2, 3))
  seconds, _ = median_time(jax.jit(jnp.matmul), a, b, repeats=cfg['repeats'])
  tflops = 2 * n**3 / seconds / 1e12
  shapes = jax.eval_shape(lambda: step_time.matrix_params(cfg['step'],
                                                          jnp.float32))
  flops = step_time.ns_flops(shapes, 5)  # Our default: 5 steps.
  floor_ms = flops / (tflops * 1e12) * 1e3
  out = {'status': 'ok', 'matmul_n': n, 'bf16_matmul_tflops': round(tflops, 3),
         'ns_tflop_per_step': flops / 1e12, 'floor_ms': round(floor_ms, 4),
         'muon_over_floor': {}}
  step = results.get('step_time', {}).get('ms', {})
  for dtype, times in step.items():
    if 'muon (ours)' in times:
      out['muon_over_floor'][dtype] = round(times['muon (ours)'] / floor_ms, 2)
  out['table'] = [('bf16 matmul', f'{tflops:.3g} TFLOP/s ({n} x {n})'),
                  ('NS floor (5 steps, bf16)',
                   f'{floor_ms:.3g} ms ({flops / 1e12:.3g} TFLOP / step)')]
  out['table'] += [(f'muon (ours) / floor, {d} params', f'{r:.2f}x')
                   for d, r in out['muon_over_floor'].items()]
  return out


def _grams(stacks, dtype):
  """Small-side Gram of every matrix, zero-padded to one (B, K, K) batch."""
  grams = []
  for x in stacks:
    w = x.astype(dtype)
    w = jnp.swapaxes(w, -1, -2) if w.shape[-2] > w.shape[-1] else w
    grams.append(jnp.matmul(w, jnp.swapaxes(w, -1, -2),
                            precision=jax.lax.Precision.HIGHEST))
  k = max(g.shape[-1] for g in grams)
  return jnp.concatenate([jnp.pad(g, ((0, 0), (0, k - g.shape[-1]),
                                      (0, k - g.shape[-1]))) for g in grams])


def _sqrt_eig(eig):
  return jnp.sqrt(jnp.maximum(eig, 0.0))


def _svd_values(stacks):
  """float32 SVD values per stack, ascending, zero-padded to one K."""
  vals = [jnp.sort(jnp.linalg.svd(x, compute_uv=False), -1) for x in stacks]
  k = max(v.shape[-1] for v in vals)
  return jnp.concatenate([jnp.pad(v, ((0, 0), (k - v.shape[-1], 0)))
                          for v in vals])


SPECTRUM = {  # name: (singular values of a list of stacks, float64?)
    'eigvalsh float32': (lambda xs: _sqrt_eig(jnp.linalg.eigvalsh(
        _grams(xs, jnp.float32))), False),
    'eigh jacobi float32': (lambda xs: _sqrt_eig(jax.lax.linalg.eigh(
        _grams(xs, jnp.float32),
        implementation=jax.lax.linalg.EighImplementation.JACOBI)[1]), False),
    'values-only float64 (library)': (lambda xs: _sqrt_eig(
        _gap._eigvals_only(_grams(xs, jnp.float64))), True),  # pylint: disable=protected-access
    'svd float32': (lambda xs: _svd_values(xs), False),
    'spectral_gaps float64': (lambda xs: mo.spectral_gaps(
        xs, precision='float64'), False),
    'spectral_gaps host': (lambda xs: mo.spectral_gaps(
        xs, precision='host'), False),
    'spectral_gaps float32': (lambda xs: mo.spectral_gaps(
        xs, precision='float32'), False),
}


def spectrum_cost(cfg, budget, results):
  """Gate spectrum per implementation: time on all matrices, accuracy on a few."""
  del results
  params = step_time.matrix_params(cfg['step'], jnp.float32)
  shapes = {}
  for x in params.values():
    shapes.setdefault(x.shape, []).append(x)
  stacks = [jnp.stack(v) for v in shapes.values()]
  few = [s[:1] for s in stacks[:cfg['accuracy_n']]]
  refs = [np.linalg.svd(np.asarray(x[0], np.float64), compute_uv=False)
          for x in few]
  out = {'status': 'ok', 'n_matrices': len(params),
         'shapes': [list(s) for s in shapes], 'impl': {}, 'table': []}
  for name, (fn, x64) in SPECTRUM.items():
    if budget.spent():
      out['impl'][name] = budget.skipped()
      out['table'].append((name, f"skipped: {out['impl'][name]['reason']}"))
      continue
    try:
      with (_platform.enable_x64() if x64 else contextlib.nullcontext()):
        seconds, _ = median_time(jax.jit(fn), stacks,
                                 repeats=cfg['spectrum_repeats'])
        # spectral_gaps returns statistics: check its singular values instead.
        acc_fn = fn if not name.startswith('spectral_gaps') else (
            lambda xs, p=name.split()[-1]: jnp.concatenate(
                [mo.singular_values(x, precision=p) for x in xs]))
        err = max(float(np.max(np.abs(np.sort(np.asarray(
            jax.jit(acc_fn)([x]), np.float64)[0])[::-1][:ref.size] - ref))
                        / ref[0]) for x, ref in zip(few, refs))
      out['impl'][name] = {'status': 'ok', 'ms': ms(seconds),
                           'max_err_rel_smax': err}
      out['table'].append((name, f'{seconds * 1e3:.1f} ms, max err'
                           f' {err:.1e} s_max'))
    except Exception as e:  # pylint: disable=broad-except
      status = 'skipped' if unsupported(e) else 'error'
      out['impl'][name] = {'status': status, 'reason': one_line(e)}
      out['table'].append((name, f'{status}: {one_line(e)[:100]}'))
  if not budget.spent():
    out['host_parts'] = host_parts(stacks, cfg['spectrum_repeats'])
    out['table'] += [(f'spectral_gaps host: {k}', f'{v:.1f} ms')
                     for k, v in out['host_parts'].items()]
  return out


def host_parts(stacks, repeats):
  """The host gate's time split: device-to-host copy, then host LAPACK."""
  copy_s, host = median_time(jax.device_get, stacks, repeats=repeats)
  compute_s, _ = median_time(
      lambda xs: _gap._host_submit(xs, None)(), host,  # pylint: disable=protected-access
      repeats=repeats)
  return {'device-to-host copy ms': ms(copy_s),
          'host LAPACK + statistics ms': ms(compute_s)}


def composed_polynomial(schedule, s, frob):
  """Where exact arithmetic sends singular values s of a matrix with ||.||_F.

  As in tests/test_newton_schulz.py (this script may not import tests/).
  """
  x = np.asarray(s, np.float64) / (schedule.frobenius_scale * frob)
  for a, b, c in np.asarray(schedule.coeffs, np.float64):
    x = a * x + b * x**3 + c * x**5
  return x


def ns_bands(cfg, budget, results):
  """NS output singular values (float64 numpy) vs the schedule's polynomial."""
  del budget, results
  rng = np.random.default_rng(0)
  schedule = mo.ns_schedule('polar_express', 5)
  out = {'status': 'ok', 'cases': {}, 'table': []}
  for m, n in cfg['ns_shapes']:
    s_in = np.geomspace(1.0, 0.1, min(m, n))  # cond 10, as in the tests.
    x = host_matrix(rng, m, n, s_in).astype(np.float32)
    frob = np.linalg.norm(x.astype(np.float64))
    want = np.sort(composed_polynomial(schedule, s_in, frob))[::-1]
    grid = composed_polynomial(schedule, np.geomspace(0.1, 1.0, 4000), frob)
    for dtype in ('bfloat16', 'float32'):
      y = jax.jit(lambda v, d=dtype: mo.newton_schulz(
          v[None], schedule, ns_dtype=jnp.dtype(d))[0])(jnp.asarray(x))
      got = np.linalg.svd(np.asarray(y, np.float64), compute_uv=False)
      dev = float(np.max(np.abs(got - want)))
      key = f'{m}x{n} {dtype}'
      out['cases'][key] = {
          'band': [float(got.min()), float(got.max())],
          'promised_band': [float(grid.min()), float(grid.max())],
          'max_dev_from_polynomial': dev}
      out['table'].append((f'NS band {key}', f'[{got.min():.3f},'
                           f' {got.max():.3f}] (polynomial [{grid.min():.3f},'
                           f' {grid.max():.3f}], max dev {dev:.1e})'))
  out['float32_within_3e-3'] = all(
      c['max_dev_from_polynomial'] <= 3e-3 for k, c in out['cases'].items()
      if k.endswith('float32'))
  return out


def gram_ns(cfg, budget, results):
  """Gram NS vs standard NS (issue 24): ms per shape and dtype, and its band."""
  del results
  rng = np.random.default_rng(0)
  schedule = mo.ns_schedule('polar_express', 5)
  out = {'status': 'ok', 'ms': {}, 'gram_vs_standard': {},
         'max_dev_from_polynomial': {}, 'sub': {}, 'table': []}
  inputs = [(f'{m}x{n}', (m, n)) for m, n in cfg['ns_shapes']]
  inputs.append((f"{cfg['step']} preset", None))
  for name, shape in inputs:
    for dtype in ('bfloat16', 'float32'):
      key = f'{name} {dtype}'
      if budget.spent():
        out['sub'][key] = budget.skipped()
        out['table'].append((f'Gram NS {key}', 'skipped: budget'))
        continue
      if shape is None:
        tree = step_time.matrix_params(cfg['step'], jnp.float32)
      else:
        s_in = np.geomspace(1.0, 0.1, min(shape))  # cond 10, as ns_bands.
        tree = {'x': jnp.asarray(host_matrix(rng, *shape, s_in), jnp.float32)}
      fns = {m: jax.jit(lambda t, m=m, d=dtype: mo.scale_by_newton_schulz(
          ns_dtype=d, ns_method=m).update(t, None)[0])
             for m in ('standard', 'gram')}
      times = step_time.interleaved_medians(list(fns.values()), tree,
                                            cfg['repeats'])
      out['ms'][key] = dict(zip(fns, (ms(t) for t in times)))
      ratio = out['gram_vs_standard'][key] = round(times[1] / times[0], 3)
      band = ''
      if shape is not None:
        got = np.linalg.svd(np.asarray(fns['gram'](tree)['x'], np.float64),
                            compute_uv=False)
        want = np.sort(composed_polynomial(
            schedule, s_in, np.linalg.norm(np.asarray(tree['x'],
                                                      np.float64))))[::-1]
        dev = out['max_dev_from_polynomial'][key] = float(
            np.max(np.abs(got - want)))
        band = f', gram max dev from polynomial {dev:.1e}'
      out['table'].append((f'Gram NS {key}', f"standard {times[0] * 1e3:.1f}"
                           f' ms, gram {times[1] * 1e3:.1f} ms ({ratio:.2f}x)'
                           + band))
  out['gram_float32_within_3e-3'] = all(
      v <= 3e-3 for k, v in out['max_dev_from_polynomial'].items()
      if k.endswith('float32'))
  if not out['ms']:
    return dict(budget.skipped(), sub=out['sub'])
  return out


def mimuon_tau0(cfg, budget, results):
  """One update of mimuon(tau=0) against muon() on the same inputs."""
  del budget, results
  params = dict(list(step_time.matrix_params(cfg['step'], jnp.float32)
                     .items())[:7])
  params['norm'] = jnp.ones((params['layers_0/q_proj'].shape[0],))
  grads = jax.tree.map(lambda p: jax.random.normal(
      jax.random.key(4), p.shape, p.dtype), params)
  updates = {}
  for name, tx in (('muon', mo.muon(LR)), ('mimuon', mo.mimuon(LR, tau=0.0))):
    updates[name] = jax.jit(tx.update)(grads, tx.init(params), params)[0]
  diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(updates['muon']), jax.tree.leaves(updates['mimuon'])))
  return {'status': 'ok', 'max_abs_diff': diff, 'equal': diff == 0.0,
          'table': [('mimuon(tau=0) vs muon(), one update',
                     f'max abs diff {diff:.1e}')]}


def reference_stats(x32):
  """(kappa, kappa / s_max, rho) from float64 numpy SVD (tests/test_gap.py)."""
  x = np.asarray(x32, np.float64)
  s = np.sort(np.linalg.svd(x, compute_uv=False))
  nonzero = s[s > max(x.shape) * EPS32 * s[-1]]
  if nonzero.size < 2:
    return np.inf, np.inf, np.inf
  gaps = np.diff(nonzero)
  kappa = gaps.min()
  rho = kappa * np.sqrt(nonzero.size) / np.median(gaps) if kappa > 0 else 0.0
  return kappa, kappa / s[-1], rho


def planted_spectrum(k, level, gap):
  """s_max = 1, k - 1 values on [0.02, 1], one more ``gap`` above ``level``."""
  grid = np.linspace(0.02, 1.0, k - 1)
  at = min(int(np.argmin(np.abs(grid - level))), k - 3)
  return np.sort(np.append(grid, grid[at] + gap))[::-1], grid[1] - grid[0]


def gate_decisions(cfg, budget, results):
  """mimuon_mix decisions vs float64 SVD on planted gaps of 0, 0.4, 2.5 tau."""
  del results
  rng = np.random.default_rng(1)
  out = {'status': 'ok', 'agree': {}, 'total': {}, 'table': []}
  for m, n in cfg['gate_shapes']:
    if budget.spent():
      out['agree'][f'{m}x{n}'] = budget.skipped()
      out['table'].append((f'gate {m}x{n}', 'skipped: budget'))
      continue
    k = min(m, n)
    spacing = planted_spectrum(k, 0.5, 0.0)[1]
    tau_abs = 0.2 * spacing
    cases = [(lv, f) for lv in (0.03, 0.1, 0.5, 0.95) for f in (0.0, 0.4, 2.5)]
    stack = np.stack([host_matrix(rng, m, n, planted_spectrum(
        k, lv, f * tau_abs)[0]).astype(np.float32) for lv, f in cases])
    refs = [reference_stats(x) for x in stack]
    taus = {'absolute': tau_abs, 'relative': tau_abs,
            'spacing': tau_abs * np.sqrt(k) / spacing}
    dn = mo.MuonDimensionNumbers(reduction_axis=1, output_axis=2)
    for precision in ('float64', 'float32'):
      agree = total = 0
      for i, (mode, tau) in enumerate(taus.items()):
        tx = mo.mimuon_mix(optax.scale(-1.0), tau, tau_mode=mode,
                           precision=precision, weight_dimension_numbers=dn)
        x = jnp.asarray(stack)
        _, state = jax.jit(tx.update)(x, tx.init(x))
        got = np.asarray(state.orthogonalized)
        want = np.array([r[i] >= tau for r in refs])
        agree += int(np.sum(got == want))
        total += got.size
      key = f'{m}x{n} {precision}'
      out['agree'][key], out['total'][key] = agree, total
      out['table'].append((f'gate {key}', f'{agree}/{total} agree with'
                           ' float64 SVD'))
  return out


def qwen3_forward(cfg, budget, results):
  """Tiny Qwen3 logits on the device vs the same weights on the CPU."""
  del cfg, budget, results
  model = Qwen3ForCausalLM(Qwen3Config.tiny(), rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  ids = jax.random.randint(jax.random.key(5), (2, 32), 0, 256)
  fwd = jax.jit(lambda st, i: nnx.merge(graphdef, st)(i))
  cpu = jax.devices('cpu')[0]
  ref = np.asarray(fwd(jax.device_put(state, cpu), jax.device_put(ids, cpu)),
                   np.float64)
  out = {'status': 'ok', 'device': str(jax.devices()[0]), 'table': []}
  for precision in ('default', 'highest'):
    with jax.default_matmul_precision(precision):
      fwd = jax.jit(lambda st, i: nnx.merge(graphdef, st)(i))
      got = np.asarray(fwd(jax.device_put(state, jax.devices()[0]),
                           jax.device_put(ids, jax.devices()[0])), np.float64)
    err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
    out[f'max_rel_err_{precision}'] = err
    out['table'].append((f'tiny Qwen3 logits vs CPU, {precision} matmul',
                         f'max rel err {err:.1e}'))
  return out


ITEMS = [
    ('environment', environment),
    ('ns_bands', ns_bands),
    ('gram_ns', gram_ns),
    ('mimuon_tau0', mimuon_tau0),
    ('gate_decisions', gate_decisions),
    ('qwen3_forward', qwen3_forward),
    ('step_time', step_times),
    ('train_step', train_steps),
    ('flop_floor', flop_floor),
    ('spectrum_cost', spectrum_cost),
]


def peak_bytes():
  dev = jax.devices()[0]
  stats = dev.memory_stats() if hasattr(dev, 'memory_stats') else None
  return None if not stats else stats.get('peak_bytes_in_use')


def run_items(cfg, budget, write):
  """Runs ITEMS in order; ``write(results, tables)`` after each."""
  results, tables = {}, {}
  for name, fn in ITEMS:
    start = time.monotonic()
    if name not in cfg.get('items', (name,)):
      result = {'status': 'skipped',
                'reason': f"not measured by the {cfg['step']} preset"}
    elif budget.spent() and name != 'environment':  # environment costs nothing.
      result = budget.skipped()
    else:
      try:
        result = fn(cfg, budget, results)
      except Exception as e:  # pylint: disable=broad-except
        result = {'status': 'error', 'reason': one_line(e),
                  'traceback': traceback.format_exc().splitlines()[-12:]}
    tables[name] = result.pop('table', [])
    result['wall_s'] = round(time.monotonic() - start, 2)
    # Process-wide high-water mark after the item (not reset between items).
    result['peak_bytes_in_use'] = peak_bytes()
    results[name] = result
    print(f'# {name}: {result["status"]} in {result["wall_s"]} s', flush=True)
    write(results, tables)
  return results, tables


def markdown(meta, results, tables):
  lines = [f"# Accelerator check: {meta['device_kind']} ({meta['backend']}),"
           f" preset {meta['preset']}", '',
           f"Wall {meta['wall_s']} s of a {meta['budget_s']} s budget"
           + ('.' if meta['complete'] else
              f"; incomplete ({len(results)} of {len(ITEMS)} items)."), '',
           '| item | status | measurement | value |', '|---|---|---|---|']
  for name, result in results.items():
    rows = tables[name] or [('', result.get('reason', ''))]
    for label, value in rows:
      lines.append(f"| {name} | {result['status']} | {label} |"
                   f" {str(value).replace('|', chr(92) + '|')} |")
  return '\n'.join(lines) + '\n'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', choices=sorted(PRESETS), default=None,
                      help='default: small on CPU, qwen3_0_6b elsewhere')
  parser.add_argument('--out', default='runs/accelerator/')
  parser.add_argument('--budget-s', type=float, default=420.0,
                      help='no item starts after this many seconds')
  args = parser.parse_args(argv)
  backend = jax.default_backend()
  preset = args.preset or ('small' if backend == 'cpu' else 'qwen3_0_6b')
  kind = jax.devices()[0].device_kind
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  slug = re.sub(r'[^a-z0-9]+', '-', kind.lower()).strip('-') or backend
  json_path = out / f'accelerator_check_{slug}_{preset}.json'
  md_path = json_path.with_suffix('.md')
  meta = {'preset': preset, 'budget_s': args.budget_s, 'backend': backend,
          'device_kind': kind, 'argv': sys.argv[1:],
          'items': [name for name, _ in ITEMS]}

  def write(results, tables):
    meta['wall_s'] = round(time.monotonic() - T0, 1)
    meta['complete'] = len(results) == len(ITEMS)
    json_path.write_text(json.dumps({'meta': meta, 'items': results},
                                    indent=1, default=str) + '\n')
    md_path.write_text(markdown(meta, results, tables))

  run_items(PRESETS[preset], Budget(args.budget_s), write)
  print(md_path.read_text())
  print(f'wrote {json_path}\nwrote {md_path}')


if __name__ == '__main__':
  main()
