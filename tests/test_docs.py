"""The documentation site, read as a reader would.

Builds docs/ as `make docs` does (incrementally: after `make docs` this is a
no-op), opens the index and the API pages in headless Chromium (Debian's
`chromium`; `make test` installs it), saves screenshots next to the site
(docs/_build/screenshots/, a build folder: no test writes elsewhere in the
checkout), and checks the rendered pages: every public name of
`mimuon_optax` on the API pages, no unresolved reference or docutils error
text, every image present.
"""

import fcntl
import html
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from sphinx.util import inventory

import mimuon_optax

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BUILD = DOCS / "_build" / "html"
SHOTS = BUILD.parent / "screenshots"
# Flags for a sandbox-less container with no network or display.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-quic", "--no-first-run",
                  "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
# What a reader must never see: Sphinx/docutils leftovers of a broken
# reference, label, include or image.
BAD_TEXT = ("undefined label", "Unknown target", "unknown document",
            "image not found", "System Message", "problematic",
            "Could not find", "Traceback")
PAGES = ("getting_started", "gate", "dropin", "options", "multidevice",
         "performance", "reliability", "results", "api/index")


@pytest.fixture(scope="module")
def site() -> pathlib.Path:
  """docs/_build/html, (re)built like `make docs` (warnings are errors).

  Under pytest-xdist each worker runs this; a lock file makes one build at a
  time (the second finds the site up to date).
  """
  BUILD.parent.mkdir(parents=True, exist_ok=True)
  with open(BUILD.parent / ".build.lock", "w") as lock:
    deadline = time.monotonic() + 1200  # Past the build's own timeout.
    while True:
      try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except BlockingIOError:
        assert time.monotonic() < deadline, "another docs build never ended"
        time.sleep(1)
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
         "html", str(DOCS), str(BUILD)],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-6000:]
  return BUILD


def _chromium(*args: str) -> str:
  binary = shutil.which("chromium")
  assert binary, "Debian's chromium is missing: `make chromium` installs it"
  with tempfile.TemporaryDirectory() as profile:
    proc = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=180)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def rendered_dom(page: pathlib.Path) -> str:
  """The page's DOM after Chromium loaded it (scripts and all)."""
  return _chromium("--dump-dom", page.as_uri())


def screenshot(page: pathlib.Path, name: str, *args: str) -> pathlib.Path:
  SHOTS.mkdir(parents=True, exist_ok=True)
  out = SHOTS / name
  out.unlink(missing_ok=True)
  _chromium(f"--screenshot={out}", "--window-size=1280,2400",
            "--hide-scrollbars", *args, page.as_uri())
  return out


def visible_text(dom: str) -> str:
  """Text of the body, without tags, scripts and styles."""
  body = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
  return html.unescape(re.sub(r"<[^>]+>", " ", body))


def test_index_links_every_page(site):
  page = site / "index.html"
  dom = rendered_dom(page)
  for name in PAGES:
    assert f'href="{name}.html' in dom, name
  for nb in ("quickstart", "qwen3_mimuon"):
    assert f'href="notebooks/{nb}.html' in dom, nb
  text = visible_text(dom)
  assert "MiMuon" in text and "Getting started" in text
  assert not [bad for bad in BAD_TEXT if bad in text]
  shot = screenshot(page, "index.png")
  assert shot.stat().st_size > 20_000  # A rendered page, not a blank one.


def test_api_pages_show_every_public_name(site):
  api_pages = sorted((site / "api").glob("*.html"))
  assert len(api_pages) >= 5, api_pages
  doms = {p.name: rendered_dom(p) for p in api_pages}
  anchors = set(re.findall(r'id="mimuon_optax\.(\w+)"', "".join(doms.values())))
  missing = sorted(set(mimuon_optax.__all__) - anchors)
  assert not missing, f"public names without an API entry: {missing}"
  for name, dom in doms.items():
    text = visible_text(dom)
    assert not [bad for bad in BAD_TEXT if bad in text], name
  # Docstring math is handed to MathJax (math markup and the MathJax script,
  # which the build ships: test_math_renders_offline), not left as raw reST.
  optimizers = visible_text(doms["optimizers.html"])
  assert ".. math::" not in optimizers and "autofunction" not in optimizers
  assert '<div class="math' in doms["optimizers.html"]
  assert re.search(r'<script[^>]*mathjax', doms["optimizers.html"], re.I)
  # Google-style sections became field lists (napoleon), examples stayed.
  assert "Parameters" in optimizers and "Returns" in optimizers
  assert ">>>" in optimizers
  shot = screenshot(site / "api" / "optimizers.html", "api_optimizers.png")
  assert shot.stat().st_size > 20_000


