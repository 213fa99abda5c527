#!/usr/bin/env bash
# Interop checks: drive the BUILT oms-gateway binary as a user would, over loopback.
#
#   bash tests/interop/run.sh                  # builds target/release/oms-gateway first
#   OMS_GATEWAY_BIN=path/to/oms-gateway bash tests/interop/run.sh
#
# Starts the binary with no OMS_* settings (so it serves against its embedded sandbox) on a free
# 127.0.0.1 port, waits until grpc.health.v1 reports SERVING, then checks it with grpcurl
# (reflection only, no proto files) and with a Python client on stubs generated from proto/
# (client.py); then starts it again with TLS, client certificates (openssl, made here) and a policy,
# and repeats the flow with grpcurl (-cacert -cert -key) and the Python client
# (grpc.ssl_channel_credentials). Tools go into tests/interop/.venv (gitignored), installed once and reused.
# Between the two, it scrapes the first server's admin listener (/metrics, /healthz, /readyz): every
# RPC the script made moved its counter, and `promtool check metrics` (Debian's prometheus package,
# apt-installed here when missing) accepts the scrape.
# Prints `PASS <check>` / `FAIL <check>: why` per check, then `N passed, M failed`; exits non-zero
# when any check failed. Every wait is bounded; the server is stopped on exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
py="$venv/bin/python"
grpcurl="$venv/bin/grpcurl"
gen="$here/gen"
requirements="$here/requirements.txt"

startup_timeout="${OMS_INTEROP_STARTUP_TIMEOUT:-60}"

# shellcheck source=/dev/null
source "$here/checks.sh"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/oms-interop.XXXXXX")"
server_pid=""
server_log="$workdir/server.log"

# alive PID: the process exists and is not a zombie.
alive() {
  [ -r "/proc/$1/stat" ] || return 1
  local state
  state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# stop_server SECONDS: SIGTERM, wait at most SECONDS, then SIGKILL. Returns the exit status.
stop_server() {
  local pid="$server_pid" limit="$1" i=0 rc=0
  [ -n "$pid" ] || return 0
  server_pid=""
  kill -TERM "$pid" 2>/dev/null || true
  while alive "$pid" && [ "$i" -lt $((limit * 10)) ]; do sleep 0.1; i=$((i + 1)); done
  if alive "$pid"; then
    echo "interop: server (pid $pid) still running after ${limit}s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || rc=$?
  return "$rc"
}

cleanup() {
  local rc=$?
  stop_server 10 >/dev/null 2>&1 || true
  rm -rf "$workdir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_server_log() {
  echo "--- server log (last 40 lines) ---"
  tail -n 40 "$server_log" 2>/dev/null || true
  echo "---"
}

# === tools =========================================================================================

venv_ready() {
  [ -x "$py" ] && [ -x "$grpcurl" ] \
    && cmp -s "$requirements" "$venv/.requirements.installed" \
    && "$py" -c 'import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2, grpc_status.rpc_status, google.rpc.error_details_pb2' 2>/dev/null \
    && timeout 10 "$grpcurl" -version >/dev/null 2>&1
}

setup_venv() {
  if venv_ready; then
    log "tools: reusing $venv"
    return 0
  fi
  log "tools: installing into $venv"
  # A venv whose interpreter is gone (moved, Python upgraded) is rebuilt from scratch.
  if [ -e "$venv" ] && ! "$py" -c '' >/dev/null 2>&1; then rm -rf "$venv"; fi
  if ! [ -x "$py" ]; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
      # Debian splits venv out of python3; install it only when it is missing.
      rm -rf "$venv"
      if command -v apt-get >/dev/null 2>&1; then
        timeout 600 apt-get install -y -q python3-venv >/dev/null 2>&1 \
          || { timeout 300 apt-get update -q >/dev/null 2>&1 && timeout 600 apt-get install -y -q python3-venv >/dev/null; }
      fi
      python3 -m venv "$venv"
    fi
  fi
  timeout 900 "$py" -m pip install -q --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/.requirements.installed"
  venv_ready
}

# pyj JSON EXPR: evaluates the Python expression EXPR with `d` bound to the parsed JSON; prints a
# string as is and anything else as JSON. Fails (empty output) when the JSON or the path is bad.
# grpcurl prints the proto field names (snake_case); keys are turned into their proto3 JSON names
# (lowerCamelCase) first, so EXPR reads the REST names: d["cashIn"]["depositInstructions"].
pyj() {
  "$py" - "$1" "$2" <<'PY'
import json, re, sys
def camel(v):
    if isinstance(v, dict):
        return {re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), k): camel(x) for k, x in v.items()}
    if isinstance(v, list):
        return [camel(x) for x in v]
    return v
try:
    d = camel(json.loads(sys.argv[1]))
    v = eval(sys.argv[2], {"d": d})
except Exception as e:
    print(f"pyj: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
print(v if isinstance(v, str) else json.dumps(v))
PY
}

