"""User-facing names kresume promises to keep stable.

Every label, annotation, environment variable and remote object name that crosses a process or
a user's YAML lives here, so the sidecar, the operator, the chart and the docs agree. The source
of each name is ``DESIGN.md`` ("Pod API", "Env injected into training containers", "CRDs",
"Store protocol"); change one only together with its docs, chart and tests.
"""

from __future__ import annotations

# --- Kubernetes API group and CRDs -------------------------------------------------------------
GROUP = "kresume.dev"
VERSION = "v1alpha1"
POLICY_PLURAL = "checkpointpolicies"
POLICY_KIND = "CheckpointPolicy"
RUN_PLURAL = "checkpointruns"
RUN_KIND = "CheckpointRun"
DEFAULT_POLICY_NAME = "default"

# --- Pod API: what users write ----------------------------------------------------------------
LABEL_INJECT = f"{GROUP}/inject"  # value "true" opts a pod in (webhook objectSelector)
ANN_RUN = f"{GROUP}/run"
ANN_POLICY = f"{GROUP}/policy"
ANN_CHECKPOINT_DIR = f"{GROUP}/checkpoint-dir"
ANN_VOLUME = f"{GROUP}/volume"
ANN_CONTAINERS = f"{GROUP}/containers"
ANN_RESTORE = f"{GROUP}/restore"

# --- Written by the operator on the pod ---------------------------------------------------------
ANN_RESUMED_FROM = f"{GROUP}/resumed-from"  # URL or "none"
ANN_RESUMED_STEP = f"{GROUP}/resumed-step"
ANN_RESOLVE_ERROR = f"{GROUP}/resolve-error"  # why resolution fell back (timeout, error)
ANN_INJECTED = f"{GROUP}/injected"  # marker making injection idempotent

DEFAULT_CHECKPOINT_DIR = "/checkpoints"
SIDECAR_CONTAINER_NAME = "kresume-sidecar"
RESTORE_CONTAINER_NAME = "kresume-restore"
VOLUME_NAME = "kresume-checkpoints"

# --- Env injected into training containers ------------------------------------------------------
ENV_RESUME_FROM = "KRESUME_RESUME_FROM"
ENV_RESUME_STEP = "KRESUME_RESUME_STEP"
ENV_RESUME_PATH = "KRESUME_RESUME_PATH"
ENV_CHECKPOINT_DIR = "KRESUME_CHECKPOINT_DIR"
ENV_RUN_URL = "KRESUME_RUN_URL"

# --- Remote layout of one run (store protocol, DESIGN.md invariants 1-3) ------------------------
#   <run>/checkpoints/<id>/<name>[/<relpath>]   data objects; <name> is the local file/folder name
#   <run>/manifests/<id>.json                   the commit record: its existence IS the commit
#   <run>/latest.json                           the pointer to the newest committed checkpoint
#   <run>/bad/<id>.json                         checkpoints marked bad (skipped by resolution)
CHECKPOINTS_DIR = "checkpoints"
MANIFESTS_DIR = "manifests"
BAD_DIR = "bad"
POINTER_NAME = "latest.json"
MANIFEST_SUFFIX = ".json"
MANIFEST_VERSION = 1
