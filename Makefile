# Two entry points (see README):
#   make compare  - install into .venv and run the main job on the fluid twin (no root needed)
#   make test     - install everything the tests need and run the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: compare test bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "rlte needs Python >= 3.10, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: on Debian install python3-venv"; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip

# Stamps: reinstall when pyproject.toml changes.
$(VENV)/.installed-core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-core

compare: $(VENV)/.installed-core
	mkdir -p out
	$(BIN)/rlte compare --topology abilene --traffic abilene-test --every 24 --out out/compare-abilene.json

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-test
	$(BIN)/python bench/twin_throughput.py
	$(BIN)/python bench/lp_solve.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
