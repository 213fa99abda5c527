#!/usr/bin/env bash
# Offline checks of the deployment files, run by .ci/run:
#   1. every Kustomize overlay of deploy/kubernetes/overlays renders (pykustomize: the
#      kustomize/api library, built into the package) and agrees with the configuration it mounts
#      and the way it runs (overlays.py: one scrape path, fully qualified images, the gRPC port's
#      appProtocol, the mesh's NetworkPolicy, mounted files, ports, probes, grace period);
#   2. every rendered object validates in strict mode (unknown fields are errors) against the
#      schemas of one fixed Kubernetes version (kubernetes-validate ships them);
#   3. the custom resources (the ServiceMonitor) validate against the prometheus-operator API
#      (crd/check.mjs: its generated validators, and its types, strictly);
#   4. the alerting rules pass `promtool check rules` and their unit tests (`promtool test rules`),
#      and the Grafana dashboard's queries parse as PromQL (promtool, Debian's prometheus package);
#   5. the Dockerfile passes hadolint.
# The overlays' configuration files are checked against the built binary (`--check-config`) by
# `cargo test` (tests/it/deploy_manifests.rs).
#
#   bash deploy/validate.sh                    # KUBERNETES_VERSION=1.34.0 by default
#
# Tools go into deploy/.venv and deploy/crd/node_modules (gitignored), installed once from
# deploy/requirements.txt and deploy/crd/package-lock.json and reused; every install and check is
# bounded by `timeout`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$here/.venv"
requirements="$here/requirements.txt"
kubernetes_version="${KUBERNETES_VERSION:-1.34.0}"
# pykustomize declares Python >= 3.14, but is a cffi binding of a Go library that runs on the
# 3.11 of Debian 12 and this machine; installed apart, with pip's --ignore-requires-python.
pykustomize="pykustomize==0.1.4"

# Installed when missing, or when requirements.txt changed since the last install.
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || ! { cat "$requirements"; echo "$pykustomize"; } | cmp -s - "$stamp"; then
  echo "--- installing $(grep -v '^#' "$requirements" | tr '\n' ' ')$pykustomize into $venv"
  [ -x "$venv/bin/python" ] || timeout 120 python3 -m venv "$venv"
  timeout 300 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  timeout 300 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --ignore-requires-python "$pykustomize"
  { cat "$requirements"; echo "$pykustomize"; } >"$stamp"
fi
crd="$here/crd"
if ! cmp -s "$crd/package-lock.json" "$crd/node_modules/.installed-lock.json" 2>/dev/null; then
  echo "--- npm ci in $crd (the prometheus-operator API's validators and types, TypeScript)"
  (cd "$crd" && timeout 600 npm ci --silent --no-audit --no-fund)
  cp "$crd/package-lock.json" "$crd/node_modules/.installed-lock.json"
fi

failed=0
rendered="$(mktemp -d "${TMPDIR:-/tmp}/oms-rendered.XXXXXX")"
trap 'rm -rf "$rendered"' EXIT

echo "--- kustomize build of every overlay, and what the rendered objects must agree on"
if ! timeout 120 "$venv/bin/python" "$here/overlays.py" "$rendered"; then
  failed=1
fi

manifests=("$rendered"/*.yaml)
echo "--- kubernetes-validate --strict, Kubernetes $kubernetes_version: ${#manifests[@]} rendered overlays"
# It knows no custom resource (a warning, not a failure): step 3 checks those.
if ! timeout 120 "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$kubernetes_version" \
  "${manifests[@]}"; then
  failed=1
fi

echo "--- custom resources against the prometheus-operator API"
for json in "$rendered"/*.json; do
  if ! timeout 120 node "$crd/check.mjs" "$json"; then
    failed=1
  fi
done

# promtool: Debian's prometheus package, installed only when missing.
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "--- apt-get install prometheus (for promtool)"
  timeout 300 apt-get update -q >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends prometheus >/dev/null
fi
monitoring="$here/monitoring"
echo "--- promtool check rules, promtool test rules: monitoring/alerts.yaml, delivery-alerts.yaml"
if ! { timeout 60 promtool check rules "$monitoring/alerts.yaml" "$monitoring/delivery-alerts.yaml" \
  && (cd "$monitoring" && timeout 120 promtool test rules alerts.test.yaml); }; then
  failed=1
fi
# The dashboard's queries parse as PromQL: each becomes a recording rule of a throwaway rule file
# (Grafana's variables replaced by values) for `promtool check rules`. That they name only
# exported metrics is tests/it/dashboards.rs's, against a live scrape.
echo "--- promtool check rules: monitoring/dashboard.json's queries"
queries="$rendered/dashboard-rules.yaml"
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

echo "--- hadolint Dockerfile"
if ! timeout 60 "$venv/bin/hadolint" --no-color "$root/Dockerfile"; then
  failed=1
fi

if [ "$failed" -ne 0 ]; then
  echo "deploy/validate.sh: FAILED"
  exit 1
fi
echo "deploy/validate.sh: all checks passed"
