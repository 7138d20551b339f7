#!/usr/bin/env bash
# Local Redis and RabbitMQ on loopback, for development and tests.
#
#   scripts/services.sh start|stop|status|restart-rabbitmq|restart-redis|install
#   scripts/services.sh start-cluster|stop-cluster
#   scripts/services.sh start-rabbit-cluster|stop-rabbit-cluster|stop-rabbit-cluster-node PORT
#   scripts/services.sh rabbitmqctl ARGS...|rabbit-cluster-ctl PORT ARGS...
#
# Installs the Debian packages redis-server and rabbitmq-server when they are missing, keeps all
# data and logs under $OPERATIONS_RUN_DIR (default .run/dev) and stops only what it started.
# Ports: $OPERATIONS_AMQP_PORT (default 5672) and $OPERATIONS_REDIS_PORT (default 6379).
# start-cluster also starts a 3-node Redis Cluster (three primaries, no replicas) on ports
# $OPERATIONS_REDIS_CLUSTER_PORT (default $OPERATIONS_REDIS_PORT + 100) and the two after it.
# start-rabbit-cluster starts a 3-node RabbitMQ cluster on AMQP ports $OPERATIONS_RABBIT_CLUSTER_PORT
# (default $OPERATIONS_AMQP_PORT + 100) and the two after it (distribution ports: AMQP + 20000),
# nodes operations-<port>@localhost sharing an Erlang cookie of their own under the run directory;
# it starts any node that is down, and a node that left rejoins. stop-rabbit-cluster-node PORT
# stops one of them. stop stops everything, clusters included. rabbitmqctl runs rabbitmqctl on the
# single node, rabbit-cluster-ctl on the cluster node on that AMQP port.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
run_dir=${OPERATIONS_RUN_DIR:-$root/.run/dev}
amqp_port=${OPERATIONS_AMQP_PORT:-5672}
redis_port=${OPERATIONS_REDIS_PORT:-6379}
node="operations-$amqp_port@localhost"
rabbit_bin=/usr/lib/rabbitmq/bin

say() { printf 'services: %s\n' "$*" >&2; }

install() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  [ -x "$rabbit_bin/rabbitmq-server" ] || missing+=(rabbitmq-server)
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  # The packages are wanted for their binaries only. Their system services would take the default
  # ports (6379, 5672, 25672), so they must not start on install (policy-rc.d answers 101,
  # "action forbidden", for the time of the install) and, under systemd, not at boot either.
  local policy=/usr/sbin/policy-rc.d own_policy=""
  if [ ! -e "$policy" ]; then
    own_policy=1
    printf '#!/bin/sh\n# operations: no service starts while its packages install\nexit 101\n' \
      | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
  fi
  local status=0
  {
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
  } || status=$?
  [ -z "$own_policy" ] || $sudo rm -f "$policy"
  [ "$status" -eq 0 ] || return "$status"
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    local unit
    for unit in "${missing[@]}"; do
      $sudo systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
  fi
}

# The environment of one node: its name, AMQP port and directory (default: the single node's).
rabbit_env() {
  local name=${1:-$node} port=${2:-$amqp_port} dir=${3:-$run_dir/rabbitmq}
  export RABBITMQ_NODENAME="$name"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$port"
  export RABBITMQ_DIST_PORT=$((port + 20000))
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_BASE="$dir"
  export RABBITMQ_MNESIA_BASE="$dir/mnesia"
  export RABBITMQ_LOG_BASE="$dir/log"
  export RABBITMQ_PID_FILE="$dir/pid"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
  export RABBITMQ_CONFIG_FILE="$dir/rabbitmq"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
  mkdir -p "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
  [ -f "$RABBITMQ_ENABLED_PLUGINS_FILE" ] || echo '[].' > "$RABBITMQ_ENABLED_PLUGINS_FILE"
}

