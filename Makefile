# `make demo` and `make test` bootstrap their own virtualenv in .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= auto

.PHONY: venv demo example test lint format clean bench bench-pg bench-churn

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Conveyor needs Python 3.11+")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
		echo "creating the virtualenv failed; on Debian/Ubuntu: apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.demo.run

# The complete example service (examples/shop): API, worker, SMTP sink and webhook receiver on
# free ports, a scripted scenario over HTTP, and what came of it.
example: $(STAMP)
	$(BIN)/python -m examples.shop.local.run

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples
	$(BIN)/mypy src
	$(BIN)/mypy examples/shop
	$(BIN)/pyright --project pyproject.toml
	$(BIN)/pyright --project pyproject.toml examples/shop

format: $(STAMP)
	$(BIN)/ruff format src tests examples
	$(BIN)/ruff check --fix src tests examples

# Conveyor (with its no-op, --processes 2 and SyncQueue variants) beside the shared peer
# benchmark and BullMQ on Node (npm ci; left out with the reason when node/npm fail) on a
# private redis-server, a 1-vs-2-process scaling step, then (unless BENCH_PG=0) beside the
# PostgreSQL peers; see bench/README.md.
BENCH_PG ?= 1
bench: $(STAMP)
	@$(BIN)/python bench/run.py
	@if [ "$(BENCH_PG)" != "0" ]; then $(BIN)/python bench/run_pg.py; fi

# Conveyor on PostgreSQL beside procrastinate and pgqueuer, on a private PostgreSQL cluster;
# bench-churn: drain on a fresh table and after 1,000,000 jobs. See bench/README.md.
bench-pg: $(STAMP)
	@$(BIN)/python bench/run_pg.py

bench-churn: $(STAMP)
	@$(BIN)/python bench/run_pg.py --churn

clean:
	rm -rf $(VENV) .demo .shop .pytest_cache .mypy_cache .ruff_cache
