#!/usr/bin/env bash
# The engine's load test (issue 4): one `cairn` shard pinned to SERVER_CPU (`--shards 1 --pin`)
# and nginx (one worker, static 200) pinned to the same CPU, each loaded in turn by cairn-loadgen
# pinned to LOAD_CPU, at 16, 64 and 256 connections, in one invocation:
#   nginx GET /            (baseline)
#   cairn GET /counter/c{key}                 over KEYS counters (reads)
#   cairn POST /counter/c{key}/increment      over KEYS counters (durable increments)
# Prints one line per run: "round name conns rps p50_us p99_us p999_us errors cpu_us_per_req", the last
# being the server process's CPU time (user + system, from /proc) divided by the requests served:
# on a shared machine, where throughput mostly measures the scheduler, it is the steadier figure.
# Knobs: DURATION=5s WARMUP=1s KEYS=10000 CONNS="16 64 256" SERVER_CPU=0 LOAD_CPU=1
#        READ_KEYS=$KEYS (the reads' key space on its own: READ_KEYS=1 reads one counter, issue 4's
#        "plain GET of a counter value", while the increments go over KEYS)
#        PORT=18580 CAIRN_PORT=18590 CAIRN_EXTRA="" (more cairn flags)
#        CAIRN_BIN=target/release/cairn (another build, e.g. a copy of the one before a change)
#        ROWS="nginx-static cairn-read cairn-incr" (the rows to run, e.g. ROWS=cairn-read; also
#        floor-uring and floor-epoll: `cairn-floor`, the cheapest responder glommio allows, with
#        glommio's per-read io_uring poll or with one epoll set; docs/BENCHMARKS.md, "The
#        runtime's floor")
#        RATE= (open loop at RATE requests/s in total instead of a closed loop: with the offered
#        load fixed, cpu_us_per_req compares servers' efficiency without the closed loop's
#        feedback between server speed and batching)
#        REPEAT=1 (rounds; each round runs every row at every connection count, so rows of one
#        round are interleaved: on a shared machine compare rows within a round)
#        ORDER=abba (each round runs the rows, then again in reverse order: nginx, reads,
#        increments, increments, reads, nginx, and the round's ratios use both runs of each row,
#        so a drift or a change of the machine's speed during a round weighs on both sides;
#        ORDER=once runs each row once per round)
# Needs: release builds of cairn and cairn-loadgen, nginx, taskset, jq.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-5s}"; WARMUP="${WARMUP:-1s}"; KEYS="${KEYS:-10000}"; READ_KEYS="${READ_KEYS:-$KEYS}"
ROWS="${ROWS:-nginx-static cairn-read cairn-incr}"; REPEAT="${REPEAT:-1}"; ORDER="${ORDER:-abba}"
CONNS="${CONNS:-16 64 256}"; SERVER_CPU="${SERVER_CPU:-0}"; LOAD_CPU="${LOAD_CPU:-1}"
PORT="${PORT:-18580}"; CAIRN_PORT="${CAIRN_PORT:-18590}"
LOADGEN="$ROOT/target/release/cairn-loadgen"; CAIRN="${CAIRN_BIN:-$ROOT/target/release/cairn}"
FLOOR="$ROOT/target/release/cairn-floor"
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
BOUND_S=$(( ${DURATION%s} + ${WARMUP%s} + 30 ))
WORK="$(mktemp -d)"; PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  # A server that has not stopped 10 s after SIGTERM is killed, so the script always ends.
  for _ in $(seq 1 100); do
    alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
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
PIDS+=($!); NGINX_PID=$!
# --pin puts shard 0 on CPU 0; taskset keeps the process's other threads there too.
taskset -c "$SERVER_CPU" "$CAIRN" --shards 1 --pin --listen "127.0.0.1:$CAIRN_PORT" \
  --data-dir "$WORK/cairn-data" ${CAIRN_EXTRA:-} 2>"$WORK/cairn.log" &
PIDS+=($!); CAIRN_PID=$!
wait_port "$PORT"; wait_port "$CAIRN_PORT"
want() { [[ " $ROWS " == *" $1 "* ]]; }
FLOOR_PIDS=()
for reads in uring epoll; do
  if want "floor-$reads"; then
    [ "$reads" = uring ] && p=$((CAIRN_PORT + 1)) || p=$((CAIRN_PORT + 2))
    taskset -c "$SERVER_CPU" "$FLOOR" --listen "127.0.0.1:$p" --reads "$reads" &
    PIDS+=($!); FLOOR_PIDS+=("$reads:$!:$p")
    wait_port "$p"
  fi
