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
RUNBOOK = $(BIN)/runbook --state-dir demo/.runbook
# the subscription demo's payment provider (runbooks/examples/fake_provider.py): a real HTTP
# server on a free 127.0.0.1 port, up only while the command in quotes runs ($$PROVIDER_URL)
WITH_PROVIDER = $(BIN)/python runbooks/examples/fake_provider.py --run
# the first customer (in key order) of a wave, from the ledger: $(call first-of,FILE,WAVE)
first-of = $$($(RUNBOOK) customers $(1) --wave $(2) --format csv | awk -F, 'NR == 2 {print $$1}')

# The main job: 20,000 retailer customers move from a legacy SQLite ERP to the new platform in
# three waves drawn once into a ledger (pilot, early, all), told in their language first,
# copied, verified, gated (repeat orders of the wave against the customers not moved yet); the
# customers with no contact are excluded and reported. It ends with the ledger's counts and one
# pilot customer's journey; then 1,000 subscribers of the subscription example, whose payment
# methods move one API call each to a local fake provider, churn gated against the holdout.
demo: install
	rm -rf demo
	$(BIN)/python runbooks/examples/demo_data.py acai --out demo
	$(BIN)/runbook validate --strict runbooks/examples/*.yaml runbooks/tour/*.yaml
	$(RUNBOOK) apply --yes $(ACAI) $(DEMO_VARS)
	$(RUNBOOK) report $(ACAI) --format html --output demo/report.html
	$(BIN)/python runbooks/examples/demo_summary.py acai demo
	$(RUNBOOK) customers $(ACAI)
	@key=$(call first-of,$(ACAI),pilot); test -n "$$key" || exit 1; \
	echo "$$ runbook customers $(ACAI) $$key"; $(RUNBOOK) customers $(ACAI) $$key
	$(BIN)/python runbooks/examples/demo_data.py subscription --out demo --customers 1000
	$(WITH_PROVIDER) '$(RUNBOOK) apply --yes $(SUBS) $(DEMO_VARS) --var notice_lead_time=0s --var provider_url=$$PROVIDER_URL'
	$(RUNBOOK) customers $(SUBS)
	@echo "report: demo/report.html   state: demo/.runbook/   try: make demo-fault, make demo-subscription"

# The same with a corrupted customer in wave `early`: verify fails and marks it failed, the
# data-loss contingencies fire, wave `early` is rolled back (its customers compensated and told
# the move is postponed) and the pilot stays migrated (exit 1 is the expected outcome). The
# second apply runs wave early again (attempt 2: told again, moved, verified) and the rest;
# it exits 1 too: the run needed a compensation. Then the corrupted customer's whole journey.
demo-fault: install
	rm -rf demo
	$(BIN)/python runbooks/examples/demo_data.py acai --out demo
	$(RUNBOOK) apply --yes $(ACAI) $(DEMO_VARS) --var inject_fault=early || test $$? -eq 1
	$(RUNBOOK) customers $(ACAI)
	$(RUNBOOK) apply --yes $(ACAI) $(DEMO_VARS) || test $$? -eq 1
	$(RUNBOOK) customers $(ACAI)
	@key=$(call first-of,$(ACAI),early); test -n "$$key" || exit 1; \
	echo "$$ runbook customers $(ACAI) $$key   # the customer corrupted in attempt 1"; \
	$(RUNBOOK) customers $(ACAI) $$key
	$(BIN)/python runbooks/examples/demo_summary.py acai demo

# 5,000 subscribers change payment platform; those whose payment method the new platform does
# not take (and those with no contact) are excluded with their reason, every payment method not
# moved is listed with its owner's reason, and a lost one would make the run not clean. Each
# subscriber's payment method goes into the new provider's vault by one API call (foreach, with
# an Idempotency-Key) to a local fake provider that fails a few customers once and rate-limits
# with 429 + Retry-After; each wave's churn is gated against the holdout's.
demo-subscription: install
	rm -rf demo
	$(BIN)/python runbooks/examples/demo_data.py subscription --out demo
	$(WITH_PROVIDER) '$(RUNBOOK) apply --yes $(SUBS) $(DEMO_VARS) --var provider_url=$$PROVIDER_URL'
	$(RUNBOOK) report $(SUBS) --format html --output demo/subscription-report.html
	$(RUNBOOK) customers $(SUBS)
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
