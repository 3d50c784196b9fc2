# The two commands of the README:
#   make demo   installs runbook in .venv and runs the main job
#   make test   installs the test dependencies and runs ruff, mypy --strict and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip --disable-pip-version-check

.PHONY: demo test lint typecheck install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: setup.cfg pyproject.toml | $(BIN)/python
	$(PIP) install -q --upgrade pip
	$(PIP) install -q '.[dev,postgres]'
	touch $@

# strict editable install: mypy sees the package (the default editable finder hides it)
install-dev: $(VENV)/.deps
	$(PIP) install -q --no-deps -e . --config-settings editable_mode=strict

install: | $(BIN)/python
	$(PIP) install -q .

demo: install
	$(BIN)/runbook validate --strict runbooks/examples/*.yaml
	$(BIN)/runbook plan runbooks/examples/acai-distributor-gradual-migration.yaml

lint: install-dev
	$(BIN)/ruff check engine plugins tests bench
	$(BIN)/ruff format --check engine plugins tests bench

typecheck: install-dev
	$(BIN)/mypy -p runbook_engine

test: lint typecheck
	$(BIN)/pytest

bench: install-dev
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
