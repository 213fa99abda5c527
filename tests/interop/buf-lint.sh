#!/usr/bin/env bash
# Lints proto/ with buf (config: buf.yaml at the repo root). Installs the buf CLI from npm into
# tests/interop/node_modules (gitignored) on first use; later runs reuse it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
buf="$here/node_modules/.bin/buf"

if ! [ -x "$buf" ] || ! "$buf" --version >/dev/null 2>&1; then
  echo "buf-lint: installing @bufbuild/buf into tests/interop/node_modules" >&2
  timeout 300 npm install --prefix "$here" --no-audit --no-fund --loglevel=error >&2
fi

echo "buf-lint: buf $("$buf" --version)"
cd "$root"
if "$buf" lint; then
  echo "buf-lint: OK (buf lint found no problems in proto/)"
else
  status=$?
  echo "buf-lint: FAILED (buf lint exit $status)" >&2
  exit "$status"
fi
