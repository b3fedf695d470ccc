# The two commands of the README: `make demo` and `make test`. Both create the virtual
# environment (.venv) on first use: CPU torch 2.13.0 first, so no dependency pulls another
# torch, then this package with its test extras. Override TORCH for a CUDA build.
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install demo test bench

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m demo --out demo_out

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) bench/merge.py