rabbit_running() {
  local pid_file="$run_dir/rabbitmq/pid"
  [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_rabbit() {
  rabbit_env
  if rabbit_running; then say "rabbitmq already running on 127.0.0.1:$amqp_port"; return 0; fi
  if port_busy "$amqp_port"; then
    say "port $amqp_port is taken by another process (a system RabbitMQ? see 'systemctl status rabbitmq-server'); stop it or set OPERATIONS_AMQP_PORT"; return 1
  fi
  rm -f "$RABBITMQ_PID_FILE"
  nohup "$rabbit_bin/rabbitmq-server" >"$RABBITMQ_LOG_BASE/console.log" 2>&1 &
  if ! "$rabbit_bin/rabbitmqctl" -q -n "$node" wait "$RABBITMQ_PID_FILE" --timeout 120 >/dev/null; then
    say "rabbitmq did not start; see $RABBITMQ_LOG_BASE"; tail -n 30 "$RABBITMQ_LOG_BASE/console.log" >&2
    return 1
  fi
  say "rabbitmq up on 127.0.0.1:$amqp_port (node $node)"
}

stop_rabbit() {
  rabbit_env
  if rabbit_running; then
    "$rabbit_bin/rabbitmqctl" -q -n "$node" shutdown >/dev/null 2>&1 || true
    say "rabbitmq stopped"
  fi
  stop_epmd
}

# epmd was started by our nodes; end it only when no node is registered with it any more.
stop_epmd() {
  if command -v epmd >/dev/null 2>&1 && ! epmd -names 2>/dev/null | grep -q '^name '; then
    epmd -kill >/dev/null 2>&1 || true
  fi
}

redis_pid_file() { echo "$run_dir/redis/redis.pid"; }

redis_running() {
  local pid_file; pid_file=$(redis_pid_file)
  [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

start_redis() {
  mkdir -p "$run_dir/redis"
  if redis_running; then say "redis already running on 127.0.0.1:$redis_port"; return 0; fi
  if port_busy "$redis_port"; then
    say "port $redis_port is taken by another process (a system Redis? see 'systemctl status redis-server'); stop it or set OPERATIONS_REDIS_PORT"; return 1
  fi
  redis-server --bind 127.0.0.1 --port "$redis_port" --daemonize yes \
    --pidfile "$(redis_pid_file)" --dir "$run_dir/redis" --logfile "$run_dir/redis/redis.log" \
    --appendonly yes --appendfsync everysec --save "" >/dev/null
  for _ in $(seq 1 100); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && { say "redis up on 127.0.0.1:$redis_port"; return 0; }
    sleep 0.1
  done
  say "redis did not start; see $run_dir/redis/redis.log"; return 1
}

stop_redis() {
  if redis_running; then
    local pid; pid=$(cat "$(redis_pid_file)")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    say "redis stopped"
  fi
}

cluster_base=${OPERATIONS_REDIS_CLUSTER_PORT:-$((redis_port + 100))}
cluster_ports() { echo "$cluster_base" $((cluster_base + 1)) $((cluster_base + 2)); }

start_cluster() {
  local port dir
  for port in $(cluster_ports); do
    dir="$run_dir/redis-cluster/$port"
    mkdir -p "$dir"
    if [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then continue; fi
    if port_busy "$port"; then
      say "port $port is taken by another process; set OPERATIONS_REDIS_CLUSTER_PORT"; return 1
    fi
    redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --cluster-enabled yes \
      --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 5000 \
      --pidfile "$dir/redis.pid" --dir "$dir" --logfile "$dir/redis.log" \
      --appendonly no --save "" >/dev/null
    for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  if ! redis-cli -p "$cluster_base" cluster info | grep -q '^cluster_state:ok'; then
    if [ "$(redis-cli -p "$cluster_base" cluster info | sed -n 's/^cluster_known_nodes:\([0-9]*\).*/\1/p')" = 1 ]; then
      local nodes=(); for port in $(cluster_ports); do nodes+=("127.0.0.1:$port"); done
      redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
    fi
    for _ in $(seq 1 150); do
      local ok=1
      for port in $(cluster_ports); do
        redis-cli -p "$port" cluster info | grep -q '^cluster_state:ok' || ok=0
      done
      [ "$ok" = 1 ] && break
      sleep 0.2
    done
  fi
  for port in $(cluster_ports); do
    if ! redis-cli -p "$port" cluster info | grep -q '^cluster_state:ok'; then
      say "redis cluster did not form; see $run_dir/redis-cluster"; return 1
    fi
  done
  say "redis cluster up on 127.0.0.1:$(cluster_ports | tr ' ' ',')"
}

stop_cluster() {
  local port pid_file pid
  for port in $(cluster_ports); do
    pid_file="$run_dir/redis-cluster/$port/redis.pid"
    if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
      pid=$(cat "$pid_file")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      say "redis cluster node $port stopped"
    fi
  done
}

rabbit_cluster_base=${OPERATIONS_RABBIT_CLUSTER_PORT:-$((amqp_port + 100))}
rabbit_cluster_dir="$run_dir/rabbit-cluster"
rabbit_cluster_ports() {
  echo "$rabbit_cluster_base" $((rabbit_cluster_base + 1)) $((rabbit_cluster_base + 2))
}
rabbit_cluster_node() { echo "operations-$1@localhost"; }

# Runs a RabbitMQ command for the cluster node on AMQP port $1: the node's environment, and a HOME
# of the cluster's own, so that its nodes and tools share an Erlang cookie and no other node's.
rabbit_cluster_do() {
  local port=$1; shift
  (
    export HOME="$rabbit_cluster_dir"
    rabbit_env "$(rabbit_cluster_node "$port")" "$port" "$rabbit_cluster_dir/$port"
    "$@"
  )
}

rabbit_cluster_node_running() {
  local pid_file="$rabbit_cluster_dir/$1/pid"
  [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

rabbit_cluster_ctl() {
  local port=$1; shift
  rabbit_cluster_do "$port" "$rabbit_bin/rabbitmqctl" -q -n "$(rabbit_cluster_node "$port")" "$@"
}

start_rabbit_cluster() {
  local port first started=()
  mkdir -p "$rabbit_cluster_dir"
  if [ ! -f "$rabbit_cluster_dir/.erlang.cookie" ]; then
    (umask 077; head -c 30 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$rabbit_cluster_dir/.erlang.cookie")
    chmod 400 "$rabbit_cluster_dir/.erlang.cookie"
  fi
  for port in $(rabbit_cluster_ports); do
    rabbit_cluster_node_running "$port" && continue
    if port_busy "$port"; then
      say "port $port is taken by another process; set OPERATIONS_RABBIT_CLUSTER_PORT"; return 1
    fi
    rm -f "$rabbit_cluster_dir/$port/pid"
    rabbit_cluster_do "$port" sh -c \
      'nohup "$1" >"$RABBITMQ_LOG_BASE/console.log" 2>&1 &' _ "$rabbit_bin/rabbitmq-server"
    started+=("$port")
  done
  for port in "${started[@]}"; do
    if ! rabbit_cluster_ctl "$port" wait "$rabbit_cluster_dir/$port/pid" --timeout 120 >/dev/null; then
      say "rabbitmq cluster node $port did not start; see $rabbit_cluster_dir/$port/log"
      tail -n 30 "$rabbit_cluster_dir/$port/log/console.log" >&2
      return 1
    fi
  done
  first=$(rabbit_cluster_node "$rabbit_cluster_base")
  for port in $(rabbit_cluster_ports); do
    [ "$port" = "$rabbit_cluster_base" ] && continue
    local status; status=$(rabbit_cluster_ctl "$port" cluster_status --formatter json)
    if [[ $status != *"\"$first\""* ]]; then
      rabbit_cluster_ctl "$port" stop_app >/dev/null
      rabbit_cluster_ctl "$port" join_cluster "$first" >/dev/null
      rabbit_cluster_ctl "$port" start_app >/dev/null
    fi
  done
  local running
  running=$(rabbit_cluster_ctl "$rabbit_cluster_base" eval 'length(rabbit_nodes:all_running()).')
  if [ "$running" != 3 ]; then
    say "rabbitmq cluster did not form ($running nodes running); see $rabbit_cluster_dir"; return 1
  fi
  say "rabbitmq cluster up on 127.0.0.1:$(rabbit_cluster_ports | tr ' ' ',')"
}

stop_rabbit_cluster_node() {
  local port=$1
  if rabbit_cluster_node_running "$port"; then
    rabbit_cluster_ctl "$port" shutdown >/dev/null 2>&1 || true
    say "rabbitmq cluster node $port stopped"
  fi
}

stop_rabbit_cluster() {
  local port
  [ -d "$rabbit_cluster_dir" ] || return 0
  for port in $(rabbit_cluster_ports); do stop_rabbit_cluster_node "$port"; done
  stop_epmd
}

case "${1:-}" in
  install) install ;;
  start) install; start_redis; start_rabbit ;;
  stop) stop_rabbit_cluster; stop_rabbit; stop_redis; stop_cluster ;;
  start-cluster) install; start_cluster ;;
  stop-cluster) stop_cluster ;;
  start-rabbit-cluster) install; start_rabbit_cluster ;;
  stop-rabbit-cluster) stop_rabbit_cluster ;;
  stop-rabbit-cluster-node)
    case " $(rabbit_cluster_ports) " in
      *" ${2:-} "*) stop_rabbit_cluster_node "$2" ;;
      *) echo "usage: $0 stop-rabbit-cluster-node PORT (one of $(rabbit_cluster_ports))" >&2; exit 2 ;;
    esac ;;
  rabbitmqctl) shift; rabbit_env; "$rabbit_bin/rabbitmqctl" -q -n "$node" "$@" ;;
  rabbit-cluster-ctl) shift; port=${1:?usage: $0 rabbit-cluster-ctl PORT ARGS...}; shift
    rabbit_cluster_ctl "$port" "$@" ;;
  status)
    redis_running && say "redis running" || say "redis stopped"
    rabbit_running && say "rabbitmq running" || say "rabbitmq stopped" ;;
  restart-rabbitmq) stop_rabbit; start_rabbit ;;
  restart-redis) stop_redis; start_redis ;;
  *) echo "usage: $0 start|stop|status|restart-rabbitmq|restart-redis|start-cluster|stop-cluster|start-rabbit-cluster|stop-rabbit-cluster|stop-rabbit-cluster-node PORT|install" >&2
     exit 2 ;;
esac
