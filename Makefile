# Two commands on a fresh machine: `make dev` runs the service locally, `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: dev test lint unit bench deps clean

deps: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

dev: deps
	$(PY) -m devstack up

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy shared function_app.py devstack tools

test: lint
	$(PY) -m pytest -q

unit: deps
	$(PY) -m pytest -q tests/unit

bench: deps
	$(PY) -m bench.bench_meeting_links
	$(PY) -m bench.bench_sync
	$(PY) -m bench.bench_punctuality
	$(PY) -m bench.bench_cost

clean:
	rm -rf .devstack .pytest_cache .mypy_cache .ruff_cache
