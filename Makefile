# Conveyor: `make run` starts everything locally, `make test` runs the test suite.
# Every Python command goes through `uv run`, so it uses the project's environment (.venv).

.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
# uv manages the environment. Without it on PATH, `make` installs it with pip and calls it as
# `python3 -m uv`.
UV ?= $(if $(shell command -v uv 2>/dev/null),uv,$(PYTHON) -m uv)
RUN := $(UV) run --frozen
# honcho reads ./.env and lets it override the shell; run management commands through it too,
# so that they use the same database as the processes `make run` starts.
MANAGE := $(RUN) honcho run python manage.py

# Local development defaults (a value already in the environment wins; ./.env wins over both).
run migrate seed: export DEBUG ?= true
run: export PORT ?= 8000
run: export FLOWER_BASIC_AUTH ?= admin:conveyor

.PHONY: help
help: ## List the targets
	@echo "Conveyor. Usage: make <target>"
	@echo
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  %-9s %s\n", $$1, $$2}'

.PHONY: uv
uv:
	@$(UV) --version >/dev/null 2>&1 || { \
		echo "uv is not installed: installing it with pip."; \
		$(PYTHON) -m pip install --quiet uv \
		|| $(PYTHON) -m pip install --quiet --user uv \
		|| $(PYTHON) -m pip install --quiet --user --break-system-packages uv; \
	}

.PHONY: install
install: uv ## Create or update the environment (.venv) from uv.lock
	$(UV) sync --frozen

.PHONY: migrate
migrate: install ## Create or update the database tables
	$(MANAGE) migrate --noinput

.PHONY: seed
seed: migrate ## Create the demo user and demo agents (prints the login)
	$(MANAGE) seed_demo

.PHONY: run
run: seed ## Install, migrate, seed, then start web, worker, beat, Flower, Redis
	@# The last lines before the processes' output: where to go and how to sign in.
	@$(MANAGE) seed_demo --login
	@$(RUN) honcho run sh -c ' \
		echo "  Flower:   http://127.0.0.1:5555/   (user:password $${FLOWER_BASIC_AUTH})"; \
		echo "  Ctrl-C stops everything."; echo'
	$(RUN) honcho start

.PHONY: test
test: install ## Run the test suite (uses DATABASE_URL / REDIS_URL when set)
	$(RUN) pytest $(PYTEST_ARGS)

# The fault suite (tests/faults/README.md) starts its own Postgres (the server binaries under
# /usr/lib/postgresql), Redis, workers and beat for each scenario; DATABASE_URL and REDIS_URL
# are not used. `make test` leaves it out. Figures: var/faults-report.txt.
.PHONY: faults
faults: install ## Fault suite: workers, Redis, Postgres killed under load (~5 min)
	$(RUN) pytest tests/faults $(PYTEST_ARGS)

.PHONY: lint
lint: install ## Check code style (ruff); reports both checks before failing
	@status=0; \
	$(RUN) ruff check . || status=1; \
	$(RUN) ruff format --check . || status=1; \
	exit $$status

.PHONY: format
format: install ## Fix code style (ruff)
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

# Benchmarks need Postgres and Redis; these apply unless DATABASE_URL / REDIS_URL are set.
bench: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/conveyor_bench
bench: export REDIS_URL ?= redis://127.0.0.1:6379/14
# Runs per side of the memory benchmark (100000 for the long run).
BENCH_MEMORY_RUNS ?= 20000

.PHONY: bench
bench: install ## Benchmarks vs raw Celery (bench/README.md). Postgres + Redis from DATABASE_URL / REDIS_URL, default postgres://postgres@127.0.0.1:5432/conveyor_bench, redis://127.0.0.1:6379/14
	$(RUN) python -m bench.throughput
	$(RUN) python -m bench.latency
	$(RUN) python -m bench.producer
	$(RUN) python -m bench.retry_timing
	$(RUN) python -m bench.batch
	$(RUN) python -m bench.memory --total $(BENCH_MEMORY_RUNS)
	@# 10,000 schedules due at once, in a database of their own (<name>_schedules), dropped after.
	DATABASE_URL="$${DATABASE_URL%/*}/$${DATABASE_URL##*/}_schedules" $(RUN) python bench/schedules_scale.py --drop
	@# The read side fills its own database (<name>_read) with a million rows, dropped after.
	DATABASE_URL="$${DATABASE_URL%/*}/$${DATABASE_URL##*/}_read" $(RUN) python -m bench.read_side --drop

.PHONY: clean
clean: ## Delete var/ (local database, Redis socket, static files, logs)
	rm -rf var/
