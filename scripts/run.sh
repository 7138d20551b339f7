#!/usr/bin/env bash
# Sets everything up (packages, virtualenv, local Redis and RabbitMQ on loopback) and runs the
# service on http://127.0.0.1:5005 until Ctrl-C; then stops the servers it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
trap 'scripts/services.sh stop' EXIT
scripts/services.sh start
amqp_port=${OPERATIONS_AMQP_PORT:-5672}
redis_port=${OPERATIONS_REDIS_PORT:-6379}
export OPERATIONS_AMQP_URL=${OPERATIONS_AMQP_URL:-amqp://guest:guest@127.0.0.1:$amqp_port/}
export OPERATIONS_REDIS_URL=${OPERATIONS_REDIS_URL:-redis://127.0.0.1:$redis_port/0}
echo "operations: serving on http://${OPERATIONS_HOST:-127.0.0.1}:${OPERATIONS_PORT:-5005}" >&2
echo "operations: a token for trying it: $(.venv/bin/operations token --user demo-user --ttl 86400)" >&2
.venv/bin/operations serve
