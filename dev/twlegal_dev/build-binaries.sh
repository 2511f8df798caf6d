#!/usr/bin/env bash
# Builds the upstream binaries the local control plane needs, from the Go module proxy only,
# into a cache outside the repository keyed by version, so later runs start in seconds.
#
#   build-binaries.sh [all|node|kubernetes|etcd|helm|containerd|cni|pause]
#
# Prints nothing but progress on stderr; the binaries land in $TWLEGAL_CACHE/bin/<name>-<version>/.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:-v1.10.0}
PAUSE_VERSION=${PAUSE_VERSION:-0.1.0}
CACHE=${TWLEGAL_CACHE:-$HOME/.cache/twlegal}
export GOMODCACHE=${GOMODCACHE:-$CACHE/go/mod}
export GOCACHE=${GOCACHE:-$CACHE/go/build}
export GOFLAGS=-mod=mod
export CGO_ENABLED=0
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)

log() { echo "[build-binaries] $*" >&2; }

# Staging modules that k8s.io/kubernetes replaces with ./staging/...; a wrapper module must pin
# each to the matching v0.X.Y tag or `go` resolves them to the unusable v0.0.0.
STAGING="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
cri-client cri-streaming csi-translation-lib dynamic-resource-allocation endpointslice externaljwt
kms kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
mount-utils pod-security-admission sample-apiserver streaming"

build_kubernetes() {
  local out=$CACHE/bin/kubernetes-$K8S_VERSION
  local bins="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
  local missing=0
  for b in $bins; do [ -x "$out/$b" ] || missing=1; done
  [ $missing = 0 ] && { log "kubernetes $K8S_VERSION cached in $out"; return; }
  local staging_version=v0.${K8S_VERSION#v1.}
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local work=$CACHE/src/kubernetes-$K8S_VERSION
  mkdir -p "$work" "$out"
  cd "$work"
  [ -f go.mod ] || go mod init twlegal.local/k8s-binaries >/dev/null 2>&1
  local s
  for s in $STAGING; do
    go mod edit -replace "k8s.io/$s=k8s.io/$s@$staging_version"
  done
  go get "k8s.io/kubernetes@$K8S_VERSION"
  local pkgs=""
  for b in $bins; do pkgs="$pkgs k8s.io/kubernetes/cmd/$b"; done
  cat > tools.go <<GO
//go:build tools
package tools
import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
  go mod tidy
  local v=k8s.io/component-base/version c=k8s.io/client-go/pkg/version
  local ld="-s -w"
  for p in $v $c; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  for b in $bins; do
    log "building $b $K8S_VERSION"
    go build -trimpath -ldflags "$ld" -o "$out/$b" "k8s.io/kubernetes/cmd/$b"
  done
}

build_etcd() {
  local out=$CACHE/bin/etcd-$ETCD_VERSION
  [ -x "$out/etcd" ] && { log "etcd $ETCD_VERSION cached in $out"; return; }
  local work=$CACHE/src/etcd-$ETCD_VERSION
  mkdir -p "$work" "$out"; cd "$work"
  [ -f go.mod ] || go mod init twlegal.local/etcd >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  log "building etcd $ETCD_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
}

build_helm() {
  local out=$CACHE/bin/helm-$HELM_VERSION-k8s-$K8S_VERSION
  [ -x "$out/helm" ] && { log "helm $HELM_VERSION cached in $out"; return; }
  local work=$CACHE/src/helm-$HELM_VERSION
  mkdir -p "$work" "$out"; cd "$work"
  [ -f go.mod ] || go mod init twlegal.local/helm >/dev/null 2>&1
  go get "helm.sh/helm/v3@$HELM_VERSION"
  log "building helm $HELM_VERSION"
  # Without the Kubernetes version in the ldflags, helm assumes v1.20 (as upstream's Makefile sets it).
  local k8s_minor=${K8S_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ld="$ld -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s_minor"
  done
  go build -trimpath -ldflags "$ld" -o "$out/helm" helm.sh/helm/v3/cmd/helm
}

# The node (e2e tier): containerd 2.x (Kubernetes 1.36 supports only 2.2+; Debian ships 1.6) and
# the CNI plugins a bridge network needs. Both are plain Go modules without replace lines.
build_containerd() {
  local out=$CACHE/bin/containerd-$CONTAINERD_VERSION
  [ -x "$out/containerd" ] && [ -x "$out/containerd-shim-runc-v2" ] && [ -x "$out/ctr" ] \
    && { log "containerd $CONTAINERD_VERSION cached in $out"; return; }
  local work=$CACHE/src/containerd-$CONTAINERD_VERSION
  mkdir -p "$work" "$out"; cd "$work"
  [ -f go.mod ] || go mod init twlegal.local/containerd >/dev/null 2>&1
  go get "github.com/containerd/containerd/v2@$CONTAINERD_VERSION"
  local ld="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  local b
  for b in containerd containerd-shim-runc-v2 ctr; do
    log "building $b $CONTAINERD_VERSION"
    go build -trimpath -ldflags "$ld" -o "$out/$b" "github.com/containerd/containerd/v2/cmd/$b"
  done
}

build_cni() {
  local out=$CACHE/bin/cni-plugins-$CNI_PLUGINS_VERSION
  local plugins="bridge host-local loopback portmap"
  local missing=0 p
  for p in $plugins; do [ -x "$out/$p" ] || missing=1; done
  [ $missing = 0 ] && { log "CNI plugins $CNI_PLUGINS_VERSION cached in $out"; return; }
  local work=$CACHE/src/cni-plugins-$CNI_PLUGINS_VERSION
  mkdir -p "$work" "$out"; cd "$work"
  [ -f go.mod ] || go mod init twlegal.local/cni-plugins >/dev/null 2>&1
  go get "github.com/containernetworking/plugins@$CNI_PLUGINS_VERSION"
  local dir
  for p in $plugins; do
    case $p in bridge|loopback) dir=main ;; host-local) dir=ipam ;; portmap) dir=meta ;; esac
    log "building CNI plugin $p $CNI_PLUGINS_VERSION"
    go build -trimpath -ldflags "-s -w" -o "$out/$p" "github.com/containernetworking/plugins/plugins/$dir/$p"
  done
}

# The sandbox image's one binary, from this package's pause/ (see pause/main.go).
build_pause() {
  local out=$CACHE/bin/pause-$PAUSE_VERSION
  [ -x "$out/pause" ] && { log "pause $PAUSE_VERSION cached in $out"; return; }
  mkdir -p "$out"
  log "building pause $PAUSE_VERSION"
  (cd "$SCRIPT_DIR/pause" && go build -trimpath -ldflags "-s -w" -o "$out/pause" .)
}

what=${1:-all}
case $what in
  all) build_etcd; build_helm; build_kubernetes ;;
  node) build_containerd; build_cni; build_pause ;;
  kubernetes|etcd|helm|containerd|cni|pause) "build_$what" ;;
  *) echo "usage: $0 [all|node|kubernetes|etcd|helm|containerd|cni|pause]" >&2; exit 2 ;;
esac
