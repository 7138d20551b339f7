#!/usr/bin/env bash
# Sets everything up, starts throw-away Redis and RabbitMQ servers on loopback (ports 6380 and
# 5673, data under .run/test), runs the whole suite against them, and stops them again, whatever
# the outcome. Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export OPERATIONS_RUN_DIR=${OPERATIONS_RUN_DIR:-$root/.run/test}
export OPERATIONS_AMQP_PORT=${OPERATIONS_AMQP_PORT:-5673}
export OPERATIONS_REDIS_PORT=${OPERATIONS_REDIS_PORT:-6380}

scripts/setup.sh --browser
scripts/promtool.sh >/dev/null  # for tests/test_alert_rules.py
scripts/services.sh stop
rm -rf "$OPERATIONS_RUN_DIR"
trap 'scripts/services.sh stop' EXIT
scripts/services.sh start
export OPERATIONS_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$OPERATIONS_AMQP_PORT/"
export OPERATIONS_TEST_REDIS_URL="redis://127.0.0.1:$OPERATIONS_REDIS_PORT/0"
.venv/bin/python -m pytest --cov --cov-report=term:skip-covered "$@"
