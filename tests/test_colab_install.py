"""The notebooks' install cell leaves a preinstalled jax/jaxlib alone.

Colab ships a jax/jaxlib built for its GPU/TPU; if pip upgraded them, the
runtime's plugin would no longer match. The cell's `pip_install_keeping_jax`
pins both to the installed versions when they meet our lower bound. Here a
fresh venv sees this venv's packages (a .pth line: the "preinstalled" jax),
and the cell's exact function runs pip with `--dry-run --report`, offline:
jax and jaxlib must not be in what pip would install, even when pip is told
to upgrade eagerly and a newer jax (and a flax that needs it) is on offer.
Without the pin, the same pip call would install that jax: the check can
fail. The same runs with a "preinstalled" jax at our floor (kept) and one
release below it (upgraded, with a one-line note naming the floor): fake
jax/jaxlib distributions placed ahead of this venv's.
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

from mimuon_optax import _platform

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


def _fake_installed(purelib: pathlib.Path, name: str, version: str) -> None:
  """An installed-looking `name==version` (metadata only) in `purelib`."""
  dist_info = purelib / f"{name}-{version}.dist-info"
  dist_info.mkdir()
  (dist_info / "METADATA").write_text(
      f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
  (dist_info / "INSTALLER").write_text("pip\n")
  (dist_info / "RECORD").write_text("")


def _colab_venv(tmp: pathlib.Path, jax_version: str | None = None):
  """(python of a venv that sees this venv's packages, the package's
  sources, a folder of newer fake jax/flax wheels); with `jax_version`, a
  fake jax/jaxlib of that version comes first on the venv's path."""
  venv = tmp / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv],
                 check=True, timeout=120)
  python = venv / "bin" / "python"
  purelib = pathlib.Path(subprocess.run(
      [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
      check=True, capture_output=True, text=True, timeout=60).stdout.strip())
  # The "preinstalled" packages: this venv's (jax, jaxlib, flax, pip, ...).
  # Its editable mimuon_optax stays unseen (.pth files there are not run).
  (purelib / "preinstalled.pth").write_text(
      "\n".join(site.getsitepackages()) + "\n")
  if jax_version:  # purelib precedes the .pth's folders on sys.path.
    for name in ("jax", "jaxlib"):
      _fake_installed(purelib, name, jax_version)
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
  if jax_version:  # This venv's flax needs a newer jax: the index's oldest.
    _fake_wheel(offers, "flax", _platform.MIN_VERSIONS["flax"], ("jax>=0.7.1",))
  return python, src, offers


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
  return _colab_venv(tmp_path_factory.mktemp("colab"))


def _run_install(python, script_body: str, tmp_path) -> tuple[set[str], str]:
  """(what pip would install, the script's stdout)."""
  report = tmp_path / "report.json"
  script = tmp_path / "install.py"
  script.write_text(script_body.replace("REPORT", repr(str(report))))
  proc = subprocess.run([python, script], capture_output=True, text=True,
                        timeout=600, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return {item["metadata"]["name"].lower()
          for item in json.loads(report.read_text())["install"]}, proc.stdout


def _would_install(python, script_body: str, tmp_path) -> set[str]:
  return _run_install(python, script_body, tmp_path)[0]


def _helper_call(src, offers, upgrade: bool) -> str:
  """The notebooks' helper and one dry-run call of it, offline."""
  extra = ("'--upgrade', '--upgrade-strategy', 'eager', '--find-links', "
           f"{str(offers)!r}, " if upgrade else "")
  return (install_helper_source(NOTEBOOKS[0]) + "\n\n" + f"{HELPER}("
          "'--dry-run', '--report', REPORT, '--no-index', "
          f"'--no-build-isolation', {extra}{str(src)!r})\n")


def test_notebooks_share_one_install_helper():
  assert len(NOTEBOOKS) >= 2
  sources = {install_helper_source(nb) for nb in NOTEBOOKS}
  assert len(sources) == 1, "the notebooks' install helpers differ"


@pytest.mark.parametrize("upgrade", [False, True], ids=["as_in_colab", "eager"])
def test_install_cell_keeps_preinstalled_jax(colab, tmp_path, upgrade):
  python, src, offers = colab
  installs = _would_install(python, _helper_call(src, offers, upgrade),
                            tmp_path)
  assert "mimuon-optax" in installs or "mimuon_optax" in installs, installs
  assert not installs & {"jax", "jaxlib"}, installs


def test_install_helper_floor_is_the_package_floor():
  tree = ast.parse(install_helper_source(NOTEBOOKS[0]))
  helper = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
  assert [a.arg for a in helper.args.kwonlyargs] == ["floor"]
  floor = ast.literal_eval(helper.args.kw_defaults[0])
  assert floor == _platform.MIN_VERSIONS["jax"] == _platform.MIN_VERSIONS[
      "jaxlib"]


@pytest.mark.parametrize("at_floor", [True, False], ids=["floor", "below"])
def test_install_cell_with_a_preinstalled_jax_at_or_below_the_floor(
    tmp_path, at_floor):
  """Colab with the oldest jax we support keeps it (pip takes the flax that
  fits it); one older is upgraded (to the jax 99 on offer here), and the
  cell names the floor in one line."""
  floor = _platform.MIN_VERSIONS["jax"]
  below = floor.rsplit(".", 1)[0] + "." + str(int(floor.rsplit(".", 1)[1]) - 1)
  python, src, offers = _colab_venv(tmp_path / "venv_root",
                                    floor if at_floor else below)
  installs, out = _run_install(python, _helper_call(src, offers, True),
                               tmp_path)
  assert "mimuon-optax" in installs or "mimuon_optax" in installs, installs
  if at_floor:
    assert not installs & {"jax", "jaxlib"}, installs
    assert out == "", out
  else:
    assert {"jax", "jaxlib"} <= installs, installs
    assert out.splitlines() == [
        f"mimuon_optax needs jax>={floor}, jaxlib>={floor}: upgrading jax"
        f" {below}, jaxlib {below} (on a GPU/TPU runtime, install the"
        " matching jax[cuda12] or jax[tpu] instead)."]


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