# comment_phrase FILE REGEX: the first line of the comment block just above the first line of FILE
# matching REGEX, without the `//`, cut to its first six words. Empty when there is none.
comment_phrase() {
  "$py" - "$1" "$2" <<'PY'
import re, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
for i, line in enumerate(lines):
    if re.search(sys.argv[2], line):
        j = i
        while j > 0 and lines[j - 1].strip().startswith("//"):
            j -= 1
        if j < i:
            words = lines[j].strip()[2:].split()
            print(" ".join(words[:6]))
        break
PY
}

# gc ARGS...: grpcurl over $transport (plaintext, or TLS flags in the mTLS part), every call bounded.
transport=(-plaintext)
gc() { timeout 30 "$grpcurl" "${transport[@]}" -connect-timeout 5 -max-time 20 "$@"; }

# === build and start =================================================================================

log "tools"
setup_venv || die "install the interop tools (pip: $(tr '\n' ' ' <"$requirements"))"
# promtool (Debian's prometheus package) lints the /metrics scrape; installed only when missing.
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  log "tools: apt-get install prometheus (for promtool)"
  timeout 300 apt-get update -q >/dev/null 2>&1 || true
  timeout 600 apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || true
fi
echo "python: $("$py" --version 2>&1); $("$grpcurl" -version 2>&1)"

if [ -n "${OMS_GATEWAY_BIN:-}" ]; then
  bin="$OMS_GATEWAY_BIN"
  log "binary: $bin (OMS_GATEWAY_BIN)"
else
  log "build: cargo build --release"
  (cd "$root" && timeout 1500 cargo build --release) || die "cargo build --release"
  bin="${CARGO_TARGET_DIR:-$root/target}/release/oms-gateway"
fi
[ -x "$bin" ] || die "the binary exists" "$bin is not an executable file"

port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
addr="127.0.0.1:$port"

# No OMS_* settings at all: the gateway must serve against its embedded sandbox.
unset_oms=()
while IFS= read -r name; do unset_oms+=(-u "$name"); done < <(compgen -e | grep '^OMS_' || true)
admin_port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
admin="127.0.0.1:$admin_port"
log "start: $bin --listen $addr --admin-listen $admin (no OMS_* env)"
env "${unset_oms[@]}" "$bin" --listen "$addr" --admin-listen "$admin" >"$server_log" 2>&1 </dev/null &
server_pid=$!

if "$py" "$here/client.py" wait --addr "$addr" --timeout "$startup_timeout" --pid "$server_pid"; then
  pass "server reports SERVING within ${startup_timeout}s"
else
  show_server_log
  die "server reports SERVING within ${startup_timeout}s"
fi
if [ -s "$server_log" ]; then
  pass "server prints a startup line"
  echo "     $(head -n 1 "$server_log" | sed -E 's/\x1b\[[0-9;]*m//g' | cut -c1-200)"
else
  fail "server prints a startup line" "nothing on stdout/stderr"
fi

# === grpcurl, reflection only =========================================================================

log "grpcurl $addr (reflection, no proto files)"

if out="$(gc "$addr" list 2>&1)"; then
  for svc in polygon.oms.v1.CashInService polygon.oms.v1.CashLocationService grpc.health.v1.Health; do
    if grep -qx "$svc" <<<"$out"; then pass "grpcurl list shows $svc"; else fail "grpcurl list shows $svc" "got: $(tr '\n' ' ' <<<"$out")"; fi
  done
else
  fail "grpcurl list" "$out"
fi

cash_in_proto="$root/proto/polygon/oms/v1/cash_in.proto"
if out="$(gc "$addr" describe polygon.oms.v1.CashInService 2>&1)"; then
  rpcs="$(sed -nE 's/^[[:space:]]*rpc[[:space:]]+([A-Za-z0-9_]+).*/\1/p' "$cash_in_proto")"
  missing=""
  for rpc in $rpcs; do grep -qE "rpc $rpc[[:space:]]*\(" <<<"$out" || missing="$missing $rpc"; done
  if [ -n "$rpcs" ] && [ -z "$missing" ]; then
    pass "grpcurl describe CashInService shows its RPCs ($(echo $rpcs))"
  else
    fail "grpcurl describe CashInService shows its RPCs" "missing:${missing:- (no rpc found in $cash_in_proto)}"
  fi
  phrase="$(comment_phrase "$cash_in_proto" '^\s*rpc\s+CreateCashIn\s*\(')"
  phrase="${phrase:-Creates a cash-in}"
  if grep -qF -- "$phrase" <<<"$out"; then
    pass "grpcurl describe CashInService shows proto comments (\"$phrase\")"
  else
    fail "grpcurl describe CashInService shows proto comments" "no \"$phrase\" in the output"
  fi
else
  fail "grpcurl describe polygon.oms.v1.CashInService" "$out"
fi

if out="$(gc "$addr" describe polygon.oms.v1.CashIn 2>&1)"; then
  phrase="$(comment_phrase "$cash_in_proto" '^message\s+CashIn\s*\{')"
  if grep -q 'message CashIn {' <<<"$out" && grep -q 'deposit_instructions' <<<"$out" \
    && { [ -z "$phrase" ] || grep -qF -- "$phrase" <<<"$out"; }; then
    pass "grpcurl describe polygon.oms.v1.CashIn shows the message and its comments"
  else
    fail "grpcurl describe polygon.oms.v1.CashIn shows the message and its comments" "$(head -n 5 <<<"$out" | tr '\n' ' ')"
  fi
