#!/usr/bin/env bash
# The engine's load test (issue 4): one `cairn` shard pinned to SERVER_CPU (`--shards 1 --pin`)
# and nginx (one worker, static 200) pinned to the same CPU, each loaded in turn by cairn-loadgen
# pinned to LOAD_CPU, at 16, 64 and 256 connections, in one invocation:
#   nginx GET /            (baseline)
#   cairn GET /counter/c{key}                 over KEYS counters (reads)
#   cairn POST /counter/c{key}/increment      over KEYS counters (durable increments)
# Prints one line per run: "name conns rps p50_us p99_us p999_us errors".
# Knobs: DURATION=5s WARMUP=1s KEYS=10000 CONNS="16 64 256" SERVER_CPU=0 LOAD_CPU=1
#        PORT=18580 CAIRN_PORT=18590 CAIRN_EXTRA="" (more cairn flags)
# Needs: release builds of cairn and cairn-loadgen, nginx, taskset, jq.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-5s}"; WARMUP="${WARMUP:-1s}"; KEYS="${KEYS:-10000}"
CONNS="${CONNS:-16 64 256}"; SERVER_CPU="${SERVER_CPU:-0}"; LOAD_CPU="${LOAD_CPU:-1}"
PORT="${PORT:-18580}"; CAIRN_PORT="${CAIRN_PORT:-18590}"
LOADGEN="$ROOT/target/release/cairn-loadgen"; CAIRN="$ROOT/target/release/cairn"
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
BOUND_S=$(( ${DURATION%s} + ${WARMUP%s} + 30 ))
WORK="$(mktemp -d)"; PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
wait_port() {
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on 127.0.0.1:$1" >&2; return 1
}
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
pid $WORK/nginx/logs/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/tmp/body;
  proxy_temp_path $WORK/nginx/tmp/proxy;
  fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
  scgi_temp_path $WORK/nginx/tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  server { listen 127.0.0.1:$PORT; location / { return 200 "ok\n"; } }
}
CONF
taskset -c "$SERVER_CPU" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" &
PIDS+=($!)
# --pin puts shard 0 on CPU 0; taskset keeps the process's other threads there too.
taskset -c "$SERVER_CPU" "$CAIRN" --shards 1 --pin --listen "127.0.0.1:$CAIRN_PORT" \
  --data-dir "$WORK/cairn-data" ${CAIRN_EXTRA:-} 2>"$WORK/cairn.log" &
PIDS+=($!)
wait_port "$PORT"; wait_port "$CAIRN_PORT"
run() { # name conns args...
  local name="$1" conns="$2"; shift 2
  timeout "$BOUND_S" taskset -c "$LOAD_CPU" "$LOADGEN" --cores "$LOAD_CPU" -c "$conns" -d "$DURATION" \
    --warmup "$WARMUP" --json "$@" > "$WORK/out.json"
  jq -r --arg n "$name" --arg c "$conns" \
    '"\($n) \($c) \(.requests_per_sec|floor) \(.latency_us.p50) \(.latency_us.p99) \(.latency_us.p999) \(.errors)"' \
    "$WORK/out.json"
}
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -sr), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# name conns rps p50_us p99_us p999_us errors"
for c in $CONNS; do
  run nginx-static "$c" --url "http://127.0.0.1:$PORT/"
  run cairn-read "$c" --url "http://127.0.0.1:$CAIRN_PORT/counter/c{key}" --keys "$KEYS"
  run cairn-incr "$c" --url "http://127.0.0.1:$CAIRN_PORT/counter/c{key}/increment" --method POST --keys "$KEYS"
done
