#!/usr/bin/env bash
# Breaking changes to the public contract (proto/) fail CI: `buf breaking` (rules FILE, buf.yaml)
# against main's previous commit (the first parent of HEAD; another git ref with
# BUF_BREAKING_AGAINST=<ref>). In a clone without that commit (a shallow one that cannot deepen),
# the comparison is against tests/fixtures/proto-contract.binpb, the contract as last recorded
# here, and the script says so; it never skips. An intended break needs a new package version
# (polygon.oms.v2 beside v1), never an edit of v1 (docs/development.md).
#   bash tests/interop/buf-breaking.sh            check
#   bash tests/interop/buf-breaking.sh --record   rewrite the recorded contract from proto/
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
buf="$here/node_modules/.bin/buf"
recorded="tests/fixtures/proto-contract.binpb"

if ! [ -x "$buf" ] || ! "$buf" --version >/dev/null 2>&1; then
  echo "buf-breaking: installing @bufbuild/buf into tests/interop/node_modules" >&2
  timeout 300 npm install --prefix "$here" --no-audit --no-fund --loglevel=error >&2
fi
cd "$root"

if [ "${1:-}" = "--record" ]; then
  "$buf" build -o "$recorded"
  echo "buf-breaking: recorded proto/ into $recorded"
  exit 0
fi

against="${BUF_BREAKING_AGAINST:-HEAD~1}"
if ! git rev-parse --verify --quiet "$against^{commit}" >/dev/null; then
  if [ "$(git rev-parse --is-shallow-repository 2>/dev/null)" = true ]; then
    timeout 120 git fetch --quiet --deepen=1 2>/dev/null || true
  fi
fi
if git rev-parse --verify --quiet "$against^{commit}" >/dev/null; then
  baseline=".git#ref=$(git rev-parse "$against")"
  echo "buf-breaking: buf $("$buf" --version), proto/ against $against ($(git rev-parse --short "$against"))"
else
  baseline="$recorded"
  echo "buf-breaking: buf $("$buf" --version); $against is not in this clone: proto/ against $recorded"
fi
for base in "$baseline" "$recorded"; do
  if ! "$buf" breaking --against "$base"; then
    echo "buf-breaking: FAILED: proto/ breaks the contract of $base (an intended break needs a new package version)" >&2
    exit 1
  fi
  [ "$base" = "$recorded" ] && break
done
echo "buf-breaking: OK (no breaking change)"
