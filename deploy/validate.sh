#!/usr/bin/env bash
# Offline checks of the deployment files, run by .ci/run:
#   1. every manifest in deploy/kubernetes validates, in strict mode (unknown fields are errors),
#      against the schemas of one fixed Kubernetes version (kubernetes-validate ships them);
#   2. the Dockerfile passes hadolint.
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

echo "--- hadolint Dockerfile"
if ! timeout 60 "$venv/bin/hadolint" --no-color "$root/Dockerfile"; then
  failed=1
fi

if [ "$failed" -ne 0 ]; then
  echo "deploy/validate.sh: FAILED"
  exit 1
fi
echo "deploy/validate.sh: all checks passed"
