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
  python -m benchmarks.step_time --gram --repeats 5
  python -m benchmarks.step_time --train-step 8,128 --rounds 6
  python -m benchmarks.step_time --host-job --preset qwen3_0_6b
  python -m benchmarks.step_time --preset yolo26n --rounds 6

``--scaling`` instead times muon / mimuon on one square matrix per size.
``--train-step B,T`` times a whole jitted training step (forward, backward,
optimizer) of a Qwen3 shaped like the preset (bf16 activations, float32
params, B sequences of T tokens), in interleaved rounds: where the gate's
host work can overlap the forward and backward pass (``lagged_gate``).
``--host-job`` times the host gate's float64 work alone (scaling, ``syrk``
Gram, values-only ``syevr``), one matrix per shape on one thread, and sums
it over the preset: the core-seconds per step an accelerator host must find.
``--preset yolo26n`` times muon, musgd and mimuon on YOLO26n's conv kernels
(HWIO, as ``(kh*kw*in, out)`` matrices through
``yolo26_weight_dimension_numbers``), in interleaved rounds, with each
one's ratio to muon measured in the same process.
``--gram`` times Gram Newton-Schulz against standard Newton-Schulz (issue
24) per shape and dtype, and over aspect ratios for the crossover.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy
from flax import nnx

import mimuon_optax as mo
from mimuon_optax import _gap
from mimuon_optax import training
from mimuon_optax.models.qwen3 import Qwen3Config, Qwen3ForCausalLM
from mimuon_optax.models.qwen3 import qwen3_weight_dimension_numbers
from mimuon_optax.models.qwen3.loss import next_token_loss

# (layers, hidden, intermediate, heads * head_dim, kv_heads * head_dim)
PRESETS = {
    'tiny': (2, 64, 192, 64, 32),
    'small': (4, 256, 768, 256, 128),
    'qwen3_0_6b': (28, 1024, 3072, 2048, 1024),
}


# YOLO26 scale per preset (80 classes, ultralytics' default).
YOLO26_PRESETS = {'yolo26n': 'n'}


def yolo26_params(preset: str, dtype) -> tuple[dict[str, jax.Array], Any]:
  """(YOLO26 conv kernels by path, their Muon dimension numbers)."""
  # pylint: disable=import-outside-toplevel
  from mimuon_optax._paths import path_names
  from mimuon_optax.models.yolo26 import optim as yolo_optim
  from mimuon_optax.models.yolo26.modeling import YOLO26, YOLO26Config
  model = nnx.eval_shape(lambda: YOLO26(
      YOLO26Config.from_scale(YOLO26_PRESETS[preset]), rngs=nnx.Rngs(0)))
  shapes = jax.tree_util.tree_flatten_with_path(
      nnx.as_pure(nnx.state(model, nnx.Param)))[0]
  # numpy draws: one eager jax.random call per kernel shape compiles each.
  rng = np.random.default_rng(0)
  params = {'/'.join(path_names(path)): jnp.asarray(
      rng.standard_normal(leaf.shape, np.float32) * 0.02, dtype)
            for path, leaf in shapes if len(leaf.shape) == 4}
  return params, yolo_optim.yolo26_weight_dimension_numbers(params)


