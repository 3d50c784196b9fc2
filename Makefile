# The two commands of the README:
#   make demo   installs runbook in .venv and runs the main job
#   make test   installs the test dependencies and runs ruff, mypy --strict and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip --disable-pip-version-check

.PHONY: demo demo-fault demo-subscription test lint typecheck install install-dev bench clean

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

ACAI = runbooks/examples/acai-distributor-gradual-migration.yaml
SUBS = runbooks/examples/subscription-platform-switch.yaml
DEMO_VARS = --var auto_approve=true --var notice_lead_time=1s --var gate_interval=0s

# The main job: 20,000 retailer customers move from a legacy SQLite ERP to the new platform in
# three waves (pilot, early, all), told in their language first, copied, verified, gated.
demo: install
	rm -rf demo
	$(BIN)/python runbooks/examples/demo_data.py acai --out demo
	$(BIN)/runbook validate --strict runbooks/examples/*.yaml runbooks/tour/*.yaml
	$(BIN)/runbook --state-dir demo/.runbook apply --yes $(ACAI) $(DEMO_VARS)
	$(BIN)/runbook --state-dir demo/.runbook report $(ACAI) --format html --output demo/report.html
	$(BIN)/python runbooks/examples/demo_summary.py acai demo
	@echo "report: demo/report.html   state: demo/.runbook/   try: make demo-fault"

# The same with a corrupted row in wave `early`: verify fails, the data-loss contingencies fire,
# wave `early` is rolled back and the pilot stays migrated (exit 1 is the expected outcome).
demo-fault: install
	rm -rf demo
	$(BIN)/python runbooks/examples/demo_data.py acai --out demo
	$(BIN)/runbook --state-dir demo/.runbook apply --yes $(ACAI) $(DEMO_VARS) --var inject_fault=early || test $$? -eq 1
	$(BIN)/runbook --state-dir demo/.runbook status $(ACAI)
	$(BIN)/python runbooks/examples/demo_summary.py acai demo

demo-subscription: install
	rm -rf demo
	$(BIN)/python runbooks/examples/demo_data.py subscription --out demo
	$(BIN)/runbook --state-dir demo/.runbook apply --yes $(SUBS) $(DEMO_VARS)
	$(BIN)/python runbooks/examples/demo_summary.py subscription demo

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