else
  fail "grpcurl describe polygon.oms.v1.CashIn" "$out"
fi

if out="$(gc "$addr" grpc.health.v1.Health/Check 2>&1)" && [ "$(pyj "$out" 'd.get("status", "")' 2>/dev/null)" = SERVING ]; then
  pass "grpcurl grpc.health.v1.Health/Check is SERVING"
else
  fail "grpcurl grpc.health.v1.Health/Check is SERVING" "$(tr '\n' ' ' <<<"$out")"
fi

# --- the cash-in flow ---------------------------------------------------------------------------
# check NAME JSON EXPR EXPECTED: pass when EXPR evaluated on JSON prints EXPECTED.
check() {
  local got
  got="$(pyj "$2" "$3" 2>&1)" || true
  if [ "$got" = "$4" ]; then pass "$1"; else fail "$1" "expected $4, got ${got:-<empty>}"; fi
}
# call NAME METHOD JSON: grpcurl a polygon.oms.v1 method; on success the response is in $out.
# Successful calls are counted per method in ok_calls (the /metrics check compares them).
declare -A ok_calls=()
call() {
  if out="$(gc -d "$3" "$addr" "polygon.oms.v1.$2" 2>&1)"; then
    ok_calls[$2]=$(( ${ok_calls[$2]:-0} + 1 ))
    pass "$1"
  else
    fail "$1" "$(tr '\n' ' ' <<<"$out")"
    return 1
  fi
}

flow() {
  call "grpcurl ListCashLocations answers" CashLocationService/ListCashLocations \
    '{"provider":"greendot","latitude":38.495133,"longitude":-121.505336}' || return 0
  local loc_id loc_ref
  loc_id="$(pyj "$out" 'd["cashLocations"][0]["id"]' 2>/dev/null)" || true
  loc_ref="$(pyj "$out" 'd["cashLocations"][0]["locReference"]' 2>/dev/null)" || true
  if [ -n "$loc_id" ] && [ -n "$loc_ref" ]; then
    pass "grpcurl ListCashLocations returns a location with id and locReference"
    echo "     location $loc_id"
  else
    fail "grpcurl ListCashLocations returns a location with id and locReference" "$(head -c 300 <<<"$out")"
    return 0
  fi

  local create
  create="$("$py" -c 'import json, sys; print(json.dumps({
    "customerId": "cst_interop1",
    "source": {"asset": "usd", "indicatedAmount": "200.00"},
    "destination": {"asset": "usdc", "network": "polygon", "wallet": {"wallet": "wlt_interop1"}},
    "cash": {"cashLocationId": sys.argv[1], "cashLocationReference": sys.argv[2]},
    "developerFees": [{"percentage": "0.01", "wallet": "wlt_fee1"}, {"flatFee": "1.00", "wallet": "wlt_fee1"}],
    "idempotencyKey": "interop-create-1"}))' "$loc_id" "$loc_ref")"

  call "grpcurl CreateCashIn answers" CashInService/CreateCashIn "$create" || return 0
  local created="$out" id code1
  id="$(pyj "$created" 'd["cashIn"]["id"]' 2>/dev/null)" || true
  code1="$(pyj "$created" 'd["cashIn"]["depositInstructions"]["code"]' 2>/dev/null)" || true
  echo "     created ${id:-<no id>}"
  if [ -n "$id" ]; then pass "grpcurl CreateCashIn returns a cash-in id"; else fail "grpcurl CreateCashIn returns a cash-in id" "$(head -c 300 <<<"$created")"; fi
  check "grpcurl CreateCashIn: cashIn.status is CASH_IN_STATUS_PENDING" "$created" 'd["cashIn"]["status"]' CASH_IN_STATUS_PENDING
  check "grpcurl CreateCashIn: cashIn.source.feesDeducted.total is 8.00" "$created" 'd["cashIn"]["source"]["feesDeducted"]["total"]' 8.00
  check "grpcurl CreateCashIn: cashIn.destination.amountNet is 192.00" "$created" 'd["cashIn"]["destination"]["amountNet"]' 192.00
  if [ -n "$code1" ]; then pass "grpcurl CreateCashIn: a deposit code is present"; else fail "grpcurl CreateCashIn: a deposit code is present" "no cashIn.depositInstructions.code"; fi
  [ -n "$id" ] || return 0

  if call "grpcurl CreateCashIn again with the same idempotencyKey answers" CashInService/CreateCashIn "$create"; then
    check "grpcurl CreateCashIn is idempotent (same cashIn.id)" "$out" 'd["cashIn"]["id"]' "$id"
  fi
  if call "grpcurl GetCashIn answers" CashInService/GetCashIn "{\"cashInId\":\"$id\"}"; then
    check "grpcurl GetCashIn returns the same id" "$out" 'd["cashIn"]["id"]' "$id"
  fi
  if call "grpcurl RefreshCashIn answers" CashInService/RefreshCashIn "{\"cashInId\":\"$id\",\"idempotencyKey\":\"interop-refresh-1\"}"; then
    local code2
    code2="$(pyj "$out" 'd["cashIn"]["depositInstructions"]["code"]' 2>/dev/null)" || true
    if [ -n "$code2" ] && [ "$code2" != "$code1" ]; then
      pass "grpcurl RefreshCashIn changes the deposit code"
    else
      fail "grpcurl RefreshCashIn changes the deposit code" "before '$code1', after '$code2'"
    fi
  fi
  if call "grpcurl ListCashIns answers" CashInService/ListCashIns '{"customerId":"cst_interop1"}'; then
    check "grpcurl ListCashIns contains the cash-in" "$out" 'str(any(c.get("id") == "'"$id"'" for c in d.get("cashIns", [])))' True
  fi
}
flow