def yolo26_rows(args):
  """muon / musgd / mimuon on YOLO26's conv matrices, interleaved."""
  params, dims = yolo26_params(args.preset, jnp.dtype(args.dtype))
  grads = jax.tree.map(lambda p: p * 3 + 0.01, params)
  # One Newton-Schulz setting for all three (--ns-steps, --ns-dtype), so the
  # ratios compare the optimizers, not NS precisions (musgd's own default
  # is float32, muon's and mimuon's bfloat16).
  ours = dict(learning_rate=0.02, ns_steps=args.ns_steps,
              ns_dtype=args.ns_dtype, weight_dimension_numbers=dims)
  steppers = {
      'muon (ours)': Stepper(mo.muon(**ours), params, grads),
      'musgd (ours)': Stepper(mo.musgd(**ours), params, grads),
      'mimuon (ours, defaults)': Stepper(mo.mimuon(**ours), params, grads)}
  n_params = sum(x.size for x in params.values())
  print(f'# device: {jax.devices()[0].device_kind} ({jax.default_backend()});'
        f' preset {args.preset}: {len(params)} conv matrices,'
        f' {n_params / 1e6:.2f}M params, dtype {args.dtype}; NS'
        f' {args.ns_steps} steps in {args.ns_dtype} for all three;'
        f' {max(args.rounds, 1)} interleaved rounds, median of'
        f' {args.repeats} steps each')
  print('| optimizer | ms / step (median of rounds) | vs muon (ours) |')
  print('|---|---|---|')
  rounds = {name: [] for name in steppers}
  for _ in range(max(args.rounds, 1)):
    for name, stepper in steppers.items():
      rounds[name].append(stepper.median(args.repeats))
  base = rounds['muon (ours)']
  for name, times in rounds.items():
    ratio = statistics.median(t / b for t, b in zip(times, base))
    print(f'| {name} | {statistics.median(times) * 1e3:.1f} |'
          f' {ratio:.2f}x |', flush=True)
  return rounds


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


class Stepper:
  """One optimizer's jitted ``update + apply_updates`` on its own copy of
  the params, compiled and warmed up at construction, timed on demand."""

  def __init__(self, opt, params, grads):
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, grads):
      updates, state = opt.update(grads, state, params)
      return optax.apply_updates(params, updates), state, updates

    self._step, self.grads = step, grads
    self.params = jax.tree.map(jnp.copy, params)
    self.state = opt.init(params)
    self.run()  # compile + warm up

  def run(self) -> float:
    """Seconds of one step, to ``block_until_ready``."""
    self.t0 = start = time.perf_counter()
    self._advance()
    jax.block_until_ready((self.params, self.state))
    return time.perf_counter() - start

  def _advance(self) -> None:
    self.params, self.state, self.updates = self._step(
        self.params, self.state, self.grads)

  def median(self, repeats: int) -> float:
    return statistics.median(self.run() for _ in range(repeats))


class TrainStepper(Stepper):
  """A whole jitted training step of a Qwen3 model on fixed tokens.

  ``training.make_train_step`` (forward, backward, optimizer), timed like
  :class:`Stepper`.
  """

  def __init__(self, opt, graphdef, params, tokens):  # pylint: disable=super-init-not-called
    self._step = training.make_train_step(opt, next_token_loss,
                                          graphdef=graphdef)
    self.tokens = tokens
    self.params = jax.tree.map(jnp.copy, params)
    self.state = opt.init(params)
    self.run()  # compile + warm up

  def _advance(self) -> None:
    self.params, self.state, self.loss = self._step(
        self.params, self.state, self.tokens)


def qwen3_config(preset: str) -> Qwen3Config:
  """A Qwen3 with the preset's matrix shapes (the 0.6B one itself)."""
  if preset == 'qwen3_0_6b':
    return Qwen3Config.qwen3_0_6b(dtype=jnp.bfloat16, scan_layers=True)
  layers, d, f, q, kv = PRESETS[preset]
  head_dim = 32
  return Qwen3Config.tiny(
      hidden_size=d, intermediate_size=f, num_hidden_layers=layers,
      num_attention_heads=q // head_dim, num_key_value_heads=kv // head_dim,
      head_dim=head_dim, dtype=jnp.bfloat16, scan_layers=True)


