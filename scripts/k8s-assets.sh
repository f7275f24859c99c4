#!/bin/bash
# Make the envtest-style Kubernetes binaries available for kresume's tests and demo:
#   kube-apiserver, kube-controller-manager, kubectl (Kubernetes v1.20.2) and etcd (apt's etcd-server)
# in DIR, then print `export KUBEBUILDER_ASSETS=DIR` (the controller-runtime envtest convention, honoured by
# kresume.devtools.cluster).
#
# Usage: scripts/k8s-assets.sh [--node] [DIR]        (default DIR: <repo>/.cache/k8s/bin)
#
# --node (or KRESUME_K8S_NODE=1) also provides what a real node needs (kresume.devtools.localcluster):
#   kubelet + kube-scheduler (v1.20.2, from the same sources as below: one build of the same tree, not two),
#   `pause` (static, compiled with gcc from build/pause/linux/pause.c of Debian's kubernetes source package; only
#   that file is extracted), and from Debian packages: containerd runc containernetworking-plugins (CNI in
#   /usr/lib/cni), umoci mmdebstrap buildah (offline image builds), gcc (pause), iproute2. Measured on this
#   machine kind: +15-30 s of apt and ~5 s for pause with the prebuilt binaries; +~8 min when kubelet is built.
#
# Sources, first that works:
#   1. DIR already complete and matching DIR/SHA256SUMS (written by this script)  -> nothing to do
#   2. $KUBEBUILDER_ASSETS already complete (all four binaries)                    -> print it, DIR untouched
#   3. ../shared/k8s/envtest.sh next to the repo (prebuilt, checksummed binaries)  -> `envtest.sh assets DIR`
#      (skipped with KRESUME_PREBUILT=0: what a machine without ../shared does)
#   4. build from Debian bookworm's `kubernetes` source package (Kubernetes v1.20.2) with Debian's Go, as
#      ../shared/k8s/envtest.sh documents: apt-get source, replace vendored reflect2 1.0.1 with Debian's 1.0.2
#      (1.0.1 segfaults with Go >= 1.18), `make gen_openapi` (the generated file is not in the tarball), go build in
#      GOPATH mode. kubectl comes from Debian's kubernetes-client .deb (extracted, not installed).
#      Costs ~5 min on 2 cores, ~1.4 GB peak RSS, ~3 GB disk in the build cache (kept for reruns).
# Needs root for apt (etcd-server, and build dependencies for path 4). Quiet when cached.
# Env: K8S_BUILD_CACHE (path 4's work dir, default <repo>/.cache/k8s/build),
#      KRESUME_SHARED_K8S (default <repo>/../shared/k8s), KRESUME_PREBUILT=0 (skip path 3).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${KRESUME_SHARED_K8S:-$REPO/../shared/k8s}
BUILD=${K8S_BUILD_CACHE:-$REPO/.cache/k8s/build}
K8S_VERSION=v1.20.2
K8S_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56   # upstream tag v1.20.2
NODE=${KRESUME_K8S_NODE:-0}
if [ "${1:-}" = --node ]; then NODE=1; shift; fi
DIR=${1:-$REPO/.cache/k8s/bin}
mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)
BINS=(kube-apiserver kube-controller-manager kubectl etcd)
K8S_BUILT=(kube-apiserver kube-controller-manager)
if [ "$NODE" = 1 ]; then BINS+=(kubelet kube-scheduler pause); K8S_BUILT+=(kubelet kube-scheduler); fi
NODE_PACKAGES=(containerd runc containernetworking-plugins umoci mmdebstrap buildah gcc libc6-dev iproute2 xz-utils)
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost DEBIAN_FRONTEND=noninteractive

log() { echo "k8s-assets: $*" >&2; }
die() { echo "k8s-assets: ERROR: $*" >&2; exit 1; }
with_heartbeat() {  # with_heartbeat WHAT CMD...: run CMD, saying every 60 s that WHAT is still running (builds are long)
  local what=$1 rc=0 hb; shift
  ( trap 'kill "$s" 2>/dev/null; exit 0' TERM; m=0
    while :; do sleep 60 & s=$!; wait "$s"; m=$((m + 1)); echo "k8s-assets:   ... still $what ($m min)" >&2; done ) &
  hb=$!
  "$@" || rc=$?
  kill "$hb" 2>/dev/null || true; wait "$hb" 2>/dev/null || true
  return "$rc"
}