# --- an error as a user sees it -----------------------------------------------------------------
rc=0
out="$(gc -d '{"customerId":"bad","source":{"asset":"usd","indicatedAmount":"5"}}' "$addr" \
  polygon.oms.v1.CashInService/CreateCashIn 2>&1)" || rc=$?
if [ "$rc" -ne 0 ] && grep -q 'InvalidArgument' <<<"$out"; then
  pass "grpcurl invalid CreateCashIn exits non-zero with InvalidArgument"
else
  fail "grpcurl invalid CreateCashIn exits non-zero with InvalidArgument" "exit $rc: $(tr '\n' ' ' <<<"$out" | head -c 300)"
fi
# grpcurl decodes the details through reflection (google/rpc/error_details.proto is served): the
# violations and the reason print as JSON, never `"@error": "google.rpc.… is not recognized"`.
# (grpcurl prints each detail as one JSON object; ` ?` allows either spacing.)
if grep -qE '"@type": ?"type.googleapis.com/google.rpc.BadRequest"' <<<"$out" \
  && grep -qE '"field": ?"customer_id"' <<<"$out" \
  && grep -qE '"reason": ?"INVALID_REQUEST_FIELDS"' <<<"$out" && ! grep -q 'not recognized' <<<"$out"; then
  pass "grpcurl prints the error's BadRequest violations and ErrorInfo reason decoded"
  sed -n '/^ERROR:/,$p' <<<"$out" | cut -c1-300 | sed 's/^/     /'
else
  fail "grpcurl prints the error's BadRequest violations and ErrorInfo reason decoded" "$(head -c 600 <<<"$out")"
fi

# === Python client, typed stubs =====================================================================

log "python client (stubs from proto/ into $gen)"
rm -rf "$gen"
mkdir -p "$gen"
mapfile -t protos < <(cd "$root/proto" && find . -name '*.proto' | sed 's|^\./||' | sort)
if (cd "$root" && timeout 120 "$py" -m grpc_tools.protoc -Iproto --python_out="$gen" --grpc_python_out="$gen" "${protos[@]}"); then
  pass "python stubs generate from proto/ (${#protos[@]} files)"
  client_out="$workdir/client.out"
  rc=0
  timeout 300 "$py" "$here/client.py" flow --addr "$addr" >"$client_out" 2>&1 || rc=$?
  cat "$client_out"
  p="$(grep -c '^PASS ' "$client_out" || true)"
  f="$(grep -c '^FAIL ' "$client_out" || true)"
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    fail "python client runs to the end" "exit $rc"
  fi
else
  fail "python stubs generate from proto/"
fi

# === watch: grpcurl streams a cash-in while the Python client simulates the deposit ====================

log "watch stream (grpcurl) + simulated deposit (python)"
watch_flow() {
  call "grpcurl ListCashLocations answers (watch)" CashLocationService/ListCashLocations \
    '{"provider":"greendot","latitude":38.495133,"longitude":-121.505336}' || return 0
  local loc_id loc_ref create id
  loc_id="$(pyj "$out" 'd["cashLocations"][0]["id"]' 2>/dev/null)" || true
  loc_ref="$(pyj "$out" 'd["cashLocations"][0]["locReference"]' 2>/dev/null)" || true
  create="$("$py" -c 'import json, sys; print(json.dumps({
    "customerId": "cst_interop2",
    "source": {"asset": "usd", "indicatedAmount": "150.00"},
    "destination": {"asset": "usdc", "network": "polygon", "wallet": {"wallet": "wlt_interop2"}},
    "cash": {"cashLocationId": sys.argv[1], "cashLocationReference": sys.argv[2]},
    "idempotencyKey": "interop-watch-1"}))' "$loc_id" "$loc_ref")"
  call "grpcurl CreateCashIn answers (watch)" CashInService/CreateCashIn "$create" || return 0
  id="$(pyj "$out" 'd["cashIn"]["id"]' 2>/dev/null)" || true
  [ -n "$id" ] || { fail "watch: a cash-in to watch" "no id"; return 0; }

  local watch_out="$workdir/watch.out" wpid rc=0 i
  # -max-time bounds the stream; it ends by itself (OK) after the completed event.
  timeout 60 "$grpcurl" -plaintext -connect-timeout 5 -max-time 50 -d "{\"cashInId\":\"$id\"}" \
    "$addr" polygon.oms.v1.CashInService/WatchCashIn >"$watch_out" 2>&1 &
  wpid=$!
  for i in $(seq 1 100); do
    grep -q 'CASH_IN_EVENT_TYPE_INITIAL' "$watch_out" && break
    sleep 0.1
  done
  if grep -q 'CASH_IN_EVENT_TYPE_INITIAL' "$watch_out"; then
    pass "grpcurl WatchCashIn sends the current state at once"
  else
    fail "grpcurl WatchCashIn sends the current state at once" "$(head -c 300 "$watch_out")"
  fi
  local deposit_out="$workdir/deposit.out"
  timeout 60 "$py" "$here/client.py" deposit --addr "$addr" --cash-in-id "$id" --amount 150.00 >"$deposit_out" 2>&1 || true
  cat "$deposit_out"
  passed=$((passed + $(grep -c '^PASS ' "$deposit_out" || true)))
  failed=$((failed + $(grep -c '^FAIL ' "$deposit_out" || true)))
  wait "$wpid" || rc=$?
  if [ "$rc" -eq 0 ]; then
    pass "grpcurl WatchCashIn ends with OK after the terminal state"
  else
    fail "grpcurl WatchCashIn ends with OK after the terminal state" "exit $rc: $(tail -c 300 "$watch_out" | tr '\n' ' ')"
  fi
  # The stream's events, parsed (grpcurl prints one JSON object a message), heartbeats left out.
  local events
  events="$("$py" - "$watch_out" <<'PY' 2>&1 || true