def train_step_rows(args, only: tuple[str, ...] = ()):
  """Whole training steps, one interleaved round of every arm at a time.

  ``only``: time just these arms (muon is always timed: the baseline).
  """
  batch, seq = (int(v) for v in args.train_step.split(','))
  cfg = qwen3_config(args.preset)
  graphdef, state = nnx.split(Qwen3ForCausalLM(cfg, rngs=nnx.Rngs(0)),
                              nnx.Param)
  params = nnx.as_pure(state)
  dims = qwen3_weight_dimension_numbers(params)
  tokens = jax.random.randint(jax.random.key(3), (batch, seq + 1), 0,
                              cfg.vocab_size)
  ours = dict(learning_rate=0.02, ns_steps=args.ns_steps,
              ns_dtype=args.ns_dtype, weight_dimension_numbers=dims)
  arms = {
      'optax.adamw': optax.adamw(0.02),
      'muon (ours)': mo.muon(**ours),
      'mimuon (ours, defaults)': mo.mimuon(**ours),
      'mimuon (ours, lagged_gate=True)': mo.mimuon(**ours, lagged_gate=True),
      'mimuon (ours, gap_every=4)': mo.mimuon(**ours, gap_every=4),
      'mimuon (ours, gap_every=4, lagged_gate=True)': mo.mimuon(
          **ours, gap_every=4, lagged_gate=True),
  }
  if only:
    arms = {k: v for k, v in arms.items() if k in only or k == 'muon (ours)'}
  n_params = sum(x.size for x in jax.tree.leaves(params))
  print(f'# device: {jax.devices()[0].device_kind} ({jax.default_backend()}),'
        f' {platform.processor() or platform.machine()}, jax'
        f' {jax.__version__}, optax {optax.__version__}')
  print(f'# whole training step of a Qwen3 shaped like preset {args.preset}'
        f' ({n_params / 1e6:.1f}M params, float32; bf16 activations),'
        f' batch {batch} x {seq} tokens; {args.rounds} interleaved rounds,'
        f' median of {args.repeats} steps each')
  times: dict[str, list[float]] = {name: [] for name in arms}
  # Where in the step the host gate's first callback runs (a fraction of
  # the step's wall time), from a wrapper around it, installed before the
  # steps are traced (the callback binds it then): timed steps only.
  starts: dict[str, list[float]] = {name: [] for name in arms}
  calls: list[float] = []
  start_jobs = _gap._PENDING.start  # pylint: disable=protected-access

  def recorded(*a):
    calls.append(time.perf_counter())
    return start_jobs(*a)

  _gap._PENDING.start = recorded  # pylint: disable=protected-access
  try:
    steppers = {name: TrainStepper(opt, graphdef, params, tokens)
                for name, opt in arms.items()}
    for _ in range(max(1, args.rounds)):
      for name, stepper in steppers.items():
        round_times = []
        for _ in range(args.repeats):
          calls.clear()
          round_times.append(stepper.run())
          if calls:
            starts[name].append((calls[0] - stepper.t0) / round_times[-1])
        times[name].append(statistics.median(round_times))
  finally:
    _gap._PENDING.start = start_jobs  # pylint: disable=protected-access
  base = times['muon (ours)']
  print('| optimizer | ms / step | vs muon (ours), median of rounds |'
        ' rounds | host gate starts at |')
  print('|---|---|---|---|---|')
  for name, ts in times.items():
    ratios = [t / b for t, b in zip(ts, base)]
    where = (f'{statistics.median(starts[name]):.0%} of the step'
             if starts[name] else '')
    print(f'| {name} | {statistics.median(ts) * 1e3:.1f} |'
          f' {statistics.median(ratios):.2f}x |'
          f' {min(ratios):.2f}-{max(ratios):.2f}x | {where} |', flush=True)
  return times, starts


def host_job_rows(args):
  """Single-thread host gate time per matrix shape, summed over the preset."""
  params = matrix_params(args.preset, jnp.dtype(args.dtype))
  counts: dict[tuple[int, ...], int] = {}
  for x in params.values():
    counts[x.shape] = counts.get(x.shape, 0) + 1
  print(f'# {platform.processor() or platform.machine()}, scipy'
        f' {scipy.__version__}, one thread; preset {args.preset}'
        f' ({len(params)} matrices), min of {args.repeats}')
  print('| shape | matrices | ms per matrix | ms per step |')
  print('|---|---|---|---|')
  total = 0.0
  for shape, count in counts.items():
    x = np.asarray(next(v for v in params.values() if v.shape == shape))
    x = x + np.random.default_rng(0).standard_normal(shape).astype(x.dtype)
    seconds = min(_timed(_gap._host_matrix, x)  # pylint: disable=protected-access
                  for _ in range(max(1, args.repeats)))
    total += count * seconds
    print(f'| {shape[0]}x{shape[1]} | {count} | {seconds * 1e3:.1f} |'
          f' {count * seconds * 1e3:.0f} |', flush=True)
  print(f'| all | {len(params)} | | **{total * 1e3:.0f} core-ms** |')
  return total


