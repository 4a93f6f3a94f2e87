"""The package builds into an sdist and a wheel that install and work.

`python -m build` on a copy of the package's files (so the checkout gets no
build/ or egg-info), `twine check` on both, then the wheel (not editable) in
a fresh venv that borrows the dependencies of this one (a .pth line, so no
download and no network), and the README's snippet run from outside the
checkout.
"""

import importlib.metadata
import os
import pathlib
import re
import shutil
import site
import subprocess
import sys
import zipfile

import pytest

import mimuon_optax

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE_FILES = ("pyproject.toml", "README.md", "CHANGELOG.md")


def _run(args, cwd, timeout=300, env=None):
  proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True,
                        text=True, timeout=timeout, env=env)
  assert proc.returncode == 0, (args, proc.stdout[-3000:], proc.stderr[-3000:])
  return proc.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> pathlib.Path:
  """dist/ with the sdist and the wheel, built from a copy of the sources."""
  src = tmp_path_factory.mktemp("src")
  for name in PACKAGE_FILES:
    shutil.copy2(ROOT / name, src / name)
  shutil.copytree(ROOT / "mimuon_optax", src / "mimuon_optax",
                  ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
  out = tmp_path_factory.mktemp("dist")
  _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out,
        src], cwd=src)
  return out


def test_build_makes_sdist_and_wheel_that_twine_accepts(dist):
  version = mimuon_optax.__version__
  wheel = dist / f"mimuon_optax-{version}-py3-none-any.whl"
  sdist = dist / f"mimuon_optax-{version}.tar.gz"
  assert wheel.is_file() and sdist.is_file(), list(dist.iterdir())
  out = _run([sys.executable, "-m", "twine", "check", "--strict", wheel,
              sdist], cwd=dist)
  assert out.count("PASSED") == 2, out
  names = zipfile.ZipFile(wheel).namelist()
  assert "mimuon_optax/py.typed" in names
  assert "mimuon_optax/models/qwen3/modeling.py" in names
  assert not [n for n in names if n.startswith(("tests/", "experiments/"))]
  # One version source: the wheel's metadata says what __init__ says.
  metadata = zipfile.ZipFile(wheel).read(
      f"mimuon_optax-{version}.dist-info/METADATA").decode()
  assert f"\nVersion: {version}\n" in metadata


def test_wheel_installs_and_runs_outside_the_checkout(dist, tmp_path):
  venv = tmp_path / "venv"
  _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
  python = venv / "bin" / "python"
  purelib = _run([python, "-c", "import sysconfig; "
                  "print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path)
  purelib = pathlib.Path(purelib.strip())
  # Dependencies from this venv, after the new one's own site-packages; the
  # editable install of this checkout is not seen (its .pth is not run).
  (purelib / "borrowed_deps.pth").write_text(
      "\n".join(site.getsitepackages()) + "\n")
  wheel = next(dist.glob("*.whl"))
  _run([sys.executable, "-m", "pip", "--python", python, "install",
        "--no-deps", "--no-index", "--quiet", wheel], cwd=tmp_path)

  snippet = re.findall(r"^```python\n(.*?)^```",
                       (ROOT / "README.md").read_text(), re.S | re.M)[0]
  script = tmp_path / "readme_snippet.py"
  script.write_text(
      "import mimuon_optax, pathlib, importlib.metadata\n"
      f"assert pathlib.Path(mimuon_optax.__file__).is_relative_to("
      f"{str(purelib)!r}), mimuon_optax.__file__\n"
      "assert importlib.metadata.version('mimuon_optax') == "
      "mimuon_optax.__version__\n"
      + snippet)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["JAX_PLATFORMS"] = "cpu"
  _run([python, "-c", "import mimuon_optax"], cwd=tmp_path, env=env)
  out = _run([python, script], cwd=tmp_path, env=env)
  assert "w1" in out, out  # The snippet printed the per-matrix decisions.
  assert importlib.metadata.version("mimuon_optax") == mimuon_optax.__version__


def test_demo_setup_installs_no_torch():
  """`make demo` installs the package with its experiments extra only."""
  pyproject = (ROOT / "pyproject.toml").read_text()
  lists = [re.search(rf"^{name} = \[(.*?)^\]", pyproject, re.S | re.M)
           for name in ("dependencies", "experiments")]
  requirements = re.findall(r'"([^"]+)"', "".join(m.group(1) for m in lists))
  assert "jax>=0.7.2" in requirements and "matplotlib" in requirements
  heavy = ("torch", "transformers", "pytest", "ultralytics")
  assert not [r for r in requirements if r.startswith(heavy)], requirements
  makefile = (ROOT / "Makefile").read_text()
  recipe = makefile.split("$(VENV)/.demo-installed:", 1)[1].split("\n\n", 1)[0]
  installs = re.findall(r'pip install .*?(-e "[^"]+"|--target \S+)', recipe)
  assert installs == ['-e ".[experiments]"', "--target $(DATA)"], installs
  assert re.search(r"^demo: setup-demo$", makefile, re.M)
