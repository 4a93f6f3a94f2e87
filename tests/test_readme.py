"""The README's Python examples run as written.

The single-device examples run in this process, one namespace in order.
The "Multi-device and TPU pods" examples (from the block that sets
XLA_FLAGS on) run in order as one script in a fresh interpreter, where the
flag can still take effect.
"""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import optax

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
DEVICE_FLAG = "xla_force_host_platform_device_count"


def python_blocks() -> tuple[list[str], list[str]]:
  """(single-device blocks, multi-device blocks) of README.md, in order."""
  blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(),
                      re.S | re.M)
  first_multi = next(i for i, b in enumerate(blocks) if DEVICE_FLAG in b)
  return blocks[:first_multi], blocks[first_multi:]


def test_readme_has_both_kinds_of_examples():
  single, multi = python_blocks()
  assert len(single) >= 2 and len(multi) >= 3


def test_single_device_examples_run(capsys):
  namespace = {}
  for block in python_blocks()[0]:
    exec(compile(block, str(README), "exec"), namespace)
  assert isinstance(namespace["direction"], optax.GradientTransformation)
  # The quickstart's one step moved the matrices and printed the gate.
  assert float(np.abs(namespace["params"]["w1"]).max()) > 0
  assert "w1" in capsys.readouterr().out


@pytest.mark.slow
def test_multi_device_examples_run(tmp_path):
  checks = """
assert len(jax.devices()) == 8
assert jax.numpy.isfinite(loss), loss
assert step == 100
assert all(leaf.sharding.mesh.devices.size == 8
           for leaf in jax.tree.leaves(params))
print("README multi-device examples OK")
"""
  script = tmp_path / "readme_multi_device.py"
  script.write_text("\n".join(python_blocks()[1]) + checks)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, str(script)], env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-6000:]
  assert "README multi-device examples OK" in proc.stdout