complete() {  # complete DIR -> every binary of BINS present and executable
  local b; for b in "${BINS[@]}"; do [ -x "$1/$b" ] || return 1; done
}

sums_ok() {  # DIR is complete and matches the manifest this script wrote
  complete "$DIR" && [ -s "$DIR/SHA256SUMS" ] && (cd "$DIR" && sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1)
}

write_sums() { (cd "$DIR" && sha256sum "${BINS[@]}" > SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS); }

done_() { write_sums; echo "export KUBEBUILDER_ASSETS=$DIR"; exit 0; }

apt_install() {  # apt_install PKG... ; `apt-get update` only when the first attempt fails
  apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 && return 0
  log "apt-get install $* failed; running apt-get update and retrying"
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

ensure_etcd() {
  command -v etcd >/dev/null || { log "installing etcd-server (apt)"; apt_install etcd-server; }
  ln -sfn "$(command -v etcd)" "$DIR/etcd"
}

# --- path 4: build from Debian's source package ------------------------------------------------------------------
ensure_deb_src() {  # mirror the configured binary sources as source entries (deb822 .sources and one-line lists)
  grep -rqsE '^(Types: *deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed -E 's/^Types: *deb$/Types: deb-src/' "$f" > "/etc/apt/sources.list.d/src-$(basename "$f")"
  done
  if [ -f /etc/apt/sources.list ] && grep -qE '^deb ' /etc/apt/sources.list; then
    grep -E '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' > /etc/apt/sources.list.d/src-lists.list
  fi
  apt-get update -q >/dev/null
}

build_from_source() {
  local out=$BUILD/bin src ld pkg c d
  mkdir -p "$BUILD/src" "$BUILD/debs" "$out"
  local need=0
  for c in "${K8S_BUILT[@]}" kubectl; do [ -x "$out/$c" ] || need=1; done
  if [ "$need" = 0 ]; then
    log "using cached source build in $out"
  else
    log "no prebuilt binaries: building Kubernetes $K8S_VERSION from Debian's source package in $BUILD"
    log "  (~5-8 min on 2 cores, ~1.4 GB RAM, ~3 GB disk; kept for reruns)"
    log "  apt: deb-src entries, Go and build tools (~1 min)"
    ensure_deb_src
    apt_install golang-go dpkg-dev xz-utils make rsync jq curl ca-certificates python3
    # 1. sources: the full k8s tree including vendor/
    cd "$BUILD/src"
    if ! ls -d kubernetes-*/ >/dev/null 2>&1; then
      log "  apt-get source kubernetes (~1 min, ~70 MB)"
      apt-get source -q kubernetes >"$BUILD/apt-source.log" 2>&1 \
        || { apt-get update -q >/dev/null; apt-get source -q kubernetes >"$BUILD/apt-source.log" 2>&1; } \
        || { tail -5 "$BUILD/apt-source.log" >&2; die "apt-get source kubernetes failed (deb-src entries?)"; }
    fi
    src=$(cd "$(ls -d kubernetes-*/ | head -1)" && pwd) || die "apt-get source kubernetes produced no tree in $BUILD/src"
    # 2. kubectl from Debian's kubernetes-client .deb, plus reflect2 1.0.2 sources (extracted, not installed)
    cd "$BUILD/debs"
    ls kubernetes-client_*.deb >/dev/null 2>&1 \
      || apt-get download -q kubernetes-client golang-github-modern-go-reflect2-dev >"$BUILD/apt-download.log" 2>&1 \
      || { tail -5 "$BUILD/apt-download.log" >&2; die "apt-get download kubernetes-client golang-github-modern-go-reflect2-dev failed"; }
    for d in ./*.deb; do dpkg-deb -x "$d" x; done
    [ -x x/usr/bin/kubectl ] || die "kubernetes-client .deb did not contain usr/bin/kubectl"
    cp x/usr/bin/kubectl "$out/kubectl"
    # 3. fix 1: vendored reflect2 v1.0.1 crashes (SIGSEGV in mapiter) with Go >= 1.18; use Debian's 1.0.2
    #    (the same fix upstream Kubernetes took in 1.23)
    local v=$src/vendor/github.com/modern-go/reflect2 r=x/usr/share/gocode/src/github.com/modern-go/reflect2
    if [ ! -f "$v/go_above_118.go" ]; then
      find "$v" -maxdepth 1 \( -name '*.go' -o -name '*.s' \) -delete
      cp "$r"/*.go "$r"/*.s "$v/"
    fi
    # 4. fix 2: pkg/generated/openapi/zz_generated.openapi.go is not shipped in the tarball
    cd "$src"
    if [ ! -f pkg/generated/openapi/zz_generated.openapi.go ]; then
      log "  make gen_openapi (~1 min; log: $BUILD/gen_openapi.log)"
      with_heartbeat "make gen_openapi" make gen_openapi >"$BUILD/gen_openapi.log" 2>&1 || { tail -20 "$BUILD/gen_openapi.log" >&2; die "make gen_openapi failed"; }
    fi
    # 5. go build in GOPATH mode (Kubernetes 1.20 builds with GO111MODULE=off and vendor/)
    mkdir -p "$BUILD/gopath/src/k8s.io"; ln -sfn "$src" "$BUILD/gopath/src/k8s.io/kubernetes"
    ld="-s -w"
    for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
      ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=20 -X $pkg.gitTreeState=archive"
      ld="$ld -X $pkg.gitCommit=$K8S_COMMIT -X $pkg.buildDate=2021-01-13T00:00:00Z"
    done
    cd "$BUILD/gopath/src/k8s.io/kubernetes"
    for c in "${K8S_BUILT[@]}"; do
      [ -x "$out/$c" ] && continue
      log "  go build $c (~1-3 min idle, 10+ min on loaded cores)"
      with_heartbeat "go build $c" env GOPATH="$BUILD/gopath" GOCACHE="$BUILD/gocache" GO111MODULE=off GOFLAGS= \
        GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 go build -ldflags "$ld" -o "$out/$c.tmp" "./cmd/$c"
      mv "$out/$c.tmp" "$out/$c"
    done
  fi
  "$out/kube-apiserver" --version | grep -q "$K8S_VERSION" || die "built kube-apiserver is not $K8S_VERSION"
  for c in "${K8S_BUILT[@]}" kubectl; do cp "$out/$c" "$DIR/$c.tmp"; mv "$DIR/$c.tmp" "$DIR/$c"; done
}

# --- a real node: Debian packages and the pause binary ----------------------------------------------------------
ensure_node_packages() {  # install what of NODE_PACKAGES is missing (dpkg's status, not PATH: gcc may be elsewhere)
  local missing=() p
  for p in "${NODE_PACKAGES[@]}"; do
    dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -q '^installed$' || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "a real node needs ${missing[*]} (apt) and root"
  log "installing ${missing[*]} (apt, ~15-30 s)"
  apt_install "${missing[@]}"
}

pause_source() {  # print the path of build/pause/linux/pause.c from Debian's kubernetes source package
  local tree f lists=$BUILD/pause/apt-lists tarball
  tree=$(ls -d "$BUILD"/src/kubernetes-*/ 2>/dev/null | head -1 || true)
  if [ -n "$tree" ] && [ -f "$tree/build/pause/linux/pause.c" ]; then echo "$tree/build/pause/linux/pause.c"; return; fi
  f=$(ls "$BUILD"/pause/kubernetes-*/build/pause/linux/pause.c 2>/dev/null | head -1 || true)
  [ -n "$f" ] && { echo "$f"; return; }
  # Only the source package's orig tarball (~35 MB), through a private apt source list: the machine's apt
  # configuration is not touched.
  mkdir -p "$lists/partial" "$BUILD/pause"
  local srclist=$BUILD/pause/deb-src.sources
  : > "$srclist"
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed -E 's/^Types: *deb$/Types: deb-src/' "$f" >> "$srclist" && echo >> "$srclist"
  done
  local one=$BUILD/pause/deb-src.list
  if [ -f /etc/apt/sources.list ]; then grep -E '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' > "$one" || true; else : > "$one"; fi
  local opts=(-o "Dir::Etc::SourceList=$one" -o "Dir::Etc::SourceParts=$BUILD/pause/parts" -o "Dir::State::Lists=$lists")
  mkdir -p "$BUILD/pause/parts"; cp "$srclist" "$BUILD/pause/parts/deb-src.sources"
  apt-get -q "${opts[@]}" update >"$BUILD/pause/apt.log" 2>&1 || { tail -5 "$BUILD/pause/apt.log" >&2; die "apt-get update (deb-src) failed"; }
  (cd "$BUILD/pause" && apt-get -q "${opts[@]}" source --download-only kubernetes >>apt.log 2>&1) \
    || { tail -5 "$BUILD/pause/apt.log" >&2; die "apt-get source --download-only kubernetes failed"; }
  tarball=$(ls "$BUILD"/pause/kubernetes_*.orig.tar.* | head -1)
  tar -C "$BUILD/pause" -xf "$tarball" --wildcards '*/build/pause/linux/pause.c'
  ls "$BUILD"/pause/kubernetes-*/build/pause/linux/pause.c | head -1
}

