#!/usr/bin/env bash
# The standard comparison, in one invocation:
#   1. reads:  nginx (one worker, static 200) under wrk -t1 and under cairn-loadgen (closed loop,
#              same connections, same core), at full load and at a moderate connection count;
#              then cairn-loadgen open loop at half of wrk's rate;
#   2. Cairn reads (same as 1. against the `cairn` binary), Cairn durable writes, WebSocket fan-out:
#              skipped with a message while the `cairn` binary does not exist.
# The server is pinned to SERVER_CPU and the load to LOAD_CPU (taskset). Prints a table with ratios
# and writes it, with the date and machine, into docs/BENCHMARKS.md between the compare.sh markers.
#
# Usage: bench/compare.sh            (as root on a fresh machine: installs nginx, wrk, jq via apt)
# Knobs (environment): DURATION=5s CONNS=32 MODERATE_CONNS=4 SERVER_CPU=0 LOAD_CPU=1 PORT=18480
#                      CAIRN_PORT=18490 CAIRN_ARGS="--listen ... --data ..." (how to start cairn)
#                      NO_DOC=1 (print only) OUT=path/to/BENCHMARKS.md
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-5s}"; CONNS="${CONNS:-32}"; MODERATE_CONNS="${MODERATE_CONNS:-4}"
SERVER_CPU="${SERVER_CPU:-0}"; LOAD_CPU="${LOAD_CPU:-1}"
PORT="${PORT:-18480}"; CAIRN_PORT="${CAIRN_PORT:-18490}"
OUT="${OUT:-$ROOT/docs/BENCHMARKS.md}"
# Every external run is bounded: duration + this many seconds.
BOUND_S=$(( ${DURATION%s} + 30 ))

log() { printf '== %s\n' "$*" >&2; }

# --- what it needs -------------------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v jq >/dev/null || need+=(jq)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx)
command -v taskset >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

log "building cairn-loadgen (release)"
(cd "$ROOT" && timeout 3600 cargo build --release -q -p cairn-loadgen)
LOADGEN="$ROOT/target/release/cairn-loadgen"
CAIRN=""
if [ -d "$ROOT/engine" ]; then
  log "building cairn (release)"
  if (cd "$ROOT" && timeout 3600 cargo build --release -q --bin cairn 2>/dev/null); then
    CAIRN="$ROOT/target/release/cairn"
  fi
fi

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() { # port: wait up to 10 s for a listener
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2; return 1
}

# --- nginx: one worker, a static 200, pinned ------------------------------------------------------
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
log "nginx (one worker, static 200) on 127.0.0.1:$PORT, CPU $SERVER_CPU"
taskset -c "$SERVER_CPU" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" &
PIDS+=($!)
wait_port "$PORT"

# --- runners: each prints "rps p50 p99 p999 errors" with latencies in microseconds ---------------
to_us() { # 12.34us | 1.20ms | 2.00s -> microseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000;
                        else if (v ~ /s$/) print n * 1000000; else print n }'
}
run_wrk() { # url conns
  local out; out="$(timeout "$BOUND_S" taskset -c "$LOAD_CPU" wrk -t1 -c"$2" -d"$DURATION" --latency "$1")"
  echo "$out" > "$WORK/wrk-$2.txt"
  local rps p50 p99 errors
  rps="$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")"
  p50="$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")"
  p99="$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
  errors="$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(",", ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' <<<"$out")"
  echo "$rps $p50 $p99 - $errors"
}
run_loadgen() { # name args...: stores JSON as $WORK/name.json
  local name="$1"; shift
  timeout "$BOUND_S" taskset -c "$LOAD_CPU" "$LOADGEN" --cores "$LOAD_CPU" -d "$DURATION" --json "$@" \
    > "$WORK/$name.json"
  jq -r '"\(.requests_per_sec) \(.latency_us.p50) \(.latency_us.p99) \(.latency_us.p999) \(.errors)"' \
    "$WORK/$name.json"
}

ROWS=()
row() { ROWS+=("$(printf '| %s | %s | %s | %s |' "$1" "$2" "$3" "$4")"); }
fmt() { # rps p50 p99 p999 errors -> "rps | p50 | p99 | p99.9 | errors"
  awk '{ printf "%.0f | %s | %s | %s | %s", $1,
         ($2 == "-" ? "-" : sprintf("%.0f", $2)), ($3 == "-" ? "-" : sprintf("%.0f", $3)),
         ($4 == "-" ? "-" : sprintf("%.0f", $4)), $5 }' <<<"$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a + 0 == 0) print "-"; else printf "%.2f", b / a }'; }

URL="http://127.0.0.1:$PORT/"
log "reads, full load: wrk -t1 -c$CONNS vs cairn-loadgen -c$CONNS (closed loop), $DURATION each"
W="$(run_wrk "$URL" "$CONNS")"
L="$(run_loadgen nginx-closed --url "$URL" -c "$CONNS")"
row "nginx static 200, closed loop, $CONNS conns" "wrk -t1" "$(fmt "$W")" "baseline"
row "nginx static 200, closed loop, $CONNS conns" "cairn-loadgen, 1 core" "$(fmt "$L")" \
  "req/s $(ratio "$(cut -d' ' -f1 <<<"$W")" "$(cut -d' ' -f1 <<<"$L")")"

