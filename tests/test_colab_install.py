"""The notebooks' install cell leaves a preinstalled jax/jaxlib alone.

Colab ships a jax/jaxlib built for its GPU/TPU; if pip upgraded them, the
runtime's plugin would no longer match. The cell's `pip_install_keeping_jax`
pins both to the installed versions when they meet our lower bound. Here a
fresh venv sees this venv's packages (a .pth line: the "preinstalled" jax),
and the cell's exact function runs pip with `--dry-run --report`, offline:
jax and jaxlib must not be in what pip would install, even when pip is told
to upgrade eagerly and a newer jax (and a flax that needs it) is on offer.
Without the pin, the same pip call would install that jax: the check can
fail.
"""

import ast
import json
import pathlib
import shutil
import site
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
HELPER = "pip_install_keeping_jax"


def install_helper_source(notebook: pathlib.Path) -> str:
  """The setup cell's imports and `pip_install_keeping_jax`, verbatim."""
  cell = "".join(json.loads(notebook.read_text())["cells"][1]["source"])
  tree = ast.parse(cell)
  parts = [ast.get_source_segment(cell, node) for node in tree.body
           if isinstance(node, (ast.Import, ast.ImportFrom))
           or (isinstance(node, ast.FunctionDef) and node.name == HELPER)]
  assert any(p.startswith(f"def {HELPER}(") for p in parts), notebook
  return "\n".join(parts)


def _fake_wheel(folder: pathlib.Path, name: str, version: str,
                requires: tuple[str, ...] = ()) -> None:
  """An empty wheel of `name==version`: a newer release on offer."""
  dist_info = f"{name}-{version}.dist-info"
  metadata = [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}"]
  metadata += [f"Requires-Dist: {r}" for r in requires]
  with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as z:
    z.writestr(f"{dist_info}/METADATA", "\n".join(metadata) + "\n")
    z.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
               "Root-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr(f"{dist_info}/RECORD", "")


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
  """(python of a venv that sees this venv's jax, the package's sources,
  a folder of newer fake jax/flax wheels)."""
  tmp = tmp_path_factory.mktemp("colab")
  venv = tmp / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv],
                 check=True, timeout=120)
  python = venv / "bin" / "python"
  purelib = subprocess.run(
      [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
      check=True, capture_output=True, text=True, timeout=60).stdout.strip()
  # The "preinstalled" packages: this venv's (jax, jaxlib, flax, pip, ...).
  # Its editable mimuon_optax stays unseen (.pth files there are not run).
  (pathlib.Path(purelib) / "preinstalled.pth").write_text(
      "\n".join(site.getsitepackages()) + "\n")
  src = tmp / "mimuon_optax_repo"
  src.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy2(ROOT / name, src / name)
  shutil.copytree(ROOT / "mimuon_optax", src / "mimuon_optax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  offers = tmp / "offers"
  offers.mkdir()
  _fake_wheel(offers, "jax", "99.0")
  _fake_wheel(offers, "jaxlib", "99.0")
  _fake_wheel(offers, "flax", "99.0", ("jax>=99",))
  return python, src, offers


def _would_install(python, script_body: str, tmp_path) -> set[str]:
  report = tmp_path / "report.json"
  script = tmp_path / "install.py"
  script.write_text(script_body.replace("REPORT", repr(str(report))))
  proc = subprocess.run([python, script], capture_output=True, text=True,
                        timeout=600, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return {item["metadata"]["name"].lower()
          for item in json.loads(report.read_text())["install"]}


def test_notebooks_share_one_install_helper():
  assert len(NOTEBOOKS) >= 2
  sources = {install_helper_source(nb) for nb in NOTEBOOKS}
  assert len(sources) == 1, "the notebooks' install helpers differ"


@pytest.mark.parametrize("upgrade", [False, True], ids=["as_in_colab", "eager"])
def test_install_cell_keeps_preinstalled_jax(colab, tmp_path, upgrade):
  python, src, offers = colab
  extra = ("'--upgrade', '--upgrade-strategy', 'eager', '--find-links', "
           f"{str(offers)!r}, " if upgrade else "")
  body = (install_helper_source(NOTEBOOKS[0]) + "\n\n" + f"{HELPER}("
          "'--dry-run', '--report', REPORT, '--no-index', "
          f"'--no-build-isolation', {extra}{str(src)!r})\n")
  installs = _would_install(python, body, tmp_path)
  assert "mimuon-optax" in installs or "mimuon_optax" in installs, installs
  assert not installs & {"jax", "jaxlib"}, installs


def test_without_the_pin_pip_would_upgrade_jax(colab, tmp_path):
  """The control: the same eager pip call without the constraint file."""
  python, src, offers = colab
  body = ("import subprocess, sys\n"
          "subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', "
          "'--dry-run', '--report', REPORT, '--no-index', "
          "'--no-build-isolation', '--upgrade', '--upgrade-strategy', "
          f"'eager', '--find-links', {str(offers)!r}, {str(src)!r}], "
          "check=True)\n")
  installs = _would_install(python, body, tmp_path)
  assert "jax" in installs, installs
