#!/usr/bin/env bash
# Sets everything up (packages, virtualenv, local Redis and RabbitMQ on loopback) and runs the
# service on http://127.0.0.1:5005 with the demo: simulated Pacco services and a stream of orders
# whose sagas you can watch live. Ctrl-C stops everything it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  scripts/services.sh stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM
scripts/services.sh start

amqp_port=${OPERATIONS_AMQP_PORT:-5672}
redis_port=${OPERATIONS_REDIS_PORT:-6379}
export OPERATIONS_AMQP_URL=${OPERATIONS_AMQP_URL:-amqp://guest:guest@127.0.0.1:$amqp_port/}
export OPERATIONS_REDIS_URL=${OPERATIONS_REDIS_URL:-redis://127.0.0.1:$redis_port/0}
base="http://${OPERATIONS_HOST:-127.0.0.1}:${OPERATIONS_PORT:-5005}"

.venv/bin/operations serve & pids+=($!)
ready=""
for _ in $(seq 1 150); do
  if .venv/bin/python -c "import urllib.request; urllib.request.urlopen('$base/ready', timeout=1)" \
    >/dev/null 2>&1; then
    ready=1
    break
  fi
  kill -0 "${pids[0]}" 2>/dev/null || break
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "run: the service did not become ready on $base/ready (see its log above); stopping" >&2
  exit 1
fi
.venv/bin/operations demo-services --latency-ms "${DEMO_LATENCY_MS:-400}" \
  --fail "reserve_resource=${DEMO_FAIL_RATE:-0.25}" & pids+=($!)
.venv/bin/operations demo-orders --user demo-user --every "${DEMO_EVERY:-3}" & pids+=($!)

user_token=$(.venv/bin/operations token --user demo-user --ttl 86400)
admin_token=$(.venv/bin/operations token --user demo-admin --role admin --ttl 86400)
cat >&2 <<MSG

operations is running on $base with simulated Pacco services and an order every few seconds.
  the ops dashboard (admin):       $base/dashboard/#token=$admin_token
  watch demo-user's orders live:  $base/live/#token=$user_token
  a token for HTTP:               Authorization: Bearer $user_token
  an admin token:                 $admin_token
Press Ctrl-C to stop.

MSG
wait "${pids[0]}"
