# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint bench demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## make test: the whole suite on a real PostgreSQL (embedded where no Docker engine answers)
test: $(STAMP)
	$(BIN)/pytest

## make lint: ruff and mypy (strict on src/)
lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/mypy

## make bench: the benchmarks; figures go to docs/performance.md
bench: $(STAMP)
	$(BIN)/python scripts/bench_requests.py
	$(BIN)/python scripts/bench_worker.py

## make demo: image -> job -> provider simulator -> stored, playable MP4 (embedded everything)
demo: $(STAMP)
	$(BIN)/vidanim demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