def _timed(fn, *args) -> float:
  start = time.perf_counter()
  fn(*args)
  return time.perf_counter() - start


def time_step(opt, params, grads, repeats):
  stepper = Stepper(opt, params, grads)
  return stepper.median(repeats), stepper.updates, stepper.state


def interleaved_rows(params, grads, ours, args):
  """muon vs mimuon at defaults in alternating rounds (drift cancels)."""
  steppers = [Stepper(mo.muon(**ours), params, grads),
              Stepper(mo.mimuon(**ours), params, grads)]
  print(f'\n# Interleaved: {args.rounds} rounds of (muon, mimuon at'
        f' defaults), median of {args.repeats} steps each, same process')
  print('| round | muon (ours) ms | mimuon (ours, defaults) ms |'
        ' mimuon / muon |')
  print('|---|---|---|---|')
  ratios = []
  for r in range(args.rounds):
    muon, mimuon = (s.median(args.repeats) for s in steppers)
    ratios.append(mimuon / muon)
    print(f'| {r + 1} | {muon * 1e3:.1f} | {mimuon * 1e3:.1f} |'
          f' {ratios[-1]:.2f}x |', flush=True)
  print(f'| median | | | **{statistics.median(ratios):.2f}x**'
        f' ({min(ratios):.2f}-{max(ratios):.2f}x) |', flush=True)


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
  parser.add_argument('--preset', choices=sorted(PRESETS)
                      + sorted(YOLO26_PRESETS), default='small')
  parser.add_argument('--dtype', choices=['float32', 'bfloat16'],
                      default='float32', help='parameter dtype')
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--rounds', type=int, default=6,
                      help='interleaved muon / mimuon rounds (0: none)')
  parser.add_argument('--ns-steps', type=int, default=5)
  parser.add_argument('--ns-dtype', default='bfloat16',
                      help='Newton-Schulz dtype of our muon / mimuon')
  parser.add_argument('--scaling', default='',
                      help='comma-separated square sizes: time vs size')
  parser.add_argument('--gram', action='store_true',
                      help='Gram NS vs standard NS per shape')
  parser.add_argument('--train-step', default='',
                      help='B,T: whole Qwen3 training steps instead')
  parser.add_argument('--host-job', action='store_true',
                      help="the host gate's float64 work per step, one thread")
  args = parser.parse_args()
  if args.preset in YOLO26_PRESETS:
    return yolo26_rows(args)
  if args.host_job:
    return host_job_rows(args)
  if args.train_step:
    return train_step_rows(args)
  if args.scaling:
    return scaling(args)
  if args.gram:
    return gram_rows(args)

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
      'mimuon (ours, precision="host")': mo.mimuon(**ours, precision='host'),
      'mimuon (ours, precision="float64")': mo.mimuon(
          **ours, precision='float64'),
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
  if args.rounds > 0:
    interleaved_rows(params, grads, ours, args)
  wide_gate_rows(args)