ensure_pause() {  # DIR/pause: the sandbox (infra) container's only program, static, VERSION 3.2 as kubelet expects
  [ -x "$DIR/pause" ] && "$DIR/pause" -v 2>/dev/null | grep -q 'pause.c 3.2' && return 0
  local src; src=$(pause_source)
  log "compiling pause from $src"
  gcc -Os -static -Wall -Werror -DVERSION=3.2 -o "$DIR/pause.tmp" "$src"
  strip "$DIR/pause.tmp" 2>/dev/null || true
  mv "$DIR/pause.tmp" "$DIR/pause"
}

# --- main ---------------------------------------------------------------------------------------------------------
[ "$NODE" = 1 ] && ensure_node_packages
sums_ok && { echo "export KUBEBUILDER_ASSETS=$DIR"; exit 0; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ "$(cd "$KUBEBUILDER_ASSETS" 2>/dev/null && pwd)" != "$DIR" ] \
    && complete "$KUBEBUILDER_ASSETS"; then
  echo "export KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"; exit 0
fi

# A binary that fails the manifest is stale or damaged: drop it so the sources below replace it.
if [ -s "$DIR/SHA256SUMS" ]; then
  for b in "${BINS[@]}"; do
    [ -e "$DIR/$b" ] || continue
    (cd "$DIR" && grep -E " $b\$" SHA256SUMS | sha256sum --quiet -c - >/dev/null 2>&1) && continue
    log "checksum mismatch for $DIR/$b; replacing it"; rm -f "$DIR/$b"
  done
