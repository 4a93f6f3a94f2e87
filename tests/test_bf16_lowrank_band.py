"""The bf16 Newton-Schulz band on low-rank inputs (issue 14; docs table).

A rank-k gradient should map to ~U_k V_k^T: k singular values near 1, the
rest 0. In bf16 the rounding of X X^T creates small singular values in the
null space, which the schedule then pushes towards 1. Run with ``-s`` to
print the measured band; docs/dropin.md ("bf16 on low-rank inputs") quotes
it.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import mimuon_optax as mo

SHAPES = [(4, 4), (32, 32), (64, 256)]
SCHEDULES = [('polar_express', 5), ('jordan', 5), ('polar_express', 8)]


def band(name, steps, ns_dtype, rank, seeds=range(5)):
  """(min, max) of the top-k and max of the null-space singular values."""
  schedule = mo.ns_schedule(name, steps)
  top_lo, top_hi, rest_hi = np.inf, 0.0, 0.0
  for shape in SHAPES:
    for seed in seeds:
      rng = np.random.default_rng(seed)
      x = sum(np.outer(rng.standard_normal(shape[0]),
                       rng.standard_normal(shape[1])) for _ in range(rank))
      out = mo.newton_schulz(jnp.asarray(x, jnp.float32)[None], schedule,
                             ns_dtype=ns_dtype)[0]
      s = np.linalg.svd(np.asarray(out, np.float64), compute_uv=False)
      top_lo, top_hi = min(top_lo, s[:rank].min()), max(top_hi, s[:rank].max())
      rest_hi = max(rest_hi, s[rank:].max())
  return top_lo, top_hi, rest_hi


@pytest.mark.parametrize('name,steps', SCHEDULES)
@pytest.mark.parametrize('rank', [1, 2])
def test_low_rank_band(name, steps, rank):
  f32 = band(name, steps, 'float32', rank)
  b16 = band(name, steps, 'bfloat16', rank)
  print(f'\n{name}/{steps} rank {rank}: float32 top [{f32[0]:.2f},'
        f' {f32[1]:.2f}] null <= {f32[2]:.1e}; bfloat16 top [{b16[0]:.2f},'
        f' {b16[1]:.2f}] null <= {b16[2]:.2f}')
  assert f32[2] < 1e-3  # float32: the null space stays ~0.
  assert 0.6 < b16[0] and b16[1] < 1.2
  # bf16: the null space is pushed up to ~0.4-1.1 (documented, not fixed).
  assert 0.2 < b16[2] < 1.2
