"""The README and the docs pages: their Python examples run as written, and
the README stays a short front page whose table is the one the demo prints.

Each page's single-device examples run in this process, one namespace per
page, in order. docs/multidevice.md's examples (they set XLA_FLAGS first)
run in order as one script in a fresh interpreter, where the flag can still
take effect.
"""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import optax

from experiments.harness import cli
from experiments import compare

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MULTI_DEVICE_PAGE = DOCS / "multidevice.md"
DEVICE_FLAG = "xla_force_host_platform_device_count"


def python_blocks(path: pathlib.Path) -> list[str]:
  """The ```python blocks of a Markdown page, in order."""
  return re.findall(r"^```python\n(.*?)^```", path.read_text(), re.S | re.M)


def single_device_pages() -> list[pathlib.Path]:
  pages = [README] + sorted(DOCS.glob("*.md"))
  return [p for p in pages if p != MULTI_DEVICE_PAGE and python_blocks(p)]


def _run_page(path: pathlib.Path) -> dict:
  namespace = {}
  for block in python_blocks(path):
    exec(compile(block, str(path), "exec"), namespace)  # pylint: disable=exec-used
  return namespace


def test_readme_is_short():
  lines = README.read_text().splitlines()
  assert len(lines) <= 200, len(lines)


def test_readme_links_resolve():
  """Every relative link of the README names a file of the checkout."""
  links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
  local = [l for l in links if not l.startswith(("http://", "https://"))]
  assert any(l.startswith("docs/") for l in local)
  missing = [l for l in local if not (ROOT / l).exists()]
  assert not missing, missing


def test_readme_snippet_runs(capsys):
  namespace = _run_page(README)
  # The quickstart's one step moved the matrices and printed the gate.
  assert float(np.abs(namespace["params"]["w1"]).max()) > 0
  assert "w1" in capsys.readouterr().out


def test_examples_are_where_expected():
  pages = {p.name for p in single_device_pages()}
  assert {"README.md", "getting_started.md"} <= pages, pages
  assert DEVICE_FLAG in python_blocks(MULTI_DEVICE_PAGE)[0]
  assert len(python_blocks(MULTI_DEVICE_PAGE)) >= 3


@pytest.mark.parametrize("path", single_device_pages(), ids=lambda p: p.name)
def test_single_device_examples_run(path):
  namespace = _run_page(path)
  if path.name == "getting_started.md":
    assert isinstance(namespace["direction"], optax.GradientTransformation)
    assert float(np.abs(namespace["params"]["w1"]).max()) > 0


def _markdown_table(text: str, first_header: str) -> list[list[str]]:
  start = text.index(f"| {first_header} |")
  rows = []
  for line in text[start:].splitlines():
    if not line.startswith("|"):
      break
    rows.append([c.strip() for c in line.strip("|").split("|")])
  return [rows[0]] + rows[2:]  # Without the |---| line.


@pytest.mark.parametrize("path", [README, DOCS / "getting_started.md"],
                         ids=lambda p: p.name)
def test_demo_table_has_the_demos_columns_and_labels(path):
  """The README's table is the one `make demo` prints (same headers, labels)."""
  cfg = cli.parse_with_presets(compare.CompareConfig, "", compare.PRESETS,
                               ["--preset", "demo"])
  table = _markdown_table(path.read_text(), "optimizer")
  assert table[0] == compare._headers(cfg)  # pylint: disable=protected-access
  labels = [compare._label(cfg, o) for o in cfg.optimizers]  # pylint: disable=protected-access
  assert [row[0] for row in table[1:]] == labels
  for row in table[1:]:  # Losses and gap to 3 decimals, as printed.
    assert all(re.fullmatch(r"\d+\.\d{3}", c) for c in row[2:5]), row
  assert "vary in the third decimal" in " ".join(path.read_text().split())


@pytest.mark.slow
def test_multi_device_examples_run(tmp_path):
  checks = """
assert len(jax.devices()) == 8
assert jax.numpy.isfinite(loss), loss
assert step == 100
assert all(leaf.sharding.mesh.devices.size == 8
           for leaf in jax.tree.leaves(params))
print("docs multi-device examples OK")
"""
  script = tmp_path / "docs_multi_device.py"
  script.write_text("\n".join(python_blocks(MULTI_DEVICE_PAGE)) + checks)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, str(script)], env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-6000:]
  assert "docs multi-device examples OK" in proc.stdout