def wide_gate_rows(args, count: int = 4, shape=(1024, 3072)):
  """The gate's two float64 paths on ``count`` Qwen3-0.6B MLP matrices."""
  dtype = jnp.dtype(args.dtype)
  keys = jax.random.split(jax.random.key(2), 2 * count)
  params = {f'mlp_{i}': jax.random.normal(keys[i], shape, dtype) * 0.02
            for i in range(count)}
  grads = {f'mlp_{i}': jax.random.normal(keys[count + i], shape, dtype)
           for i in range(count)}
  ours = dict(learning_rate=0.02, ns_steps=args.ns_steps,
              ns_dtype=args.ns_dtype)
  print(f'\n# {count} matrices of {shape[0]}x{shape[1]}, same settings')
  print('| optimizer | ms / step | vs muon (ours) |')
  print('|---|---|---|')
  base = None
  for name, opt in [
      ('muon (ours)', mo.muon(**ours)),
      ('mimuon (ours, precision="host")', mo.mimuon(**ours, precision='host')),
      ('mimuon (ours, precision="float64")',
       mo.mimuon(**ours, precision='float64'))]:
    seconds = time_step(opt, params, grads, max(3, args.repeats // 2))[0]
    base = base or seconds
    print(f'| {name} | {seconds * 1e3:.1f} | {seconds / base:.2f}x |',
          flush=True)


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


# (name, shapes): one matrix each, then the whole small preset (28 matrices).
GRAM_SHAPES = [('1024x3072', (1024, 3072)), ('3072x1024', (3072, 1024)),
               ('1024x1024', (1024, 1024))]
GRAM_ASPECTS = (1.0, 1.25, 1.5, 1.75, 2.0, 3.0)  # k = 512: the crossover


def interleaved_medians(fns, arg, repeats):
  """Median seconds of each jitted fn on arg, run in turns (drift cancels)."""
  for fn in fns:
    jax.block_until_ready(fn(arg))  # compile + warm up
  times = [[] for _ in fns]
  for _ in range(repeats):
    for fn, t in zip(fns, times):
      start = time.perf_counter()
      jax.block_until_ready(fn(arg))
      t.append(time.perf_counter() - start)
  return [statistics.median(t) for t in times]


def gram_rows(args):
  """Gram NS vs standard NS (each with its default restarts), one process."""
  schedule = mo.ns_schedule('polar_express', args.ns_steps)
  print(f'# device: {jax.devices()[0].device_kind} ({jax.default_backend()}),'
        f' {platform.processor() or platform.machine()}, jax'
        f' {jax.__version__}; polar_express {args.ns_steps} steps, jitted'
        f' NS only, median of {args.repeats} interleaved runs')
  print('| input | NS dtype | standard ms | gram ms | gram / standard |'
        ' auto / standard |')
  print('|---|---|---|---|---|---|')
  rows = [(name, {'x': jax.random.normal(jax.random.key(0), shape)})
          for name, shape in GRAM_SHAPES]
  rows.append(('small preset (28 matrices)',
               matrix_params('small', jnp.float32)))
  for name, tree in rows:
    for ns_dtype in ('float32', 'bfloat16'):
      fns = [jax.jit(lambda t, m=m: mo.scale_by_newton_schulz(
          ns_dtype=ns_dtype, ns_method=m).update(t, None)[0])
             for m in ('standard', 'gram', 'auto')]
      std, gram, auto = interleaved_medians(fns, tree, args.repeats)
      print(f'| {name} | {ns_dtype} | {std * 1e3:.1f} | {gram * 1e3:.1f} |'
            f' {gram / std:.2f}x | {auto / std:.2f}x |', flush=True)
  print('\nCrossover: one 512 x n matrix, float32 and bfloat16 NS')
  print('| n / 512 | NS dtype | standard ms | gram ms | gram / standard |')
  print('|---|---|---|---|---|')
  for ratio in GRAM_ASPECTS:
    x = jax.random.normal(jax.random.key(0), (1, 512, int(512 * ratio)))
    for ns_dtype in ('float32', 'bfloat16'):
      fns = [jax.jit(lambda x, m=m: mo.newton_schulz(
          x, schedule, ns_dtype=ns_dtype, ns_method=m))
             for m in ('standard', 'gram')]
      std, gram = interleaved_medians(fns, x, args.repeats)
      print(f'| {ratio:g} | {ns_dtype} | {std * 1e3:.1f} | {gram * 1e3:.1f} |'
            f' {gram / std:.2f}x |', flush=True)


if __name__ == '__main__':
  main()
