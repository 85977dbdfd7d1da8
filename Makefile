# Two commands on a fresh machine: `make dev` runs the service locally, `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: dev test lint unit bench faults chaos load deps clean

deps: $(VENV)/.installed node_modules/.installed

# checkov pins older versions of packages the test tooling needs: it gets a venv of its own.
CHECKOV_VENV := .venv-checkov
$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q -r requirements-checkov.txt
	touch $@

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

dev: deps
	$(PY) -m devstack up

# checkov: every finding on infra/ is fixed, or skipped in the Bicep with its reason (checkov:skip=...).
# app-registration-trust.bicep holds Microsoft Graph resources only (no checkov check covers them) and
# declares Bicep's `extension`, which checkov's Bicep parser does not read: it is left out.
lint: deps $(CHECKOV_VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy shared function_app.py devstack tools bench
	$(CHECKOV_VENV)/bin/checkov -d infra --framework bicep --compact --quiet --skip-download \
		--skip-path app-registration-trust.bicep

test: lint
	$(PY) -m pytest -q

unit: deps
	$(PY) -m pytest -q tests/unit

bench: deps
	$(PY) -m bench.bench_meeting_links
	$(PY) -m bench.bench_sync
	$(PY) -m bench.bench_punctuality
	$(PY) -m bench.bench_notifications
	$(PY) -m bench.bench_agent_progress
	$(PY) -m bench.bench_cost

faults: deps
	$(PY) -m bench.fault_matrix --write docs/reliability.md

clean:
	rm -rf .devstack .pytest_cache .mypy_cache .ruff_cache $(CHECKOV_VENV)

# Not part of `make test`: the whole stack, two instances, Graph's field behaviour and a crash every
# ~25 s, for about six minutes; results in docs/reliability.md ("Chaos").
chaos: deps
	$(PY) -m bench.chaos --write docs/reliability.md

# Not part of `make test` (a tiny run of it is, in tests/bench): 300 connections through OAuth on the
# whole local stack at the shipped defaults, with churn, ~10 minutes (--connections N for more); docs/scale.md.
load: deps
	$(PY) -m bench.load
