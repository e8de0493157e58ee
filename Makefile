# `make demo` and `make test` bootstrap their own virtualenv in .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= auto

# The Django integration (conveyor.django) needs Django 6, so Python 3.12+: its tests and type
# checks run in a second virtualenv. Without such a Python they are skipped with a notice,
# unless CONVEYOR_REQUIRE_DJANGO=1 (CI), which makes that an error.
DJANGO_VENV := .venv-django
DJANGO_BIN := $(DJANGO_VENV)/bin
DJANGO_STAMP := $(DJANGO_VENV)/.installed

.PHONY: venv demo example test lint format clean bench bench-pg bench-sqlite bench-churn venv-django test-django lint-django

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Conveyor needs Python 3.11+")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
		echo "creating the virtualenv failed; on Debian/Ubuntu: apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

$(DJANGO_STAMP): pyproject.toml
	@py=$$(tests/with_django/find_python.sh); \
	if [ -z "$$py" ]; then \
		if [ "$${CONVEYOR_REQUIRE_DJANGO:-0}" = 1 ]; then \
			echo "CONVEYOR_REQUIRE_DJANGO=1 but no Python 3.12+ was found for the Django tests"; exit 1; \
		fi; \
		echo "NOTICE: no Python 3.12+ found: the Django integration (Django 6) is not tested"; \
		exit 0; \
	fi; \
	test -x $(DJANGO_BIN)/python || $$py -m venv $(DJANGO_VENV) || exit 1; \
	$(DJANGO_BIN)/python -m pip install --quiet --upgrade pip && \
	$(DJANGO_BIN)/python -m pip install --quiet -e '.[dev]' && \
	touch $@

venv-django: $(DJANGO_STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.demo.run

# The complete example service (examples/shop): API, worker, SMTP sink and webhook receiver on
# free ports, a scripted scenario over HTTP, and what came of it.
example: $(STAMP)
	$(BIN)/python -m examples.shop.local.run

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS)
	@$(MAKE) --no-print-directory test-django

# Our tests of conveyor.django, and Django's own tests/tasks suite (from the Django sdist)
# against ConveyorBackend on SQLite and PostgreSQL (tests/with_django/test_django_suite.py).
test-django: $(DJANGO_STAMP)
	@if [ -f $(DJANGO_STAMP) ]; then \
		$(DJANGO_BIN)/python -m pytest -n $(PYTEST_WORKERS) tests/with_django; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples
	$(BIN)/mypy src
	$(BIN)/mypy examples/shop
	$(BIN)/pyright --project pyproject.toml
	$(BIN)/pyright --project pyproject.toml examples/shop
	@$(MAKE) --no-print-directory lint-django

lint-django: $(DJANGO_STAMP)
	@if [ -f $(DJANGO_STAMP) ]; then \
		$(DJANGO_BIN)/mypy --config-file tests/with_django/mypy.ini && \
		$(DJANGO_BIN)/pyright --project tests/with_django/pyrightconfig.json; \
	fi

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
	@if [ "$(BENCH_SQLITE)" != "0" ]; then $(BIN)/python bench/run_sqlite.py; fi

# Conveyor on PostgreSQL beside procrastinate and pgqueuer, on a private PostgreSQL cluster;
# bench-churn: drain on a fresh table and after 1,000,000 jobs. See bench/README.md.
bench-pg: $(STAMP)
	@$(BIN)/python bench/run_pg.py

# bench-sqlite: Conveyor on SQLite beside huey's SqliteHuey, with the contention scenario and
# the SQLite targets as a checklist. See bench/README.md.
bench-sqlite: $(STAMP)
	@$(BIN)/python bench/run_sqlite.py

bench-churn: $(STAMP)
	@$(BIN)/python bench/run_pg.py --churn

clean:
	rm -rf $(VENV) $(DJANGO_VENV) .demo .shop .pytest_cache .mypy_cache .ruff_cache
