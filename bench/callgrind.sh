#!/usr/bin/env bash
# bench/callgrind.sh: instructions per call of the gateway's unary path, counted by valgrind's
# callgrind (reproducible on a noisy machine, unlike time). Runs the release gateway under
# callgrind against the bench's nginx stand-in twice, for N1 and N2 calls of GetCashIn (h2load,
# 1 in flight) and CreateCashIn (bench-grpc-load, distinct keys), and prints
# (Ir(N2) − Ir(N1)) / (N2 − N1): startup and the token exchange cancel out.
#
#   bench/callgrind.sh              N1=200, N2=1200
#   CALLGRIND_TOP=1 bench/callgrind.sh   also print the top functions of the larger GetCashIn run
#   CALLGRIND_KEEP=DIR                   keep the callgrind.out files there (callgrind_annotate --tree=caller …)
# Needs what bench/run.sh installs (run it once) and valgrind (apt-get install valgrind).
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
N1="${N1:-200}" N2="${N2:-1200}"
PY="$BENCH_DIR/.venv/bin/python"
[[ -x "$PY" ]] || { echo "run bench/run.sh once first (it installs the tools)" >&2; exit 1; }
command -v valgrind >/dev/null || { [[ "$(id -u)" == 0 ]] && apt-get install -y -qq valgrind >/dev/null; }
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
(cd "$ROOT" && cargo build --release --quiet --bin oms-gateway)
GATEWAY="$TARGET/release/oms-gateway"
LOADGEN="$TARGET/bench-loadgen/release/bench-grpc-load"
GEN="$BENCH_DIR/gen"
[[ -f "$GEN/get.bin" ]] || { echo "run bench/run.sh once first (it generates $GEN)" >&2; exit 1; }
RUN="$(mktemp -d /tmp/oms-callgrind.XXXXXX)"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; if [[ -n "${CALLGRIND_KEEP:-}" ]]; then mkdir -p "$CALLGRIND_KEEP" && cp "$RUN"/cg.* "$CALLGRIND_KEEP"/; fi; rm -rf "$RUN"' EXIT
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
NGINX_PORT="$(free_port)"
"$PY" "$BENCH_DIR/lib/render_nginx.py" "$RUN" "$NGINX_PORT" "$BENCH_DIR/unary/fixtures" > "$RUN/nginx.conf"
"$NGINX" -p "$RUN" -c "$RUN/nginx.conf" > "$RUN/nginx.log" 2>&1 &
PIDS+=($!)
sleep 0.5

one() { # what calls -> prints Ir
  local what="$1" calls="$2" port
  port="$(free_port)"
  valgrind --tool=callgrind --callgrind-out-file="$RUN/cg.$what.$calls" \
    "$GATEWAY" --listen "127.0.0.1:$port" --admin-listen none --oms-base-url "http://127.0.0.1:$NGINX_PORT/v0.9" \
    --oms-api-key sk_bench --oms-api-secret bench-secret --log-level warn > "$RUN/gw.$what.$calls.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 300); do
    "$PY" -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$port" 2>/dev/null && break
    sleep 0.2
  done
  if [[ "$what" == get ]]; then
    timeout 600 h2load -n "$calls" -c1 -m1 -d "$GEN/get.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
      "http://127.0.0.1:$port/polygon.oms.v1.CashInService/GetCashIn" > "$RUN/load.log"
    grep -q "$calls succeeded" "$RUN/load.log" || { cat "$RUN/load.log" >&2; exit 1; }
  else
    timeout 600 "$LOADGEN" "127.0.0.1:$port" /polygon.oms.v1.CashInService/CreateCashIn "$GEN/create.bin" \
      --calls "$calls" --duration 600 --key-prefix cg > "$RUN/load.log"
    grep -q "\"ok\":$calls," "$RUN/load.log" || { cat "$RUN/load.log" >&2; exit 1; }
  fi
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  callgrind_annotate "$RUN/cg.$what.$calls" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}'
}
for what in get create; do
  a="$(one "$what" "$N1")"; b="$(one "$what" "$N2")"
  echo "$what: $(( (b - a) / (N2 - N1) )) instructions per call (Ir $a at $N1 calls, $b at $N2)"
done
if [[ "${CALLGRIND_TOP:-0}" == 1 ]]; then
  callgrind_annotate --inclusive=no "$RUN/cg.get.$N2" 2>/dev/null | sed -n '1,60p'
fi
