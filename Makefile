PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint format venv clean bench chaos bench-engine bench-edge bench-routing bench-ordering bench-admin wrk

venv: $(DEV_STAMP)

# What the runtime needs: all that `make run` installs.
$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

# Tests, linters and benchmark tools, on top.
$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(DEV_STAMP)

## Start the demo runtime (gunicorn + worker) on 127.0.0.1:$${PORT:-8080}.
run: $(STAMP)
	$(PY) bin/run-demo

## Run the whole test suite (SQLite, or DATABASE_URL if set).
test: $(DEV_STAMP)
	$(PY) -m pytest

## Ingest vs. a bare Django baseline, execution latency, drain rate and memory, on SQLite
## and PostgreSQL (see bench/README.md). BENCH_ARGS=--quick for a shorter run.
bench: $(DEV_STAMP) wrk
	$(PY) bench/ingest.py $(BENCH_ARGS)

## Faults that must not lose or repeat work: killed workers, killed gunicorn, a PostgreSQL
## restart, a failing sink, a duplicate storm (see docs/chaos.md). Exits non-zero on a
## violation. CHAOS_ARGS=--quick for a shorter run.
chaos: $(DEV_STAMP)
	$(PY) bench/chaos.py $(CHAOS_ARGS)

# wrk (Debian's package) drives the ingest benchmark.
wrk:
	@command -v wrk >/dev/null || { \
	  echo "wrk is not installed; installing Debian's package"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get install -y -qq wrk || { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk; }; }

## The execution engine on SQLite and PostgreSQL: drain rates, fairness beside a hanging
## route, accept-to-start latency, ingest beside a busy worker, worker memory and database
## connections, through the http connector to sinks on 127.0.0.1 (see bench/README.md).
## BENCH_ARGS=--quick for a shorter run, BENCH_ARGS=--strict to exit 1 on a missed goal.
bench-engine: $(DEV_STAMP)
	$(PY) bench/engine.py $(BENCH_ARGS)

## Benchmark the ingestion edge: API keys vs. provider signatures (see bench/README.md).
bench-edge: $(DEV_STAMP)
	$(PY) bench/edge.py $(BENCH_ARGS)

## Benchmark route filters: 50 filtered routes vs. 1 route on POST /webhook (see bench/README.md).
bench-routing: $(DEV_STAMP)
	$(PY) bench/routing.py $(BENCH_ARGS)

## Ordering keys: 10,000 events over 100 keys at a 100 ms sink, ordered against unordered,
## on SQLite and PostgreSQL; the sink checks each key's order (see bench/README.md).
## BENCH_ARGS=--quick for a shorter run, BENCH_ARGS=--strict to exit 1 on a missed goal.
bench-ordering: $(DEV_STAMP)
	$(PY) bench/ordering.py $(BENCH_ARGS)

## Time the admin's list and detail pages on 1,000,000 events in PostgreSQL (see bench/README.md).
## BENCH_ARGS="--events 100000" for a shorter run.
bench-admin: $(DEV_STAMP)
	$(PY) bench/admin.py $(BENCH_ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null
	$(VENV)/bin/lint-imports --no-cache

format: $(DEV_STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) var db.sqlite3 db.sqlite3-wal db.sqlite3-shm staticfiles
