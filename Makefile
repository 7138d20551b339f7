# One entry point for every task. `make run` and `make test` set everything up first.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: setup services stop run test screenshot lint typecheck alerts install-check check bench soak clean

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

# Retakes the pictures in docs/: the dashboard with real data (dashboard.png), a saga diagram
# mid-flight (saga-diagram.png), a compensated one (saga-compensated.png) and the live page with
# progress bars (live-page.png), from their browser tests on the test servers.
screenshot:
	@OPERATIONS_DASHBOARD_SCREENSHOT=$(CURDIR)/docs/dashboard.png \
		OPERATIONS_SCREENSHOT_DIR=$(CURDIR)/docs \
		scripts/test.sh tests/test_dashboard.py::test_the_dashboard_with_real_data \
		tests/test_dashboard_diagram.py::test_the_diagram_marks_every_step_and_moves_live \
		tests/test_dashboard_diagram.py::test_the_diagram_of_a_compensated_saga \
		tests/test_dashboard_at_scale.py::test_an_overdue_saga_is_marked_live_and_a_retry_of_its_step_clears_it \
		tests/test_live_page.py::test_a_sagas_operation_shows_its_start_name_progress_and_plain_reason

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check operations hub tests

typecheck: setup
	$(VENV)/mypy

# The shipped alert rules: checked and unit-tested by promtool (fetched once into .run/tools).
alerts:
	@scripts/promtool.sh check rules deploy/prometheus/alerts.yml
	@cd deploy/prometheus && ../../scripts/promtool.sh test rules alerts.test.yml

# A fresh venv with the machine's own python3 and pip (not upgraded): `pip install .`, every
# module imported, `operations <command> --help` for every command.
install-check:
	@scripts/install-check.sh

check: lint typecheck alerts test install-check

bench:
	@scripts/bench.sh $(BENCH_ARGS)

# Redis under steady traffic for SOAK_SECONDS (default 600): its memory must stay flat.
soak:
	@scripts/bench.sh --memory-soak $(or $(SOAK_SECONDS),600)

clean:
	rm -rf .run .venv .pytest_cache .mypy_cache .ruff_cache .coverage