import json, sys
text, decoder, at, out = open(sys.argv[1]).read(), json.JSONDecoder(), 0, []
while True:
    while at < len(text) and text[at] != "{":
        at += 1
    if at >= len(text):
        break
    event, at = decoder.raw_decode(text, at)
    kind = event.get("type", "").removeprefix("CASH_IN_EVENT_TYPE_")
    if kind == "HEARTBEAT":
        continue
    cash_in = event.get("cashIn", {})
    amounts = json.dumps(cash_in)
    out.append("%s:%s:%s:%s" % (kind, cash_in.get("status", "").removeprefix("CASH_IN_STATUS_"),
        "txn" if cash_in.get("transactionId", "").startswith("txn_") else "-",
        "146.00" if '"146.00"' in amounts else "-"))
print(" ".join(out))
PY
)"
  case "$events" in
    INITIAL:PENDING:-:*CHANGED:COMPLETED:*)
      pass "grpcurl WatchCashIn streamed INITIAL PENDING, then the change to COMPLETED ($events)" ;;
    *) fail "grpcurl WatchCashIn streamed INITIAL PENDING, then the change to COMPLETED" "$events" ;;
  esac
  if [ "${events##* }" = "CHANGED:COMPLETED:txn:146.00" ]; then
    pass "grpcurl WatchCashIn's final event carries the final amounts and transaction id"
  else
    fail "grpcurl WatchCashIn's final event carries the final amounts and transaction id" "last event: ${events##* }"
  fi
}
if [ -d "$gen/polygon" ]; then watch_flow; else fail "watch flow" "no python stubs"; fi

# === metrics and probes: the admin listener ============================================================

log "admin listener http://$admin (/metrics, /healthz, /readyz)"
# http_get URL OUT [ACCEPT]: GET with Python (no curl needed); the body into OUT; prints the status and
# the content type.
http_get() {
  "$py" - "$1" "$2" "${3:-}" <<'PY'
import sys, urllib.request, urllib.error
url, out, accept = sys.argv[1:4]
req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        status, ctype, body = r.status, r.headers.get("content-type", ""), r.read()
except urllib.error.HTTPError as e:
    status, ctype, body = e.code, e.headers.get("content-type", ""), e.read()
except Exception as e:
    status, ctype, body = 0, "", str(e).encode()
open(out, "wb").write(body)
print(status, ctype)
PY
}
# metric FILE NAME LABEL=VALUE...: the sum of the samples NAME whose labels include all those given
# (0 when none).
metric() {
  "$py" - "$@" <<'PY'
import re, sys
path, name, want = sys.argv[1], sys.argv[2], dict(a.split("=", 1) for a in sys.argv[3:])
total = 0.0
for line in open(path, encoding="utf-8"):
    m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line.strip())
    if not m or m.group(1) != name:
        continue
    labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
    if all(labels.get(k) == v for k, v in want.items()):
        total += float(m.group(3))
print(int(total) if total == int(total) else total)
PY
}
scrape="$workdir/metrics.txt"
read -r code ctype <<<"$(http_get "http://$admin/healthz" "$workdir/healthz")"
if [ "$code" = 200 ]; then pass "GET /healthz is 200"; else fail "GET /healthz is 200" "got $code"; fi
read -r code ctype <<<"$(http_get "http://$admin/readyz" "$workdir/readyz")"
if [ "$code" = 200 ]; then pass "GET /readyz is 200 while SERVING"; else fail "GET /readyz is 200 while SERVING" "got $code"; fi
read -r code ctype <<<"$(http_get "http://$admin/metrics" "$scrape")"
if [ "$code" = 200 ] && [[ "$ctype" == text/plain*version=0.0.4* ]]; then
  pass "GET /metrics is 200 in the Prometheus text format ($(wc -l <"$scrape") lines)"
else
  fail "GET /metrics is 200 in the Prometheus text format" "got $code $ctype"
