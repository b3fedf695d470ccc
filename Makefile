# The commands of the README and CONTRIBUTING.md: `make demo`, `make test` (everything), `make test-fast` (the
# inner loop: tests not marked slow), `make lint`. They create the virtual environment
# (.venv) on first use: CPU torch 2.13.0 first, so no dependency pulls another torch, then
# this package (editable) with its test extras. Override TORCH for a CUDA build.
VENV ?= .venv
TORCH ?= torch==2.13.0
# test files run side by side, one per worker (pytest-xdist); TEST_WORKERS=0 runs them in this process
TEST_WORKERS ?= auto
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
# DeepSpeed builds its CPU ops on first use; one build folder per venv, so that two checkouts
# (or a killed build elsewhere) never share its lock file in ~/.cache/torch_extensions.
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions

.PHONY: install demo test test-fast lint bench

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m demo --out demo_out

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

test-fast: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) bench/merge.py
