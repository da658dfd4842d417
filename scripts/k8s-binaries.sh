#!/usr/bin/env bash
# Build the Kubernetes control plane the Kubernetes tests run against, once per machine:
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from the official sources at a
# pinned version (through the Go module proxy), kwok as fake nodes, and etcd from Debian's package.
# Binaries are cached under $LASTREAM_HOME/k8s/<version>/bin; a second run reuses them.
# Usage: scripts/k8s-binaries.sh   (prints the bin directory on its last line)
set -euo pipefail
cd "$(dirname "$0")/.."
# The version the tests look for (localcluster.K8S_VERSION): one home, read from there.
K8S_VERSION=$(sed -n 's/^K8S_VERSION = "\(.*\)"$/\1/p' lastream_stream/kube/localcluster.py)
KWOK_VERSION=v0.7.0
HOME_DIR=${LASTREAM_HOME:-$HOME/.cache/lastream}
BIN=$HOME_DIR/k8s/$K8S_VERSION/bin
mkdir -p "$BIN"
log() { echo "k8s-binaries: $*" >&2; }

if ! command -v etcd >/dev/null 2>&1 && [ ! -x "$BIN/etcd" ]; then
  log "installing etcd from Debian's etcd-server package"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server >&2
fi
if [ ! -x "$BIN/etcd" ]; then ln -sf "$(command -v etcd)" "$BIN/etcd"; fi

missing=()
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  [ -x "$BIN/$b" ] || missing+=("$b")
done
if [ ${#missing[@]} -gt 0 ]; then
  start=$(date +%s)
  log "building ${missing[*]} from k8s.io/kubernetes@$K8S_VERSION (about 10 minutes on 2 cores, once)"
  SRC=$HOME_DIR/k8s/$K8S_VERSION/src
  if [ ! -f "$SRC/go.mod" ]; then
    dir=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp"
    cp -r "$dir/." "$SRC.tmp/" && chmod -R u+w "$SRC.tmp"
    # The module as published points its k8s.io/* staging modules at ./staging and vendors them;
    # outside the repository they come from the proxy at the matching v0 release instead.
    rm -rf "$SRC.tmp/vendor" "$SRC.tmp/go.work" "$SRC.tmp/go.work.sum"
    staging=$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$SRC.tmp/go.mod")
    sed -i '/=> .\/staging\//d' "$SRC.tmp/go.mod"
    staging_version=v0.${K8S_VERSION#v1.}
    for m in $staging; do
      (cd "$SRC.tmp" && go mod edit -require="$m@$staging_version")
    done
    mv "$SRC.tmp" "$SRC"
  fi
  for b in "${missing[@]}"; do
    log "go build ./cmd/$b"
    (cd "$SRC" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -o "$BIN/$b" "./cmd/$b")
  done
  log "built ${missing[*]} in $(( $(date +%s) - start )) s"
fi

if [ ! -x "$BIN/kwok" ]; then
  log "go install sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION (about 2.5 minutes, once)"
  GOBIN=$BIN CGO_ENABLED=0 go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
fi
echo "$BIN"
