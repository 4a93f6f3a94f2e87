"""Sharded optimizer step: distributed Newton-Schulz vs plain GSPMD.

Times one jitted ``update + apply_updates`` of our ``muon`` / ``mimuon`` on
the matrix parameters of a Qwen3-shaped model sharded on a (data=2, fsdp=4)
mesh of simulated CPU devices (``--devices``, default 8, set through
``XLA_FLAGS`` before jax starts), warm-up excluded, median of ``--repeats``.

  plain GSPMD   muon(...) under jax.jit: GSPMD partitions every NS matmul of
                the sharded matrices and communicates inside each iteration.
  mesh=         muon(..., mesh=mesh): whole matrices spread over the devices
                (all-to-all in, local NS, back to the params' sharding).

Layouts: ``fsdp`` shards one 2-D leaf per layer and kind along its larger
axis over "fsdp"; ``layers`` stacks the layers (L, D_in, D_out) and shards L
over "fsdp". Also prints the collectives in each compiled step. All
variants are compiled first and then timed in turn, round after round.

  python -m benchmarks.sharded_step --preset small --repeats 10
"""

from __future__ import annotations

import argparse
import os
import sys

if __name__ == '__main__':
  _devices = 8
  for _i, _a in enumerate(sys.argv):
    if _a.startswith('--devices='):
      _devices = int(_a.split('=')[1])
    elif _a == '--devices':
      _devices = int(sys.argv[_i + 1])
  os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') +
      f' --xla_force_host_platform_device_count={_devices}')

# pylint: disable=g-import-not-at-top,wrong-import-position
import platform
import re
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import mimuon_optax as mo
from mimuon_optax.models.qwen3 import sharding as qwen3_sharding

# (layers, hidden, intermediate, heads * head_dim, kv_heads * head_dim)
PRESETS = {
    'tiny': (4, 64, 192, 64, 32),
    'small': (4, 256, 768, 256, 128),
    'medium': (4, 512, 1536, 512, 256),
}


def matrix_params(preset: str, layout: str):
  layers, d, f, q, kv = PRESETS[preset]
  shapes = {'q_proj': (d, q), 'k_proj': (d, kv), 'v_proj': (d, kv),
            'o_proj': (q, d), 'gate_proj': (d, f), 'up_proj': (d, f),
            'down_proj': (f, d)}
  key = jax.random.key(0)
  params, dims = {}, {}
  for name, shape in shapes.items():
    key, sub = jax.random.split(key)
    stack = jax.random.normal(sub, (layers,) + shape, jnp.float32) * 0.02
    if layout == 'layers':
      params[f'layers/{name}'] = stack
      dims[f'layers/{name}'] = mo.MuonDimensionNumbers(1, 2)
    else:
      for layer in range(layers):
        params[f'layers_{layer}/{name}'] = stack[layer]
        dims[f'layers_{layer}/{name}'] = mo.MuonDimensionNumbers(0, 1)
  return params, dims


def specs_for(params, layout: str, fsdp: int):
  def spec(x):
    if layout == 'layers':
      return P('fsdp')
    axis = max(range(x.ndim), key=lambda a: (x.shape[a] % fsdp == 0,
                                             x.shape[a], -a))
    return P(*([None] * axis + ['fsdp']))
  return jax.tree.map(spec, params)


def collectives(compiled_text: str) -> str:
  names = re.findall(r' (all-reduce|all-gather|all-to-all|collective-permute|'
                     r'reduce-scatter)(?:-start)?\(', compiled_text)
  return ', '.join(f'{n} x{names.count(n)}' for n in sorted(set(names))) or '-'


