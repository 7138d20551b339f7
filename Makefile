# One entry point for every task. `make run` and `make test` set everything up first.
SHELL := /bin/bash
VENV := .venv/bin
# Test servers run beside (not on) the development ones, and only for the length of the run.
TEST_ENV := OPERATIONS_RUN_DIR=$(CURDIR)/.run/test OPERATIONS_AMQP_PORT=5673 OPERATIONS_REDIS_PORT=6380

.PHONY: setup services stop run test lint typecheck check bench clean

setup:
	@scripts/setup.sh

services: setup
	@scripts/services.sh start

stop:
	@scripts/services.sh stop

run: services
	$(VENV)/operations serve

test: setup
	@$(TEST_ENV) scripts/test.sh $(PYTEST_ARGS)

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check operations hub tests

typecheck: setup
	$(VENV)/mypy

check: lint typecheck test

bench: services
	$(VENV)/operations bench $(BENCH_ARGS)

clean:
	rm -rf .run .venv .pytest_cache .mypy_cache .ruff_cache .coverage
