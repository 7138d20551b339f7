#!/usr/bin/env bash
# Sets everything up (packages, virtualenv, local Redis and RabbitMQ on loopback) and runs the
# service on http://127.0.0.1:5005 with the demo: simulated Pacco services and a stream of orders
# whose sagas you can watch live. The processes' logs go to files in the run directory
# ($OPERATIONS_RUN_DIR, default .run/dev); the terminal gets one line per finished order, and the
# links again on Enter and every $DEMO_LINKS_EVERY seconds (default 300). Ctrl-C stops everything
# it started.
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
links_every=${DEMO_LINKS_EVERY:-300}

run_dir=${OPERATIONS_RUN_DIR:-$root/.run/dev}
mkdir -p "$run_dir"
shown_dir=${run_dir#"$root"/}
serve_log=$run_dir/serve.log
services_log=$run_dir/demo-services.log
orders_log=$run_dir/demo-orders.log
logs="$shown_dir/serve.log, $shown_dir/demo-services.log, $shown_dir/demo-orders.log"
echo "run: the logs go to $logs" >&2

.venv/bin/operations serve >"$serve_log" 2>&1 & pids+=($!)
serve_pid=${pids[0]}
ready=""
for _ in $(seq 1 150); do
  if .venv/bin/python -c "import urllib.request; urllib.request.urlopen('$base/ready', timeout=1)" \
    >/dev/null 2>&1; then
    ready=1
    break
  fi
  kill -0 "$serve_pid" 2>/dev/null || break
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "run: the service did not become ready on $base/ready; stopping. The end of $shown_dir/serve.log:" >&2
  tail -n 40 "$serve_log" >&2
  exit 1
fi
.venv/bin/operations demo-services --latency-ms "${DEMO_LATENCY_MS:-400}" \
  --fail "reserve_resource=${DEMO_FAIL_RATE:-0.25}" >"$services_log" 2>&1 & pids+=($!)
# Its standard output, one line per finished order, is for the terminal; its log for the file.
.venv/bin/operations demo-orders --user demo-user --every "${DEMO_EVERY:-3}" \
  2>"$orders_log" & pids+=($!)

user_token=$(.venv/bin/operations token --user demo-user --ttl 86400)
admin_token=$(.venv/bin/operations token --user demo-admin --role admin --ttl 86400)
links() {
  cat >&2 <<MSG

operations is running on $base with simulated Pacco services and an order every few seconds.
  the ops dashboard (admin):       $base/dashboard/#token=$admin_token
  watch demo-user's orders live:  $base/live/#token=$user_token
  a token for HTTP:               Authorization: Bearer $user_token
  an admin token:                 $admin_token
  logs:                           $logs
Each order's outcome follows, one line each. Press Enter for these links again, Ctrl-C to stop.

MSG
}
links

# Until the service stops: the links again on Enter, and every $links_every seconds. Once
# standard input is closed (or is not a terminal's and ends) only the clock brings them back.
stdin_open=1
next=$((SECONDS + links_every))
while kill -0 "$serve_pid" 2>/dev/null; do
  if [ -n "$stdin_open" ]; then
    if read -r -t 1 _; then
      links
      next=$((SECONDS + links_every))
    elif [ $? -le 128 ]; then
      stdin_open=""
    fi
  else
    sleep 1
  fi
  if [ "$SECONDS" -ge "$next" ]; then
    links
    next=$((SECONDS + links_every))
  fi
done
status=0
wait "$serve_pid" || status=$?
echo "run: the service stopped (exit status $status). The end of $shown_dir/serve.log:" >&2
tail -n 40 "$serve_log" >&2
exit $((status == 0 ? 1 : status))