def compile_step(tx, params, shardings, mesh, grads):
  """The jitted step, compiled, and a fresh (params, state) for it."""
  state_sharding = mo.opt_state_shardings(tx.init, params, shardings, mesh)
  state = jax.jit(tx.init, out_shardings=state_sharding)(params)

  def step(p, s, g):
    updates, s = tx.update(g, s, p)
    return optax.apply_updates(p, updates), s

  step = jax.jit(step, in_shardings=(shardings, state_sharding, shardings),
                 out_shardings=(shardings, state_sharding),
                 donate_argnums=(0, 1))
  params = jax.tree.map(jnp.copy, params)
  compiled = step.lower(params, state, grads).compile()
  params, state = compiled(params, state, grads)  # warm-up
  jax.block_until_ready((params, state))
  return compiled, [params, state]


def time_interleaved(steps, grads, repeats):
  """Median seconds per step; one step of each in turn, ``repeats`` rounds
  (the machine is shared: drift hits every variant alike)."""
  times = [[] for _ in steps]
  for _ in range(repeats):
    for i, (compiled, carry) in enumerate(steps):
      start = time.perf_counter()
      carry[:] = compiled(*carry, grads)
      jax.block_until_ready(carry)
      times[i].append(time.perf_counter() - start)
  return [statistics.median(t) for t in times]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', choices=sorted(PRESETS), default='small')
  parser.add_argument('--layouts', default='fsdp,layers')
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--devices', type=int, default=8)
  parser.add_argument('--data', type=int, default=2, help='data axis size')
  parser.add_argument('--mimuon', action='store_true',
                      help='also time mimuon(mesh=...) (no GSPMD baseline:'
                      ' it can deadlock on simulated CPU devices)')
  args = parser.parse_args()

  mesh = qwen3_sharding.make_mesh(data=args.data)
  fsdp = mesh.shape['fsdp']
  print(f'jax {jax.__version__}, jaxlib {jax.lib.__version__}, optax'
        f' {optax.__version__}; {jax.device_count()} x'
        f' {jax.devices()[0].platform} devices on {os.cpu_count()} cores'
        f' ({platform.processor() or platform.machine()}); mesh'
        f' {dict(mesh.shape)}; preset {args.preset}'
        f' {PRESETS[args.preset]}; float32, ns_dtype float32; median of'
        f' {args.repeats}')
  print()
  print('| layout | optimizer | path | ms / step | vs plain GSPMD |'
        ' collectives in the step |')
  print('|---|---|---|---|---|---|')
  kwargs = dict(learning_rate=0.02, ns_dtype='float32')
  for layout in args.layouts.split(','):
    params, dims = matrix_params(args.preset, layout)
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s),
                             specs_for(params, layout, fsdp),
                             is_leaf=lambda x: isinstance(x, P))
    params = jax.device_put(params, shardings)
    grads = jax.device_put(jax.tree.map(
        lambda p: jax.random.normal(jax.random.key(1), p.shape, p.dtype),
        params), shardings)
    runs = [
        ('muon', 'plain GSPMD', mo.muon(weight_dimension_numbers=dims,
                                        **kwargs)),
        ('muon', 'mesh=mesh', mo.muon(weight_dimension_numbers=dims,
                                      mesh=mesh, **kwargs)),
        ('muon', "mesh=mesh, mesh_axes='fsdp'", mo.muon(
            weight_dimension_numbers=dims, mesh=mesh, mesh_axes='fsdp',
            **kwargs)),
    ]
    if args.mimuon:
      runs.append(('mimuon', 'mesh=mesh', mo.mimuon(
          weight_dimension_numbers=dims, mesh=mesh, **kwargs)))
    steps = [compile_step(tx, params, shardings, mesh, grads)
             for _, _, tx in runs]
    seconds = time_interleaved(steps, grads, args.repeats)
    for (name, path, _), sec, (compiled, _) in zip(runs, seconds, steps):
      print(f'| {layout} | {name} | {path} | {sec * 1e3:.1f} |'
            f' {seconds[0] / sec:.2f}x | {collectives(compiled.as_text())} |',
            flush=True)


if __name__ == '__main__':
  main()
