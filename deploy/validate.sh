#!/usr/bin/env bash
# Offline checks of the deployment files, run by .ci/run:
#   1. every manifest in deploy/kubernetes validates, in strict mode (unknown fields are errors),
#      against the schemas of one fixed Kubernetes version (kubernetes-validate ships them);
#   2. the alerting rules pass `promtool check rules` and their unit tests (`promtool test rules`),
#      and the Grafana dashboard's queries parse as PromQL (promtool, Debian's prometheus package);
#   3. the Dockerfile passes hadolint.
# The manifests' configuration (its keys and values, and the container args) is checked against
# the built binary by `cargo test` (tests/it/deploy_manifests.rs).
#
#   bash deploy/validate.sh                    # KUBERNETES_VERSION=1.34.0 by default
#
# Tools go into deploy/.venv (gitignored), installed once from deploy/requirements.txt and
# reused; every install and check is bounded by `timeout`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$here/.venv"
requirements="$here/requirements.txt"
kubernetes_version="${KUBERNETES_VERSION:-1.34.0}"

# Installed when missing, or when requirements.txt changed since the last install.
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$stamp"; then
  echo "--- installing $(grep -v '^#' "$requirements" | tr '\n' ' ')into $venv"
  [ -x "$venv/bin/python" ] || timeout 120 python3 -m venv "$venv"
  timeout 300 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi

failed=0
manifests=("$here"/kubernetes/*.yaml)
echo "--- kubernetes-validate --strict, Kubernetes $kubernetes_version: ${#manifests[@]} files"
if ! timeout 120 "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$kubernetes_version" \
  "${manifests[@]}"; then
  failed=1
fi

# promtool: Debian's prometheus package, installed only when missing.
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "--- apt-get install prometheus (for promtool)"
  timeout 300 apt-get update -q >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends prometheus >/dev/null
fi
monitoring="$here/monitoring"
echo "--- promtool check rules, promtool test rules: monitoring/alerts.yaml"
if ! { timeout 60 promtool check rules "$monitoring/alerts.yaml" \
  && (cd "$monitoring" && timeout 120 promtool test rules alerts.test.yaml); }; then
  failed=1
fi
# The dashboard's queries parse as PromQL: each becomes a recording rule of a throwaway rule file
# (Grafana's variables replaced by values) for `promtool check rules`. That they name only
# exported metrics is tests/it/dashboards.rs's, against a live scrape.
echo "--- promtool check rules: monitoring/dashboard.json's queries"
queries="$(mktemp "${TMPDIR:-/tmp}/oms-dashboard-rules.XXXXXX.yaml")"
python3 - "$monitoring/dashboard.json" >"$queries" <<'PY'
import json, sys
dashboard = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
print("groups:\n  - name: dashboard\n    rules:")
for n, expr in enumerate(exprs):
    expr = expr.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$instance", ".*")
    print(f"      - record: dashboard:query{n}\n        expr: {json.dumps(expr)}")
PY
if ! timeout 60 promtool check rules "$queries"; then
  failed=1
fi
rm -f "$queries"

echo "--- hadolint Dockerfile"
if ! timeout 60 "$venv/bin/hadolint" --no-color "$root/Dockerfile"; then
  failed=1
fi

if [ "$failed" -ne 0 ]; then
  echo "deploy/validate.sh: FAILED"
  exit 1
fi
echo "deploy/validate.sh: all checks passed"
