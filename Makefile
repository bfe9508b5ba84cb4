# The two commands of the Quickstart: `make run` and `make test`. Both set up everything they
# need on a fresh machine (a virtualenv in .venv, the package and its dependencies).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
INSTALLED_DEV := $(VENV)/.installed-dev

.PHONY: run test lint format clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(INSTALLED_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@ $(INSTALLED)

## Serve the web chat with the echo agent on the embedded SQLite (./data/bridge.store).
run: $(INSTALLED)
	$(BIN)/bridge migrate
	$(BIN)/bridge serve

## Lint, type-check and run the whole suite (SQLite and a throwaway PostgreSQL).
test: lint
	$(BIN)/pytest

## Measure: throughput against the raw-driver floor, latency, history, memory, scale-out.
## Starts its own PostgreSQL; prints a table, writes bench/results/latest.json and .png.
bench: $(INSTALLED_DEV)
	$(BIN)/python -m bench

lint: $(INSTALLED_DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(INSTALLED_DEV)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

## The fault tests at full size (5,000 events each): SIGKILL, PostgreSQL outage, Slack
## 429/500, two processes. `make test` runs them small.
.PHONY: faults
faults: $(INSTALLED_DEV)
	BRIDGE_FAULT_EVENTS=5000 $(BIN)/pytest tests/system/test_faults.py