fi
# Every RPC this script made (grpcurl, counted above) moved its counter; the Python client's calls
# only add to them.
for m in "${!ok_calls[@]}"; do
  svc="polygon.oms.v1.${m%%/*}" rpc="${m##*/}"
  got="$(metric "$scrape" grpc_server_handled_total grpc_service="$svc" grpc_method="$rpc" grpc_code=OK)"
  if [ "${got%.*}" -ge "${ok_calls[$m]}" ]; then
    pass "grpc_server_handled_total{grpc_method=\"$rpc\",grpc_code=\"OK\"} = $got >= ${ok_calls[$m]} calls made"
  else
    fail "grpc_server_handled_total{grpc_method=\"$rpc\",grpc_code=\"OK\"} >= ${ok_calls[$m]}" "got $got"
  fi
done
[ "${#ok_calls[@]}" -ge 5 ] || fail "the script counted its grpcurl calls" "only ${#ok_calls[*]} methods"
# threshold NAME EXPECTED-MIN LABEL=VALUE...: a check that the sample sum is at least EXPECTED-MIN.
threshold() {
  local name="$1" min="$2" got
  shift 2
  got="$(metric "$scrape" "$name" "$@")"
  if [ "${got%.*}" -ge "$min" ]; then pass "$name{$*} = $got >= $min"; else fail "$name{$*} >= $min" "got $got"; fi
}
threshold grpc_server_handled_total 1 grpc_method=CreateCashIn grpc_code=InvalidArgument
threshold grpc_server_handled_total 1 grpc_method=WatchCashIn grpc_type=server_stream grpc_code=OK
threshold grpc_server_msg_sent_total 2 grpc_method=WatchCashIn
threshold grpc_server_handled_total 1 grpc_service=grpc.health.v1.Health grpc_method=Check grpc_code=OK
threshold oms_upstream_requests_total 2 "operation=POST /cash-ins" status=2xx
threshold oms_upstream_token_exchanges_total 1 outcome=ok
threshold oms_gateway_idempotency_total 1 outcome=replayed
threshold oms_gateway_watch_polls_total 1
if command -v promtool >/dev/null 2>&1; then
  if out="$(timeout 30 promtool check metrics <"$scrape" 2>&1)"; then
    pass "promtool check metrics accepts the scrape ($(promtool --version 2>&1 | head -n 1 | cut -d' ' -f1-3))"
  else
    fail "promtool check metrics accepts the scrape" "$(head -n 10 <<<"$out" | tr '\n' ' ')"
  fi
else
  fail "promtool check metrics" "promtool is not installed (apt-get install prometheus failed)"
fi
read -r code ctype <<<"$(http_get "http://$admin/metrics" "$workdir/metrics.om" "application/openmetrics-text; version=1.0.0")"
if [[ "$ctype" == application/openmetrics-text* ]] && [ "$(tail -n 1 "$workdir/metrics.om")" = "# EOF" ]; then
  pass "GET /metrics with Accept: application/openmetrics-text answers OpenMetrics"
else
  fail "GET /metrics with Accept: application/openmetrics-text answers OpenMetrics" "got $code $ctype"
fi
if grep ' access: call' "$server_log" | has 'CreateCashIn'; then
  pass "the server logged access lines (one per call)"
  echo "     $(grep ' access: call' "$server_log" | grep CreateCashIn | head -n 1 | sed -E 's/\x1b\[[0-9;]*m//g' | cut -c1-300)"
else
  fail "the server logged access lines (one per call)"
fi
# Draining: SIGTERM turns health NOT_SERVING at once (the drain delay keeps the listeners up), so
# /readyz says 503 while /healthz still says 200.
kill -TERM "$server_pid" 2>/dev/null || true
ready=""
for i in $(seq 1 30); do
  read -r ready ctype <<<"$(http_get "http://$admin/readyz" "$workdir/readyz")"
  [ "$ready" = 503 ] && break
  sleep 0.1
done
read -r code ctype <<<"$(http_get "http://$admin/healthz" "$workdir/healthz")"
if [ "$ready" = 503 ] && [ "$code" = 200 ]; then
  pass "after SIGTERM /readyz is 503 while /healthz is still 200"
else
  fail "after SIGTERM /readyz is 503 while /healthz is still 200" "readyz $ready, healthz $code"
fi

# === shutdown =========================================================================================

log "shutdown"
if alive "$server_pid"; then
  pass "server is still running after the checks"
  pid="$server_pid"
  rc=0
  stop_server 15 || rc=$?
  if alive "$pid"; then
    fail "server exits on SIGTERM within 15s" "still running"
  elif [ "$rc" -eq 0 ] || [ "$rc" -eq 143 ]; then
    pass "server exits on SIGTERM within 15s (exit $rc)"
  else
    fail "server exits cleanly on SIGTERM" "exit $rc"
    show_server_log
  fi
else
  fail "server is still running after the checks" "it exited"
  show_server_log
fi

# === RetryInfo: an error a caller should retry, decoded ================================================
# A gateway that allows one watch stream: the second is RESOURCE_EXHAUSTED (GATEWAY_LIMIT_REACHED)
# with a RetryInfo, which grpcurl prints decoded (its retryDelay as a proto3 JSON duration).

