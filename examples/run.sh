#!/usr/bin/env bash
# Runs the client examples (examples/python, examples/node) against the BUILT gateway, as CI does.
#
#   bash examples/run.sh                       # builds the release binary first
#   OMS_GATEWAY_BIN=path/to/oms-gateway bash examples/run.sh
#
# Installs each example's dependencies once, into gitignored directories (examples/python/.venv
# from requirements.txt, examples/node/node_modules from package-lock.json with `npm ci`), and
# reinstalls only when those files change. Starts the binary on a free 127.0.0.1 port against its
# embedded sandbox, with one sandbox fault on a made-up cash-in id (503 for GET /cash-ins/ci_outage…)
# so the examples' last call shows an UNAVAILABLE with RetryInfo; waits until grpc.health.v1
# reports SERVING; runs both examples, each bounded by `timeout`, and checks what they print: the
# watch ended OK at completed, the final amounts ($200 with fees of 1% + $1.00 from the developer
# and 2% + $1.00 from OMS: 8.00 in fees, 192.00 USDC), and the decoded error details. Prints
# `PASS <check>` / `FAIL <check>: why`, then `N passed, M failed`; exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="$here/python/.venv"
py="$venv/bin/python"
node_dir="$here/node"

# shellcheck source=/dev/null
source "$root/tests/interop/checks.sh"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/oms-examples.XXXXXX")"
server_pid=""
trap stop_gateway_and_clean EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# === dependencies (idempotent) ======================================================================

log "python: $venv"
if [ -x "$py" ] && cmp -s "$here/python/requirements.txt" "$venv/.requirements.installed" \
  && "$py" -c 'import grpc, grpc_tools.protoc, google.rpc.status_pb2' 2>/dev/null; then
  echo "reusing it"
else
  if [ -e "$venv" ] && ! "$py" -c '' >/dev/null 2>&1; then rm -rf "$venv"; fi
  [ -x "$py" ] || python3 -m venv "$venv" || die "python3 -m venv $venv"
  timeout 900 "$py" -m pip install -q --disable-pip-version-check -r "$here/python/requirements.txt" \
    || die "pip install -r examples/python/requirements.txt"
  cp "$here/python/requirements.txt" "$venv/.requirements.installed"
fi

log "node: $node_dir/node_modules ($(node --version))"
if [ -d "$node_dir/node_modules/@grpc/grpc-js" ] \
  && cmp -s "$node_dir/package-lock.json" "$node_dir/node_modules/.lock.installed"; then
  echo "reusing it"
else
  (cd "$node_dir" && timeout 600 npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in examples/node"
  cp "$node_dir/package-lock.json" "$node_dir/node_modules/.lock.installed"
fi

# === the gateway ===================================================================================

if [ -n "${OMS_GATEWAY_BIN:-}" ]; then
  bin="$OMS_GATEWAY_BIN"
else
  log "build: cargo build --release"
  (cd "$root" && timeout 1500 cargo build --release --bin oms-gateway) || die "cargo build --release"
  bin="${CARGO_TARGET_DIR:-$root/target}/release/oms-gateway"
fi
[ -x "$bin" ] || die "the binary exists" "$bin is not an executable file"

port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
addr="127.0.0.1:$port"
unset_oms=()
while IFS= read -r name; do unset_oms+=(-u "$name"); done < <(compgen -e | grep '^OMS_' || true)
faults='503=1,paths=/cash-ins/ci_outage'
log "start: $bin --listen $addr --sandbox-faults '$faults'"
env "${unset_oms[@]}" "$bin" --listen "$addr" --admin-listen none --sandbox-faults "$faults" >"$workdir/server.log" 2>&1 </dev/null &
server_pid=$!

# grpc.health.v1.Health/Check("") without stubs: the request is empty, SERVING is field 1 = 1.
if timeout 70 "$py" - "$addr" "$server_pid" <<'PY'; then
import os, sys, time, grpc
addr, pid = sys.argv[1], int(sys.argv[2])
check = grpc.insecure_channel(addr).unary_unary("/grpc.health.v1.Health/Check")
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("the gateway exited")
    try:
        if check(b"", timeout=2) == b"\x08\x01":
            sys.exit(0)
    except grpc.RpcError:
        pass
    time.sleep(0.3)
sys.exit("not SERVING after 60 s")
PY
  pass "the gateway reports SERVING"
else
  tail -n 20 "$workdir/server.log"
  die "the gateway reports SERVING"
fi

# === the examples ==================================================================================

# expect NAME OUTPUT LINE...: one check per expected line (a fixed string, anywhere in a line).
expect() {
  local name="$1" output="$2" line
  shift 2
  for line in "$@"; do
    if grep -qF -- "$line" "$output"; then pass "$name prints: $line"; else fail "$name prints: $line"; fi
  done
}

run_example() { # NAME DIR COMMAND...
  local name="$1" dir="$2" out="$workdir/$1.out" rc=0
  shift 2
  log "$name: $*"
  (cd "$dir" && timeout 120 "$@" --addr "$addr") >"$out" 2>&1 || rc=$?
  sed 's/^/     /' "$out"
  if [ "$rc" -eq 0 ]; then pass "$name example exits 0"; else fail "$name example exits 0" "exit $rc"; fi
  expect "$name" "$out" \
    "created: ci_" \
    "watch: CASH_IN_EVENT_TYPE_INITIAL CASH_IN_STATUS_PENDING" \
    "watch: CASH_IN_EVENT_TYPE_CHANGED CASH_IN_STATUS_COMPLETED" \
    "watch: ended OK" \
    "status           CASH_IN_STATUS_COMPLETED" \
    "deposited        200.00 USD" \
    "fees deducted    8.00" \
    "delivered (net)  192.00 USDC" \
    "transaction      txn_" \
    "invalid create: INVALID_ARGUMENT" \
    "BadRequest customer_id: " \
    "ErrorInfo reason=INVALID_REQUEST_FIELDS domain=oms-gateway" \
    "unknown cash-in: NOT_FOUND" \
    "ResourceInfo polygon.oms.v1.CashIn ci_unknown" \
    "GetCashIn ci_outage_demo: UNAVAILABLE" \
    "RetryInfo retry_delay="
  # The deposit code is as good as cash: an example must not print it.
  local codes
  codes="$(grep -E '"code"|[0-9]{3} [0-9]{3}' "$out" || true)"
  if [ -z "$codes" ]; then pass "$name prints no deposit code"; else fail "$name prints no deposit code" "$codes"; fi
}

run_example python "$here/python" "$py" example.py
run_example node "$node_dir" node example.js

summary
[ "$failed" -eq 0 ]