done
floor_pid() { for e in "${FLOOR_PIDS[@]}"; do [ "${e%%:*}" = "$1" ] && { e="${e#*:}"; echo "${e%%:*}"; }; done; }
floor_port() { for e in "${FLOOR_PIDS[@]}"; do [ "${e%%:*}" = "$1" ] && echo "${e##*:}"; done; }
cpu_ticks() { # pid -> utime + stime of the whole process, in clock ticks
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}
run() { # name pid conns args...
  local name="$1" pid="$2" conns="$3"; shift 3
  local t0; t0="$(cpu_ticks "$pid")"
  timeout "$BOUND_S" taskset -c "$LOAD_CPU" "$LOADGEN" --cores "$LOAD_CPU" -c "$conns" -d "$DURATION" \
    --warmup "$WARMUP" ${RATE:+--rate "$RATE"} --json "$@" > "$WORK/out.json"
  jq -r --arg n "$name" --arg c "$conns" \
    '"\($n) \($c) \(.requests_per_sec|floor) \(.latency_us.p50) \(.latency_us.p99) \(.latency_us.p999) \(.errors)"' \
    "$WORK/out.json" | tr '\n' ' '
  local t1; t1="$(cpu_ticks "$pid")"
  # Warm-up requests are served but not counted: scale them in by time.
  jq -r --argjson ticks "$((t1 - t0))" --argjson hz "$(getconf CLK_TCK)" \
    --argjson frac "$(awk -v d="${DURATION%s}" -v w="${WARMUP%s}" 'BEGIN { print d / (d + w) }')" \
    '(($ticks / $hz) * 1e6 * $frac / (.requests + 1)) * 100 | floor / 100' "$WORK/out.json"
}
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -sr), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# round name conns rps p50_us p99_us p999_us errors cpu_us_per_req"
run_row() { # row conns
  local row="$1" c="$2"
  case "$row" in
    nginx-static) run nginx-static "$NGINX_PID" "$c" --url "http://127.0.0.1:$PORT/" ;;
    floor-uring|floor-epoll)
      local reads="${row#floor-}"
      run "$row" "$(floor_pid "$reads")" "$c" --url "http://127.0.0.1:$(floor_port "$reads")/" ;;
    cairn-read)
      run cairn-read "$CAIRN_PID" "$c" --url "http://127.0.0.1:$CAIRN_PORT/counter/c{key}" --keys "$READ_KEYS" ;;
    cairn-incr)
      run cairn-incr "$CAIRN_PID" "$c" --url "http://127.0.0.1:$CAIRN_PORT/counter/c{key}/increment" \
        --method POST --keys "$KEYS" ;;
  esac
}
ORDERED=()
for row in nginx-static floor-uring floor-epoll cairn-read cairn-incr; do want "$row" && ORDERED+=("$row"); done
for round in $(seq 1 "$REPEAT"); do
  for c in $CONNS; do
    for row in "${ORDERED[@]}"; do run_row "$row" "$c" | sed "s/^/$round /"; done
    if [ "$ORDER" = abba ]; then
      for (( k=${#ORDERED[@]}-1; k>=0; k-- )); do run_row "${ORDERED[$k]}" "$c" | sed "s/^/$round /"; done
    fi
  done
done | tee "$WORK/rows.txt"
# Per round and connection count: the bars of issue 4 from the rows' summed requests (with
# ORDER=abba each row ran twice, mirrored, so a drift during the round weighs on both sides).
awk '$2 == "nginx-static" { n[$1" "$3] += $4 } $2 == "cairn-read" { r[$1" "$3] += $4 }
     $2 == "cairn-incr" { i[$1" "$3] += $4; if ($6 > p[$1" "$3]) p[$1" "$3] = $6 }
     END { for (k in r) { split(k, a, " ");
       printf "# round %s conns %s: reads/nginx %s increments/reads %s increment p99 max %s us\n", a[1], a[2],
         (k in n) ? sprintf("%.3f", r[k] / n[k]) : "-", (k in i) ? sprintf("%.3f", i[k] / r[k]) : "-",
         (k in p) ? p[k] : "-" } }' "$WORK/rows.txt" | sort -k3,3n -k5,5n | tee "$WORK/rounds.txt"
# The median round per connection count: the machine switches between a fast and a slow mode
# (about 20% apart) at moments no ordering controls, and a round whose rows straddle a switch
# compares the two modes, not the two servers; the median is robust to those rounds.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
for c in $CONNS; do
  n="$(awk -v c="$c:" '$5 == c' "$WORK/rounds.txt" | wc -l)"
  [ "$n" -gt 0 ] || continue
  echo "# median of $n rounds at $c connections:" \
    "reads/nginx $(awk -v c="$c:" '$5 == c { print $7 }' "$WORK/rounds.txt" | median)" \
    "increments/reads $(awk -v c="$c:" '$5 == c { print $9 }' "$WORK/rounds.txt" | median)"
done
