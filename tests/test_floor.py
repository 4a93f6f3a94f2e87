"""The declared floors hold: one list, checked on import, run by CI.

pyproject's `dependencies`, `_platform.MIN_VERSIONS` (the import-time check)
and `.ci/constraints-floor.txt` (what `make test-floor` installs) name the
same floors. Below one, `import mimuon_optax` fails in one line naming the
version needed (checked here by changing the version the check sees, not by
installing an old jax). The rest runs at whatever versions are installed:
in `make test-floor` at exactly the floors.
"""

import json
import pathlib
import re
import subprocess
import sys
import tomllib

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import pytest
from flax import nnx

from mimuon_optax import _platform
from mimuon_optax.models.qwen3 import Qwen3Config
from mimuon_optax.models.qwen3 import Qwen3ForCausalLM
from mimuon_optax.models.qwen3 import load_hf_checkpoint
from mimuon_optax.models.qwen3 import save_hf_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _declared_floors() -> dict[str, str]:
  deps = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project'][
      'dependencies']
  floors = {}
  for dep in deps:
    match = re.fullmatch(r'([A-Za-z0-9_.-]+)>=([0-9.]+)', dep)
    assert match, f'dependency without a floor: {dep!r}'
    floors[match[1].lower()] = match[2]
  return floors


def _pins() -> dict[str, str]:
  pins = {}
  for line in (ROOT / '.ci' / 'constraints-floor.txt').read_text().splitlines():
    line = line.split('#')[0].strip()
    if line:
      name, version = line.split('==')
      pins[name.lower()] = version
  return pins


def test_pyproject_constraints_and_import_check_name_the_same_floors():
  floors, pins = _declared_floors(), _pins()
  for name, floor in floors.items():
    assert _platform._release(pins[name]) == _platform._release(floor), name  # pylint: disable=protected-access
  for name, floor in _platform.MIN_VERSIONS.items():
    assert floors[name] == floor, name
  python = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project'][
      'requires-python']
  assert python == '>=3.11' and sys.version_info >= (3, 11)


@pytest.mark.parametrize('version, release', [
    ('0.7.2', (0, 7, 2)), ('0.8.0rc1', (0, 8, 0)),
    ('0.10.2+cuda12', (0, 10, 2)), ('0.12.0.dev20250101', (0, 12, 0)),
])
def test_release_reads_the_numbers(version, release):
  assert _platform._release(version) == release  # pylint: disable=protected-access


def test_release_compares_numbers_not_strings():
  assert _platform._release('0.7.10') > _platform._release('0.7.2')  # pylint: disable=protected-access
  assert _platform._release('0.10.0') > _platform._release('0.9.9')  # pylint: disable=protected-access


@pytest.mark.parametrize('name', sorted(_platform.MIN_VERSIONS))
def test_below_a_floor_the_check_names_the_version(monkeypatch, name):
  floor = _platform.MIN_VERSIONS[name]
  real = _platform.metadata.version
  monkeypatch.setattr(_platform.metadata, 'version',
                      lambda n: '0.1.0' if n == name else real(n))
  with pytest.raises(ImportError, match=re.escape(
      f'mimuon_optax needs {name}>={floor}, but {name} 0.1.0 is installed')):
    _platform.check_versions()
  monkeypatch.setattr(_platform.metadata, 'version',
                      lambda n: floor if n == name else real(n))
  _platform.check_versions()  # At the floor: accepted.


def test_import_fails_in_one_line_below_the_jax_floor():
  """The real import path, in a fresh process that sees jax 0.7.1."""
  code = (
      'import importlib.metadata as m, json\n'
      'real = m.version\n'
      'm.version = lambda n: "0.7.1" if n == "jax" else real(n)\n'
      'try:\n'
      '  import mimuon_optax\n'
      'except ImportError as e:\n'
      '  print(json.dumps(str(e)))\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, check=True,
                       capture_output=True, text=True, timeout=120).stdout
  message = json.loads(out.strip().splitlines()[-1])
  floor = _platform.MIN_VERSIONS['jax']
  assert message == (f'mimuon_optax needs jax>={floor}, but jax 0.7.1 is'
                     f' installed: pip install -U "jax>={floor}"')


def test_enable_x64_lowers_float64_inside_a_float32_jit(rng):
  """What precision="float64" does inside a caller's jit (jax 0.7.1 cannot).

  A batched float64 bisection (eigh_tridiagonal under vmap), traced and
  lowered by a jit that runs without x64, matches numpy's float64
  eigenvalues to float64 accuracy (returned as float32 high and low parts,
  as the gate returns float32); outside the context x64 stays off.
  """
  d_BxK = rng.standard_normal((3, 48)).astype(np.float32)
  e_BxK1 = rng.standard_normal((3, 47)).astype(np.float32)

  @jax.jit
  def eigenvalues(d, e):
    with _platform.enable_x64():
      d, e = d.astype(jnp.float64), e.astype(jnp.float64)
      ev = jax.vmap(lambda a, b: jsl.eigh_tridiagonal(a, b, eigvals_only=True)
                    )(d, e)
      high = ev.astype(jnp.float32)
      return high, (ev - high.astype(jnp.float64)).astype(jnp.float32)

  high, low = eigenvalues(d_BxK, e_BxK1)
  assert jnp.ones(1).dtype == jnp.float32  # x64 is off again.
  assert np.abs(low).max() > 0  # Digits beyond float32 were computed.
  got = np.asarray(high, np.float64) + np.asarray(low, np.float64)
  for b in range(3):
    d, e = d_BxK[b].astype(np.float64), e_BxK1[b].astype(np.float64)
    want = np.linalg.eigvalsh(np.diag(d) + np.diag(e, 1) + np.diag(e, -1))
    np.testing.assert_allclose(np.sort(got[b]), want, rtol=0,
                               atol=1e-12 * np.abs(want).max())


def test_qwen3_checkpoint_round_trip(tmp_path):
  """flax NNX and safetensors at these versions: save, load, same weights."""
  model = Qwen3ForCausalLM(Qwen3Config.tiny(num_hidden_layers=1),
                           rngs=nnx.Rngs(0))
  save_hf_checkpoint(model, tmp_path)
  loaded = load_hf_checkpoint(tmp_path)
  want = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  got = dict(nnx.to_flat_state(nnx.state(loaded, nnx.Param)))
  assert got.keys() == want.keys() and len(want) > 5
  for path, var in want.items():
    np.testing.assert_array_equal(np.asarray(got[path][...]),
                                  np.asarray(var[...]), err_msg=str(path))
