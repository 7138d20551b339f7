# One entry point for every task. `make run` and `make test` set everything up first.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: setup services stop run test lint typecheck check bench clean

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

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check operations hub tests

typecheck: setup
	$(VENV)/mypy

check: lint typecheck test

bench:
	@scripts/bench.sh $(BENCH_ARGS)

clean:
	rm -rf .run .venv .pytest_cache .mypy_cache .ruff_cache .coverage
