#!/usr/bin/env bash
# One-time, idempotent set-up of a development machine for kresume (Debian 12, Python >= 3.11, root or sudo-less apt).
#
#   scripts/setup.sh            # venv + Python deps + Azurite + Kubernetes test binaries
#
# What it does, each step skipped when already done:
#   1. .venv with torch==2.13.0 FIRST (the CPU wheel this machine kind caches; any other torch would download GBs),
#      then `pip install -e '.[s3,gcs,azure,torch,dev]'` (a stamp keyed on pyproject.toml's hash skips reinstalls).
#   2. Azurite 3.37.0 (npm) into .cache/azurite             — scripts/install-azurite.sh
#   3. kube-apiserver/controller-manager/kubectl + etcd     — scripts/k8s-assets.sh (.cache/k8s/bin)
#      + kubelet, kube-scheduler, pause and the real node's Debian packages (containerd, runc, CNI plugins, umoci,
#      buildah, mmdebstrap) — `--node`; skipped with KRESUME_SKIP_NODE=1 (the demo then uses the node agent)
# Env: PYTHON (default python3), KRESUME_SKIP_K8S=1, KRESUME_SKIP_NODE=1, KRESUME_SKIP_AZURITE=1.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-python3}
VENV=$REPO/.venv
log() { echo "setup: $*" >&2; }

"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || { log "Python >= 3.11 is required (found $("$PYTHON" --version 2>&1))"; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
stamp=$VENV/.kresume-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing torch==2.13.0 (CPU wheel, ~1-3 min)"
  "$VENV/bin/pip" install -q torch==2.13.0
  log "installing kresume[s3,gcs,azure,torch,dev] and its test/bench tools (~3-5 min)"
  "$VENV/bin/pip" install -q -e '.[s3,gcs,azure,torch,dev]' torch==2.13.0
  echo "$want" > "$stamp"
fi
"$VENV/bin/python" - <<'PY'
import torch, sys
if torch.__version__.split("+")[0] != "2.13.0":
    sys.exit(f"setup: torch {torch.__version__} found, 2.13.0 required; something replaced it")
PY

[ "${KRESUME_SKIP_AZURITE:-}" = 1 ] || { log "Azurite (Azure Blob emulator) into .cache/azurite"; scripts/install-azurite.sh >/dev/null; }
node_flag=--node; [ "${KRESUME_SKIP_NODE:-}" = 1 ] && node_flag=
[ "${KRESUME_SKIP_K8S:-}" = 1 ] || { log "Kubernetes test binaries (kube-apiserver, etcd, kubectl${node_flag:+, kubelet, kube-scheduler, containerd}) into .cache/k8s"; scripts/k8s-assets.sh $node_flag >/dev/null; }
log "ready (.venv, .cache/azurite, .cache/k8s/bin)"