log "RetryInfo: a gateway with --watch-max-streams 1"
port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
addr="127.0.0.1:$port"
limits_admin_port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
server_log="$workdir/server-limits.log"
env "${unset_oms[@]}" "$bin" --listen "$addr" --watch-max-streams 1 \
  --admin-listen "127.0.0.1:$limits_admin_port" >"$server_log" 2>&1 </dev/null &
server_pid=$!
if "$py" "$here/client.py" wait --addr "$addr" --timeout "$startup_timeout" --pid "$server_pid"; then
  timeout 30 "$grpcurl" -plaintext -connect-timeout 5 -max-time 20 -d '{"customerId":"cst_retry1"}' \
    "$addr" polygon.oms.v1.CashInService/WatchCashIns >"$workdir/first-watch.out" 2>&1 &
  first_watch=$!
  # The second stream is asked for once the first one holds the only slot (the gauge says 1).
  for i in $(seq 1 100); do
    http_get "http://127.0.0.1:$limits_admin_port/metrics" "$workdir/limits.metrics" >/dev/null
    [ "$(metric "$workdir/limits.metrics" oms_gateway_watch_streams)" = 1 ] && break
    sleep 0.1
  done
  out="$(gc -max-time 5 -d '{"customerId":"cst_retry2"}' "$addr" polygon.oms.v1.CashInService/WatchCashIns 2>&1)" || true
  kill "$first_watch" 2>/dev/null || true
  wait "$first_watch" 2>/dev/null || true
  if grep -qE '"@type": ?"type.googleapis.com/google.rpc.RetryInfo"' <<<"$out" \
    && grep -qE '"retryDelay": ?"[0-9.]+s"' <<<"$out" \
    && grep -qE '"reason": ?"GATEWAY_LIMIT_REACHED"' <<<"$out" && ! grep -q 'not recognized' <<<"$out"; then
    pass "grpcurl prints a RESOURCE_EXHAUSTED's RetryInfo and ErrorInfo decoded"
    sed -n '/^ERROR:/,$p' <<<"$out" | cut -c1-300 | sed 's/^/     /'
  else
    fail "grpcurl prints a RESOURCE_EXHAUSTED's RetryInfo and ErrorInfo decoded" "$(head -c 600 <<<"$out")"
  fi
else
  show_server_log
  fail "the --watch-max-streams 1 gateway reports SERVING"
fi
stop_server 15 || true

# === mTLS: the same flow over TLS with client certificates and a policy ==============================
# Certificates from a throwaway CA made here with openssl (a leaf needs basicConstraints=CA:FALSE,
# which `openssl x509 -req` does not add by itself, and its SANs come from an extfile).

log "mTLS: certificates (openssl), a policy, a second server"
if ! command -v openssl >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  timeout 600 apt-get install -y -q openssl >/dev/null 2>&1 \
    || { timeout 300 apt-get update -q >/dev/null 2>&1 && timeout 600 apt-get install -y -q openssl >/dev/null; }
fi
pki="$workdir/pki"
mkdir -p "$pki"
# leaf NAME SUBJECT EXTENSIONS: a P-256 key and a certificate signed by the CA.
leaf() {
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n%s\n' "$3" >"$pki/$1.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -noenc -subj "$2" \
    -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null \
    && openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 2 -extfile "$pki/$1.ext" -out "$pki/$1.pem" 2>/dev/null
}
checkout_id="spiffe://interop.test/ns/checkout/sa/checkout"
if openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -noenc -days 2 \
    -subj "/CN=oms-gateway interop CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null \
  && leaf server "/CN=localhost" $'extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1' \
  && leaf checkout "/CN=checkout" $'extendedKeyUsage=clientAuth\nsubjectAltName=URI:'"$checkout_id" \
  && leaf other "/CN=other" $'extendedKeyUsage=clientAuth\nsubjectAltName=URI:spiffe://interop.test/ns/other/sa/other'; then
  pass "openssl makes a CA, a server certificate and two client certificates"
else
  die "openssl makes a CA, a server certificate and two client certificates"
fi
cat >"$pki/policy.toml" <<TOML
[[allow]]
callers = ["$checkout_id"]
methods = ["polygon.oms.v1.*", "grpc.reflection.*"]
TOML

port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
addr="127.0.0.1:$port"
server_log="$workdir/server-mtls.log"
log "start: $bin --listen $addr --tls-cert --tls-key --tls-client-ca --authz-policy"
env "${unset_oms[@]}" "$bin" --listen "$addr" --tls-cert "$pki/server.pem" --tls-key "$pki/server.key" \
  --tls-client-ca "$pki/ca.pem" --authz-policy "$pki/policy.toml" --admin-listen none >"$server_log" 2>&1 </dev/null &
server_pid=$!
as_checkout=(--ca "$pki/ca.pem" --cert "$pki/checkout.pem" --key "$pki/checkout.key")
if "$py" "$here/client.py" wait --addr "$addr" --timeout "$startup_timeout" --pid "$server_pid" "${as_checkout[@]}"; then
  pass "mTLS server reports SERVING to a Python client with a certificate"
