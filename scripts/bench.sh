#!/usr/bin/env bash
# Sets everything up, starts Redis and RabbitMQ on loopback (ports 6382 and 5676, data under
# .run/bench), runs `operations bench` with the given arguments, and stops the servers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export OPERATIONS_RUN_DIR=${OPERATIONS_RUN_DIR:-$root/.run/bench}
export OPERATIONS_AMQP_PORT=${OPERATIONS_AMQP_PORT:-5676}
export OPERATIONS_REDIS_PORT=${OPERATIONS_REDIS_PORT:-6382}
scripts/setup.sh
scripts/services.sh stop
rm -rf "$OPERATIONS_RUN_DIR"
trap 'scripts/services.sh stop' EXIT
scripts/services.sh start
export OPERATIONS_AMQP_URL="amqp://guest:guest@127.0.0.1:$OPERATIONS_AMQP_PORT/"
export OPERATIONS_REDIS_URL="redis://127.0.0.1:$OPERATIONS_REDIS_PORT/0"
.venv/bin/operations bench "$@"
