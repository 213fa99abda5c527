# tests/interop/checks.sh: the check counting that tests/interop/run.sh, envoy-sidecar.sh and
# examples/run.sh share (sourced, not run): PASS/FAIL lines, the summary, a fatal step, log lines,
# and the clean-up of a started gateway (walkthrough.sh and examples/run.sh).
passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1${2:+: $2}"; }
summary() { echo "$passed passed, $failed failed"; }
# A step the remaining checks cannot do without: count it, print the summary, stop.
die() { fail "$1" "${2:-}"; summary; exit 1; }
log() { echo "--- $*"; }
# Whether stdin has a line containing $1. It reads all of stdin: `producer | grep -q` under
# `set -o pipefail` fails at random, when grep -q exits at its first match and the producer,
# still writing, dies of SIGPIPE.
has() { grep -c -- "$1" >/dev/null; }
# The EXIT trap of a script that starts a gateway as $server_pid in $workdir: stops the gateway
# (SIGTERM, then SIGKILL after 10 s), removes $workdir, and exits with the script's status.
stop_gateway_and_clean() {
  local rc=$?
  if [ -n "${server_pid:-}" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "${workdir:?}"
  exit "$rc"
}