else
  show_server_log
  die "mTLS server reports SERVING to a Python client with a certificate"
fi

transport=(-cacert "$pki/ca.pem" -cert "$pki/checkout.pem" -key "$pki/checkout.key")
if out="$(gc "$addr" list 2>&1)" && grep -qx polygon.oms.v1.CashInService <<<"$out"; then
  pass "grpcurl -cacert -cert -key list (reflection allowed by the policy)"
else
  fail "grpcurl -cacert -cert -key list (reflection allowed by the policy)" "$(tr '\n' ' ' <<<"$out")"
fi
log "grpcurl flow over mTLS"
flow

rc=0
out="$(timeout 30 "$grpcurl" -cacert "$pki/ca.pem" -connect-timeout 5 -max-time 20 "$addr" grpc.health.v1.Health/Check 2>&1)" || rc=$?
# Refused by the TLS handshake: grpcurl cannot dial (grpc-go reports the server's
# certificate_required alert as a dial that never completes), while the same call with the
# certificate just succeeded above.
if [ "$rc" -ne 0 ] && grep -qE 'Failed to dial target host|certificate required|bad certificate' <<<"$out"; then
  pass "grpcurl without a client certificate is refused"
else
  fail "grpcurl without a client certificate is refused" "exit $rc: $(tr '\n' ' ' <<<"$out" | head -c 300)"
fi
rc=0
out="$(timeout 30 "$grpcurl" -plaintext -connect-timeout 5 -max-time 20 "$addr" grpc.health.v1.Health/Check 2>&1)" || rc=$?
# Never connected: grpcurl cannot even dial a gRPC server there.
if [ "$rc" -ne 0 ] && grep -q 'Failed to dial target host' <<<"$out"; then
  pass "grpcurl -plaintext to the TLS port fails"
else
  fail "grpcurl -plaintext to the TLS port fails" "exit $rc: $(tr '\n' ' ' <<<"$out" | head -c 300)"
fi
transport=(-cacert "$pki/ca.pem" -cert "$pki/other.pem" -key "$pki/other.key")
rc=0
out="$(gc -d '{"cashInId":"ci_nope"}' "$addr" polygon.oms.v1.CashInService/GetCashIn 2>&1)" || rc=$?
if [ "$rc" -ne 0 ] && grep -q PermissionDenied <<<"$out"; then
  pass "grpcurl as a caller the policy does not allow gets PermissionDenied"
else
  fail "grpcurl as a caller the policy does not allow gets PermissionDenied" "exit $rc: $(tr '\n' ' ' <<<"$out" | head -c 300)"
fi
# grpcurl would need reflection (which the policy denies this caller) to find the health service;
# the Python client has the health stubs compiled in.
if out="$("$py" "$here/client.py" wait --addr "$addr" --timeout 10 --ca "$pki/ca.pem" --cert "$pki/other.pem" --key "$pki/other.key" 2>&1)"; then
  pass "health stays open to that caller (python health Check)"
else
  fail "health stays open to that caller (python health Check)" "$(tr '\n' ' ' <<<"$out")"
fi
transport=(-plaintext)

log "python client over mTLS (grpc.ssl_channel_credentials)"
client_out="$workdir/client-mtls.out"
rc=0
timeout 300 "$py" "$here/client.py" flow --addr "$addr" "${as_checkout[@]}" >"$client_out" 2>&1 || rc=$?
cat "$client_out"
passed=$((passed + $(grep -c '^PASS ' "$client_out" || true)))
f="$(grep -c '^FAIL ' "$client_out" || true)"
failed=$((failed + f))
if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then fail "python client over mTLS runs to the end" "exit $rc"; fi

# One audit line naming both: this caller's CreateCashIn, answered OK.
if sed -E 's/\x1b\[[0-9;]*m//g' "$server_log" | grep ' audit: mutation ' \
  | grep -F "caller=\"$checkout_id\"" | grep 'method="\?polygon.oms.v1.CashInService/CreateCashIn' \
  | has 'outcome="\?OK'; then
  pass "the server logged audit lines naming the caller and CreateCashIn"
  echo "     $(grep -E 'audit' "$server_log" | grep CreateCashIn | head -n 1 | sed -E 's/\x1b\[[0-9;]*m//g' | cut -c1-400)"
else
  fail "the server logged audit lines naming the caller and CreateCashIn"
fi
if grep ' access: call' "$server_log" | grep 'CreateCashIn' | has "caller=\"$checkout_id\""; then
  pass "the server's access lines name the mTLS caller"
else
  fail "the server's access lines name the mTLS caller"
fi
if grep -E 'audit' "$server_log" | has 'PERMISSION_DENIED'; then
  pass "the server logged an audit line for the refused call"
else
  fail "the server logged an audit line for the refused call"
fi
rc=0
stop_server 15 || rc=$?
if [ "$rc" -eq 0 ] || [ "$rc" -eq 143 ]; then pass "mTLS server exits on SIGTERM (exit $rc)"; else fail "mTLS server exits cleanly on SIGTERM" "exit $rc"; fi

[ "$failed" -eq 0 ] || show_server_log
summary
[ "$failed" -eq 0 ]
