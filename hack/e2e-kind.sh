#!/usr/bin/env bash
# The end-to-end tier on a kind cluster, for a laptop or a CI service with Docker, kind and
# network access (kind pulls its kindest/node image). Same tests as the local node; only the
# cluster and the way images get in differ (`kind load docker-image`).
#
#   hack/e2e-kind.sh [pytest args]     (make e2e-kind)
# Env: KIND_CLUSTER (default twlegal-e2e), KEEP_CLUSTER=1 to keep it afterwards.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
name=${KIND_CLUSTER:-twlegal-e2e}
kubeconfig=$(mktemp)
command -v kind >/dev/null || { echo "kind is not installed: go install sigs.k8s.io/kind@latest" >&2; exit 2; }
if ! kind get clusters | grep -qx "$name"; then
  kind create cluster --name "$name" --kubeconfig "$kubeconfig" --wait 120s
  created=1
else
  kind get kubeconfig --name "$name" > "$kubeconfig"
fi
cleanup() { [ "${KEEP_CLUSTER:-}" = 1 ] || [ -z "${created:-}" ] || kind delete cluster --name "$name"; rm -f "$kubeconfig"; }
trap cleanup EXIT
cd "$root"
TWLEGAL_E2E_CLUSTER=kind TWLEGAL_E2E_KUBECONFIG="$kubeconfig" TWLEGAL_E2E_KIND_NAME="$name" \
  DOCKER=${DOCKER:-docker} "$python" -m pytest tests/e2e "$@"