def test_math_renders_offline(site):
  """The gate page's formulas are typeset by the MathJax the docs build ships
  (_static/mathjax/), with no network: math elements, no raw TeX left."""
  page = site / "gate.html"
  assert r"\(" in page.read_text()  # What Sphinx wrote, for MathJax to typeset.
  # Virtual time lets MathJax load its components and typeset before the DOM
  # is dumped (on a busy 2-core machine, well within the budget).
  budget = "--virtual-time-budget=30000"
  dom = _chromium(budget, "--dump-dom", page.as_uri())
  script = re.search(r'<script[^>]*src="([^"]*tex-chtml[^"]*)"', dom)
  assert script and not script.group(1).startswith(("http", "//")), script
  assert (site / script.group(1).split("?")[0]).is_file()  # ?v=checksum
  assert dom.count("<mjx-container") >= 10  # inline and display formulas
  text = visible_text(dom)
  assert r"\(" not in text and r"\[" not in text and r"\kappa" not in text
  shot = screenshot(page, "gate.png", budget)
  assert shot.stat().st_size > 20_000


def test_index_and_results_show_the_one_verdict(site):
  """docs/snippets/verdict.md, included, reads the same on both pages."""
  words = lambda text: " ".join(text.replace("\u2019", "'").split())
  verdict = words((DOCS / "snippets" / "verdict.md").read_text()
                  ).replace("**", "")
  for page in ("index.html", "results.html"):
    assert verdict in words(visible_text((site / page).read_text())), page


def test_objects_inventory_lists_every_public_name(site):
  """The coverage check's promise, read back from the built objects.inv."""
  with open(site / "objects.inv", "rb") as f:
    inv = inventory.InventoryFile.load(f, "", lambda base, uri: uri)
  documented = {name for kind in inv.values() for name in kind}
  assert {f"mimuon_optax.{n}" for n in mimuon_optax.__all__} <= documented


def test_coverage_check_reports_what_is_missing():
  sys.path.insert(0, str(DOCS / "ext"))
  try:
    import coverage_check  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.remove(str(DOCS / "ext"))
  everything = {f"mimuon_optax.{n}" for n in mimuon_optax.__all__}
  assert coverage_check.undocumented(everything) == []
  assert coverage_check.undocumented(everything - {"mimuon_optax.muon"}) == [
      "muon"]


def test_every_image_of_every_page_exists(site):
  pages = sorted(site.rglob("*.html"))
  images = 0
  for page in pages:
    if "_modules" in page.parts or "_static" in page.parts:
      continue
    for src in re.findall(r'<img[^>]*\ssrc="([^"]+)"', page.read_text()):
      if src.startswith(("http://", "https://", "data:")):
        continue
      target = (page.parent / html.unescape(src)).resolve()
      assert target.is_file() and target.stat().st_size > 1000, (page, src)
      images += 1
  assert images >= 9  # The committed plots of Results and the demo.


def test_results_page_renders_its_plots(site):
  dom = rendered_dom(site / "results.html")
  srcs = re.findall(r'<img[^>]*\ssrc="([^"]+)"', dom)
  assert len(srcs) >= 8, srcs
  for name in ("gen_gap.png", "spectra.png", "scaling.png", "loss.png"):
    assert any(s.endswith(name) for s in srcs), name


def test_notebooks_are_rendered_not_executed(site):
  for nb in ("quickstart", "qwen3_mimuon"):
    dom = rendered_dom(site / "notebooks" / f"{nb}.html")
    assert "mimuon_optax" in visible_text(dom)
    assert 'class="cell' in dom, nb  # Code cells, as stored (no outputs).
