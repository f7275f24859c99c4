#!/usr/bin/env bash
# One-time, idempotent set-up of a development machine for kresume (Debian 12, Python >= 3.11, Node >= 20, root
# for apt). `make demo` and `make test` run it first; a second run takes seconds.
#
#   scripts/setup.sh
#
# Steps (each says what it does and how long it usually takes, then how long it took; each is skipped when done):
#   1. .venv                                                    (seconds)
#   2. torch==2.13.0 CPU wheel FIRST (any other torch would download GBs)   (~1-3 min)
#   3. pip install -e '.[s3,gcs,azure,torch,dev]': ~100 packages; a stamp keyed on pyproject.toml's hash skips
#      reinstalls                                               (~3-10 min: the longest step on a fresh machine)
#   4. Azurite 3.37.0 (npm) into .cache/azurite — scripts/install-azurite.sh          (~0.5-1 min)
#   5. kube-apiserver, kube-controller-manager, kubectl, etcd into .cache/k8s/bin — scripts/k8s-assets.sh:
#      $KUBEBUILDER_ASSETS when it holds all four (nothing is copied); else the prebuilt, checksummed binaries of
#      ../shared/k8s when present (seconds); else built from Debian's Kubernetes v1.20.2 source package
#      (~5-8 min on an idle 2-core machine, up to ~18 min under load; 1.4 GB RAM, 3 GB disk; cached in .cache/k8s/build for reruns);
#      + kubelet, kube-scheduler, pause and the real node's Debian packages (containerd, runc, CNI plugins, umoci,
#      buildah, mmdebstrap) — `--node`; skipped with KRESUME_SKIP_NODE=1 (the demo then uses the node agent).
# README.md "Set-up" has the times measured on a fresh 2-core machine.
#
# Env: PYTHON (default python3); KRESUME_SKIP_K8S=1, KRESUME_SKIP_AZURITE=1 skip steps 5 and 4; KRESUME_SKIP_NODE=1;
#      KUBEBUILDER_ASSETS=DIR reuse binaries you have (setup-envtest, a previous checkout);
#      KRESUME_PREBUILT=0 ignore ../shared/k8s (what a machine without it does: the source build);
#      KRESUME_SHARED_K8S=DIR where the prebuilt binaries are (default <repo>/../shared/k8s).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-python3}
VENV=$REPO/.venv
TOTAL=5
STEP=0
T_ALL=$SECONDS
log() { echo "setup: $*" >&2; }
fmt() { local s=$1; if [ "$s" -ge 60 ]; then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi; }
step() {  # step WHAT USUALLY: announce step N/TOTAL
  STEP=$((STEP + 1)); T_STEP=$SECONDS
  log "[$STEP/$TOTAL] $1 (usually $2)"
}
step_done() { log "[$STEP/$TOTAL] done in $(fmt $((SECONDS - T_STEP)))${1:+: $1}"; }
skip() { STEP=$((STEP + 1)); log "[$STEP/$TOTAL] $1"; }

pip_install() {  # pip_install LOGNAME ARGS...: pip's own lines, condensed to a progress report; full log kept
  local logfile=$VENV/$1.log; shift
  if ! "$VENV/bin/pip" install --progress-bar off "$@" 2>&1 | tee "$logfile" | awk -v logf="$logfile" '
      /^Collecting / { n++; if (n == 1 || n % 20 == 0) { printf "setup:       %d packages resolved (%s)\n", n, $2; fflush() } }
      /pip is looking at multiple versions of/ { if (!seen[$9]++) { printf "setup:       pip is trying versions of %s (a dependency conflict; it can take long: see %s)\n", $9, logf; fflush() } }
      /^Installing collected packages/ { printf "setup:       installing %d packages\n", n; fflush() }
      /^(ERROR|error):/ { print; fflush() }' >&2; then
    log "pip failed; the last lines of $logfile:"; tail -20 "$logfile" >&2; exit 1
  fi
}

"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || { log "Python >= 3.11 is required (found $("$PYTHON" --version 2>&1))"; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV" "seconds"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  step_done
else
  skip "$VENV exists"
fi

stamp=$VENV/.kresume-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "installing torch==2.13.0 (the CPU wheel) before anything that depends on torch" "1-3 min"
  pip_install pip-torch torch==2.13.0
  step_done
  step "installing kresume[s3,gcs,azure,torch,dev] and its test/bench tools (~100 packages)" "3-10 min"
  pip_install pip-kresume -e '.[s3,gcs,azure,torch,dev]' torch==2.13.0
  echo "$want" > "$stamp"
  step_done
else
  skip "torch 2.13.0 installed"; skip "kresume's Python packages installed (pyproject.toml unchanged)"
fi
"$VENV/bin/python" - <<'PY'
import torch, sys
if torch.__version__.split("+")[0] != "2.13.0":
    sys.exit(f"setup: torch {torch.__version__} found, 2.13.0 required; something replaced it")
PY

if [ "${KRESUME_SKIP_AZURITE:-}" = 1 ]; then
  skip "Azurite skipped (KRESUME_SKIP_AZURITE=1)"
else
  step "Azurite 3.37.0, the Azure Blob emulator the Azure tests start (npm) into .cache/azurite" "30-60 s"
  step_done "$(scripts/install-azurite.sh | tail -1)"
fi

if [ "${KRESUME_SKIP_K8S:-}" = 1 ]; then
  skip "Kubernetes binaries skipped (KRESUME_SKIP_K8S=1)"
else
  if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then how="seconds: reusing \$KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS if complete"
  elif [ "${KRESUME_PREBUILT:-1}" != 0 ] && [ -x "${KRESUME_SHARED_K8S:-$REPO/../shared/k8s}/envtest.sh" ]; then
    how="seconds: prebuilt binaries"
  else how="5-8 min when not cached: built from Debian's Kubernetes v1.20.2 source"; fi
  node_flag=--node; [ "${KRESUME_SKIP_NODE:-}" = 1 ] && node_flag=
  step "Kubernetes test binaries (kube-apiserver, kube-controller-manager, kubectl, etcd${node_flag:+; kubelet, kube-scheduler, containerd})" "$how"
  assets=$(scripts/k8s-assets.sh $node_flag)
  step_done "${assets#export }"
fi
log "ready in $(fmt $((SECONDS - T_ALL))) (.venv, .cache/azurite, .cache/k8s/bin)"
