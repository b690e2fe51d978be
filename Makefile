# Two entry points (see README):
#   make train    - install into .venv and run the main job on the fluid twin (no root needed):
#                   train PPO on Abilene's real traffic, then compare it with every baseline
#   make test     - install everything the tests need and run the whole suite; as root it also
#                   installs Mininet and Open vSwitch from Debian and starts OVS (scripts/setup-live.sh),
#                   so the live-network tests run instead of being skipped
# Also: make compare (baselines only, seconds), make bench (benchmarks, long), and as root
# make test-container (the live-network tests and a fidelity smoke run in the project's
# privileged Docker container: scripts/container-test.sh; .ci/run runs it after make test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: train compare test test-container bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "rlte needs Python >= 3.10, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: on Debian install python3-venv"; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip

# Stamps: reinstall when pyproject.toml changes.
$(VENV)/.installed-core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

# torch first, pinned: a package asking for plain `torch` would otherwise pull a CUDA build
$(VENV)/.installed-learn: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[learn,sweep]'
	touch $@ $(VENV)/.installed-core

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-core $(VENV)/.installed-learn

train: $(VENV)/.installed-learn
	$(BIN)/rlte train

compare: $(VENV)/.installed-core
	mkdir -p out
	$(BIN)/rlte compare --topology abilene --traffic abilene-test --every 24 --out out/compare-abilene.json

test: $(VENV)/.installed-test
	@if [ "$$(id -u)" = 0 ]; then scripts/setup-live.sh $(VENV); \
	else echo "not root: the live-network (Mininet) tests will be skipped"; fi
	$(BIN)/python -m pytest

test-container:
	scripts/container-test.sh

bench: $(VENV)/.installed-test
	$(BIN)/python bench/twin_throughput.py
	$(BIN)/python bench/lp_solve.py
	$(BIN)/python bench/learning.py
	$(BIN)/python bench/gnn_generalization.py
	@if [ "$$(id -u)" = 0 ]; then scripts/setup-live.sh $(VENV) && $(BIN)/python bench/live.py; \
	else echo "not root: skipping bench/live.py"; fi

clean:
	rm -rf $(VENV) out runs .pytest_cache .hypothesis
