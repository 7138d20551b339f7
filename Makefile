# One entry point for every task. `make run` and `make test` set everything up first.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: setup services stop run test screenshot lint typecheck install-check check bench soak clean

setup:
	@scripts/setup.sh

services: setup
	@scripts/services.sh start

stop:
	@scripts/services.sh stop

run:
	@scripts/run.sh

test:
	@scripts/test.sh $(PYTEST_ARGS)

# Retakes docs/dashboard.png: the dashboard browser test with real data, on the test servers.
screenshot:
	@OPERATIONS_DASHBOARD_SCREENSHOT=$(CURDIR)/docs/dashboard.png \
		scripts/test.sh tests/test_dashboard.py::test_the_dashboard_with_real_data

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check operations hub tests

typecheck: setup
	$(VENV)/mypy

# A fresh venv with the machine's own python3 and pip (not upgraded): `pip install .`, every
# module imported, `operations <command> --help` for every command.
install-check:
	@scripts/install-check.sh

check: lint typecheck test install-check

bench:
	@scripts/bench.sh $(BENCH_ARGS)

# Redis under steady traffic for SOAK_SECONDS (default 600): its memory must stay flat.
soak:
	@scripts/bench.sh --memory-soak $(or $(SOAK_SECONDS),600)

clean:
	rm -rf .run .venv .pytest_cache .mypy_cache .ruff_cache .coverage
