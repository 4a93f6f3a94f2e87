"""Optimizer step time: optax adamw / contrib.muon vs our muon / mimuon.

Times one jitted ``update + apply_updates`` on the matrix parameters of a
Qwen3-shaped model (one 2-D leaf per layer and kind, as an unstacked model
holds them), in one process, warm-up excluded, median of ``--repeats``, with
``block_until_ready``. Prints ms, the ratio to ``optax.contrib.muon``, the
Newton-Schulz TFLOP/s, and the orthogonality of the update (singular-value
band of update / (lr * shape scale) over the matrices that took a Muon step).

  python -m benchmarks.step_time --preset small --repeats 10
  python -m benchmarks.step_time --preset qwen3_0_6b --dtype float32
  python -m benchmarks.step_time --scaling 256,512,1024,2048,4096

``--scaling`` instead times muon / mimuon on one square matrix per size.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mimuon_optax as mo

# (layers, hidden, intermediate, heads * head_dim, kv_heads * head_dim)
PRESETS = {
    'tiny': (2, 64, 192, 64, 32),
    'small': (4, 256, 768, 256, 128),
    'qwen3_0_6b': (28, 1024, 3072, 2048, 1024),
}


def matrix_params(preset: str, dtype) -> dict[str, jax.Array]:
  layers, d, f, q, kv = PRESETS[preset]
  shapes = {'q_proj': (d, q), 'k_proj': (d, kv), 'v_proj': (d, kv),
            'o_proj': (q, d), 'gate_proj': (d, f), 'up_proj': (d, f),
            'down_proj': (f, d)}
  key = jax.random.key(0)
  params = {}
  for layer in range(layers):
    for name, shape in shapes.items():
      key, sub = jax.random.split(key)
      params[f'layers_{layer}/{name}'] = (
          jax.random.normal(sub, shape, jnp.float32) * 0.02).astype(dtype)
  return params


def ns_flops(params, steps: int) -> float:
  """FLOPs of the NS iteration: per step X X^T, A A, (bA + cAA) X."""
  total = 0.0
  for x in params.values():
    m, n = sorted(x.shape)
    total += steps * (2 * m * m * n + 2 * m**3 + 2 * m * m * n)
  return total


def time_step(opt, params, grads, repeats):
  state = opt.init(params)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, updates

  params = jax.tree.map(jnp.copy, params)
  params, state, updates = step(params, state, grads)  # compile + warm up
  jax.block_until_ready(params)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    params, state, updates = step(params, state, grads)
    jax.block_until_ready((params, state))
    times.append(time.perf_counter() - start)
  return statistics.median(times), updates, state


def orthogonality(updates, lr, states=None):
  """min/max singular value of update / (lr * sqrt(max(1, out/in)))."""
  lows, highs = [], []
  orth = None
  if states is not None:
    orth = mo.mix_diagnostics(states).orthogonalized
  for name, u in updates.items():
    if orth is not None and not bool(orth[name]):
      continue
    fan_in, fan_out = u.shape
    scale = max(1.0, fan_out / fan_in) ** 0.5
    s = np.linalg.svd(-np.asarray(u, np.float64) / (lr * scale),
                      compute_uv=False)
    lows.append(s.min())
    highs.append(s.max())
  if not lows:
    return 'n/a (no Muon steps)'
  return f'[{min(lows):.3f}, {max(highs):.3f}]'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', choices=sorted(PRESETS), default='small')
  parser.add_argument('--dtype', choices=['float32', 'bfloat16'],
                      default='float32', help='parameter dtype')
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--ns-steps', type=int, default=5)
  parser.add_argument('--ns-dtype', default='bfloat16',
                      help='Newton-Schulz dtype of our muon / mimuon')
  parser.add_argument('--scaling', default='',
                      help='comma-separated square sizes: time vs size')
  args = parser.parse_args()
  if args.scaling:
    return scaling(args)

  dtype = jnp.dtype(args.dtype)
  params = matrix_params(args.preset, dtype)
  grads = jax.tree.map(
      lambda p: jax.random.normal(jax.random.key(1), p.shape, p.dtype), params)
  lr = 0.02
  ours = dict(learning_rate=lr, ns_steps=args.ns_steps, ns_dtype=args.ns_dtype)
  optimizers = {
      'optax.adamw': optax.adamw(lr),
      'optax.contrib.muon': optax.contrib.muon(lr),
      'muon (ours)': mo.muon(**ours),
      'muon (ours, per-leaf NS)': mo.muon(**ours, batch_same_shapes=False),
      'mimuon (ours, defaults: gap_every=1)': mo.mimuon(**ours),
      'mimuon (ours, gap_every=2)': mo.mimuon(**ours, gap_every=2),
      'mimuon (ours, gap_every=4)': mo.mimuon(**ours, gap_every=4),
  }
  flops = ns_flops(params, args.ns_steps)
  n_params = sum(x.size for x in params.values())
  print(f'# device: {jax.devices()[0].device_kind} ({jax.default_backend()}),'
        f' {platform.processor() or platform.machine()}')
  print(f'# jax {jax.__version__}, optax {optax.__version__}, preset'
        f' {args.preset}: {len(params)} matrices, {n_params / 1e6:.1f}M'
        f' params, dtype {args.dtype}, our NS {args.ns_steps} steps in'
        f' {args.ns_dtype} ='
        f' {flops / 1e12:.3f} TFLOP, median of {args.repeats}')
  print('| optimizer | ms / step | vs contrib.muon | vs muon (ours) |'
        ' NS TFLOP/s | update singular values |')
  print('|---|---|---|---|---|---|')
  results = {}
  for name, opt in optimizers.items():
    seconds, updates, state = time_step(opt, params, grads, args.repeats)
    results[name] = seconds
    uses_ns = name != 'optax.adamw'
    band = '' if not uses_ns else orthogonality(
        updates, lr, state if 'mimuon' in name else None)
    ratio = lambda base: (f'{seconds / results[base]:.2f}x'
                          if uses_ns and base in results else '')
    tflops = f'{flops / seconds / 1e12:.3f}' if uses_ns else ''
    print(f'| {name} | {seconds * 1e3:.1f} | {ratio("optax.contrib.muon")} |'
          f' {ratio("muon (ours)")} | {tflops} | {band} |', flush=True)


def scaling(args):
  """Step time of muon and mimuon (gap_every=1) on one n x n matrix."""
  print(f'# device: {jax.devices()[0].device_kind}, jax {jax.__version__},'
        f' NS {args.ns_steps} steps in {args.ns_dtype}, params {args.dtype},'
        f' median of {args.repeats}')
  print('| n | muon ms | mimuon ms | mimuon / muon | muon NS TFLOP/s |')
  print('|---|---|---|---|---|')
  for n in [int(v) for v in args.scaling.split(',')]:
    params = {'w': jax.random.normal(jax.random.key(0), (n, n),
                                     jnp.dtype(args.dtype))}
    grads = {'w': jax.random.normal(jax.random.key(1), (n, n),
                                    jnp.dtype(args.dtype))}
    kw = dict(learning_rate=0.02, ns_steps=args.ns_steps,
              ns_dtype=args.ns_dtype)
    t_muon, _, _ = time_step(mo.muon(**kw), params, grads, args.repeats)
    t_mimuon, _, _ = time_step(mo.mimuon(**kw), params, grads, args.repeats)
    tflops = ns_flops(params, args.ns_steps) / t_muon / 1e12
    print(f'| {n} | {t_muon * 1e3:.1f} | {t_mimuon * 1e3:.1f} |'
          f' {t_mimuon / t_muon:.2f}x | {tflops:.3f} |', flush=True)


if __name__ == '__main__':
  main()