log "reads, moderate load: wrk -t1 -c$MODERATE_CONNS vs cairn-loadgen -c$MODERATE_CONNS (closed loop)"
WM="$(run_wrk "$URL" "$MODERATE_CONNS")"
LM="$(run_loadgen nginx-moderate --url "$URL" -c "$MODERATE_CONNS")"
row "nginx static 200, closed loop, $MODERATE_CONNS conns" "wrk -t1" "$(fmt "$WM")" "baseline"
row "nginx static 200, closed loop, $MODERATE_CONNS conns" "cairn-loadgen, 1 core" "$(fmt "$LM")" \
  "req/s $(ratio "$(cut -d' ' -f1 <<<"$WM")" "$(cut -d' ' -f1 <<<"$LM")"), p50 $(ratio "$(cut -d' ' -f2 <<<"$WM")" "$(cut -d' ' -f2 <<<"$LM")"), p99 $(ratio "$(cut -d' ' -f3 <<<"$WM")" "$(cut -d' ' -f3 <<<"$LM")")"

HALF="$(awk -v r="$(cut -d' ' -f1 <<<"$W")" 'BEGIN { printf "%d", r / 2 }')"
log "reads, open loop at $HALF req/s (half of wrk's full-load rate), $CONNS conns"
LO="$(run_loadgen nginx-open --url "$URL" -c "$CONNS" --rate "$HALF")"
row "nginx static 200, open loop at $HALF req/s" "cairn-loadgen, 1 core" "$(fmt "$LO")" "-"

SKIPPED=""
if [ -n "$CAIRN" ] && [ -x "$CAIRN" ]; then
  log "cairn on 127.0.0.1:$CAIRN_PORT, CPU $SERVER_CPU"
  mkdir -p "$WORK/cairn-data"
  # shellcheck disable=SC2086 # CAIRN_ARGS is a list of words on purpose
  taskset -c "$SERVER_CPU" "$CAIRN" ${CAIRN_ARGS:---listen 127.0.0.1:$CAIRN_PORT --data $WORK/cairn-data --shards 1} \
    > "$WORK/cairn.log" 2>&1 &
  PIDS+=($!)
  wait_port "$CAIRN_PORT"
  CURL="http://127.0.0.1:$CAIRN_PORT"
  CR="$(run_loadgen cairn-reads --url "$CURL/kv/bench/k{key}" -c "$CONNS" --keys 1000)"
  row "Cairn kv reads, closed loop, $CONNS conns" "cairn-loadgen, 1 core" "$(fmt "$CR")" \
    "req/s vs nginx $(ratio "$(cut -d' ' -f1 <<<"$L")" "$(cut -d' ' -f1 <<<"$CR")")"
  CW="$(run_loadgen cairn-writes --url "$CURL" -c "$CONNS" --preset counter --keys 1000)"
  row "Cairn durable writes (counter preset), $CONNS conns" "cairn-loadgen, 1 core" "$(fmt "$CW")" \
    "req/s vs reads $(ratio "$(cut -d' ' -f1 <<<"$CR")" "$(cut -d' ' -f1 <<<"$CW")")"
  CF="$(run_loadgen cairn-ws ws --url "ws://127.0.0.1:$CAIRN_PORT/room/r{room}" --rooms 10 --members 10 --send-rate 10)"
  row "Cairn WebSocket fan-out, 10 rooms x 10 members, 10 msg/s each" "cairn-loadgen, 1 core" \
    "$(fmt "$CF")" "-"
else
  SKIPPED="Cairn rows skipped: the \`cairn\` binary does not exist yet (engine not landed)."
  echo "SKIP: $SKIPPED" >&2
fi

# --- the table -----------------------------------------------------------------------------------
CPU_MODEL="$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
TABLE="$(
  echo "Run on $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -srm), ${CPU_MODEL:-unknown CPU}, $(nproc) CPUs;"
  echo "server on CPU $SERVER_CPU, load on CPU $LOAD_CPU (taskset), $DURATION per row. Latencies in microseconds;"
  echo "wrk reports no p99.9. Ratios are cairn-loadgen / wrk from the same invocation."
  echo
  echo "| benchmark | load generator | req/s | p50 | p99 | p99.9 | errors | ratio |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  if [ -n "$SKIPPED" ]; then echo; echo "$SKIPPED"; fi
)"
echo "$TABLE"

if [ -z "${NO_DOC:-}" ]; then
  BEGIN='<!-- compare.sh:begin -->'; END='<!-- compare.sh:end -->'
  if [ -f "$OUT" ] && grep -q "$BEGIN" "$OUT"; then
    TABLE="$TABLE" awk -v b="$BEGIN" -v e="$END" '
      $0 == b { print; print ENVIRON["TABLE"]; skip = 1; next }
      $0 == e { skip = 0 }
      !skip { print }' "$OUT" > "$WORK/doc" && cp "$WORK/doc" "$OUT"
  else
    printf '\n## Latest comparison\n\n%s\n%s\n%s\n' "$BEGIN" "$TABLE" "$END" >> "$OUT"
  fi
  log "table written to $OUT"
fi
