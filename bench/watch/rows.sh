# bench/watch/rows.sh: the watch-stream rows of bench/run.sh (sourced by it, after the unary rows;
# uses its helpers and variables). Each row starts a fresh gateway against a second nginx that
# serves every cash-in from a file, runs bench/loadgen's `bench-watch` (see its header for the
# phases), and appends its JSON line to $WATCH_RESULTS. The table is bench/lib/watch_table.py.
# BENCH_WATCH_ROWS="key:streams:ids:interval_s:rounds[:stalled] ..." runs those rows instead.
# The gateways get one worker thread, as the unary pair does (BENCH_WATCH_WORKERS=N for N).
# BENCH_PERF=1 records each row's gateway with `perf record ${BENCH_PERF_ARGS:--g}` into $RUN/perf-KEY.data (with
# BENCH_KEEP=1 to keep it; build with CARGO_PROFILE_RELEASE_DEBUG=line-tables-only for lines).

WATCH_FILES="$RUN/watch-files"
mkdir -p "$WATCH_FILES"
"$PY" "$BENCH_DIR/lib/watch_template.py" "$FIXTURE" "$WATCH_FILES"
WATCH_NGINX_PORT="$(free_port)"
"$PY" "$BENCH_DIR/lib/render_nginx.py" --watch "$RUN" "$WATCH_NGINX_PORT" "$WATCH_FILES" > "$RUN/nginx-watch.conf"
"$NGINX" -p "$RUN" -c "$RUN/nginx-watch.conf" > "$RUN/nginx-watch.log" 2>&1 &
WATCH_NGINX_PID=$!; PIDS+=("$WATCH_NGINX_PID")
WATCH_STATUS_URL="http://127.0.0.1:$WATCH_NGINX_PORT/nginx_status"
wait_for nginx-watch "$WATCH_NGINX_PID" curl -sf "$WATCH_STATUS_URL"
WATCH_RESULTS="$RUN/watch.jsonl"
: > "$WATCH_RESULTS"
WATCHER="$TARGET/bench-loadgen/release/bench-watch"

watch_row() { # key streams ids interval rounds [stalled]
  local key="$1" streams="$2" ids="$3" interval="$4" rounds="$5" stalled="${6:-0}"
  local total=$((streams + stalled)) port out
  local connections=$(((total + 499) / 500))
  port="$(free_port)"
  log "watch row $key: $streams streams on $ids ids, $stalled stalled readers, poll every $interval s"
  "$GATEWAY" --listen "127.0.0.1:$port" --admin-listen none \
    --oms-base-url "http://127.0.0.1:$WATCH_NGINX_PORT/v0.9" --oms-api-key sk_bench --oms-api-secret bench-secret \
    --watch-poll-interval "${interval}s" --watch-max-streams 250000 --watch-max-watched 5000 \
    --watch-max-polls-per-second 10000 --max-concurrent-streams-per-connection 1000 \
    --worker-threads "${BENCH_WATCH_WORKERS:-1}" --log-level warn > "$RUN/gateway-$key.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_for "gateway-$key" "$pid" port_open "$port"
  local perf_pid=""
  if [[ -n "${BENCH_PERF:-}" ]]; then
    perf record -q -F 1999 ${BENCH_PERF_ARGS:--g} -p "$pid" -o "$RUN/perf-$key.data" > "$RUN/perf-$key.log" 2>&1 &
    perf_pid=$!
  fi
  : > "$RUN/polls.log"
  out="$(timeout $((120 + DURATION * 3)) "$WATCHER" --addr "127.0.0.1:$port" --streams "$streams" --stalled "$stalled" \
    --connections "$connections" --ids "$ids" --fixtures "$WATCH_FILES" --access-log "$RUN/polls.log" \
    --gateway-pid "$pid" --status-url "$WATCH_STATUS_URL" --idle "$WATCH_IDLE" --rounds "$rounds" \
    --interval "$interval" --timeout 90)" || { echo "$out" >&2; die "watch row $key failed (gateway log: $(tail -n 5 "$RUN/gateway-$key.log"))"; }
  alive "$pid" "gateway-$key"
  echo "{\"row\":\"$key\",\"interval_s\":$interval,${out#\{}" >> "$WATCH_RESULTS"
  if [[ -n "$perf_pid" ]]; then kill -INT "$perf_pid" 2>/dev/null || true; wait "$perf_pid" 2>/dev/null || true; fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

if [[ -n "${BENCH_WATCH_ROWS:-}" ]]; then
  # e.g. BENCH_WATCH_ROWS="watch-50k-1:50000:1:2:3 watch-stalled:1000:10:0.2:30:10000"
  WATCH_IDLE="${BENCH_WATCH_IDLE:-5}"
  for spec in $BENCH_WATCH_ROWS; do
    IFS=: read -r -a f <<< "$spec"
    watch_row "${f[@]}"
  done
elif [[ "$SMOKE" == 1 ]]; then
  WATCH_IDLE=2
  watch_row watch-1k-10 1000 10 1 1
  watch_row watch-stalled 100 10 0.2 5 500
else
  WATCH_IDLE=10
  for n in 10000 50000 100000; do
    watch_row "watch-$((n / 1000))k-1" "$n" 1 2 3
    watch_row "watch-$((n / 1000))k-1000" "$n" 1000 2 3
  done
  watch_row watch-stalled 1000 10 0.2 30 10000
fi
kill "$WATCH_NGINX_PID" 2>/dev/null || true