fi
[ "$(id -u)" = 0 ] || command -v etcd >/dev/null || die "etcd is missing and installing etcd-server needs root (apt)"
ensure_etcd
[ "$NODE" = 1 ] && ensure_pause

SHARED_NAMES="kube-apiserver|kube-controller-manager|kubectl"
[ "$NODE" = 1 ] && SHARED_NAMES="$SHARED_NAMES|kubelet|kube-scheduler"
shared_sums_ok() {  # the k8s binaries in DIR match the checksums shipped beside envtest.sh
  [ -s "$SHARED/bin/SHA256SUMS" ] || return 0
  (cd "$DIR" && grep -E " ($SHARED_NAMES)\$" "$SHARED/bin/SHA256SUMS" | sha256sum --quiet -c - >/dev/null 2>&1)
}

if [ "${KRESUME_PREBUILT:-1}" != 0 ] && [ -x "$SHARED/envtest.sh" ]; then
  log "using the prebuilt binaries of $SHARED"
  # envtest.sh keeps binaries that already exist, so drop unverified ones first
  complete "$DIR" && ! shared_sums_ok && rm -f "$DIR/kube-apiserver" "$DIR/kube-controller-manager" "$DIR/kubectl" \
    "$DIR/kubelet" "$DIR/kube-scheduler"
  WITH_NODE=$NODE "$SHARED/envtest.sh" assets "$DIR" >/dev/null || die "$SHARED/envtest.sh assets $DIR failed"
  complete "$DIR" || die "$SHARED/envtest.sh assets left $DIR incomplete"
  shared_sums_ok || die "binaries in $DIR do not match $SHARED/bin/SHA256SUMS"
  done_
fi

build_from_source
complete "$DIR" || die "$DIR is incomplete after the source build"
done_
