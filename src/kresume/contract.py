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
ANN_RANK = f"{GROUP}/rank"  # a pod's rank in a multi-rank run (with ANN_WORLD_SIZE), when no controller gives it
ANN_WORLD_SIZE = f"{GROUP}/world-size"
ANN_PARTS = f"{GROUP}/parts"  # "all-ranks": every unit goes through per-rank parts (docs/store-protocol.md)

# --- Written by the operator on the pod ---------------------------------------------------------
ANN_RESUMED_FROM = f"{GROUP}/resumed-from"  # URL or "none"
ANN_RESUMED_STEP = f"{GROUP}/resumed-step"
ANN_RESOLVE_ERROR = f"{GROUP}/resolve-error"  # why resolution fell back (timeout, error)
ANN_INJECTED = f"{GROUP}/injected"  # marker making injection idempotent
ANN_EPOCH = f"{GROUP}/epoch"  # the resume epoch token of a multi-rank run's pod (KRESUME_EPOCH)

DEFAULT_CHECKPOINT_DIR = "/checkpoints"

# --- Trainer <-> sidecar handshake in the checkpoint folder (kresume.preemption) -----------------
# Each trainer process that uses a kresume preemption hook holds a shared flock(2) on TRAINER_LOCK
# for its whole life (the kernel drops it when the process dies, however it dies), and on SIGTERM
# writes TRAINER_NOTICE (JSON: signal_at, state saving|saved|failed|none, checkpoint, step, pid).
# The sidecar keeps committing while the lock is held, within its grace period. Neither is a
# checkpoint: the sidecar never uploads them.
TRAINER_LOCK = ".kresume-trainer.lock"
TRAINER_NOTICE = ".kresume-trainer.json"
RESTORE_RESULT = ".kresume-restore.json"  # kresume restore's outcome (the restore container's terminationMessagePath)
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: a trainer that saved on SIGTERM exits non-zero, never 0
SIDECAR_CONTAINER_NAME = "kresume-sidecar"
RESTORE_CONTAINER_NAME = "kresume-restore"
VOLUME_NAME = "kresume-checkpoints"
NODE_CACHE_VOLUME = "kresume-node-cache"  # hostPath of the node-local tier (policy nodeCache)
NODE_CACHE_MOUNT = "/kresume-node-cache"  # where the sidecar and restore containers mount it

# --- Env injected into training containers ------------------------------------------------------
ENV_RESUME_FROM = "KRESUME_RESUME_FROM"
ENV_RESUME_STEP = "KRESUME_RESUME_STEP"
ENV_RESUME_PATH = "KRESUME_RESUME_PATH"
ENV_CHECKPOINT_DIR = "KRESUME_CHECKPOINT_DIR"
ENV_RUN_URL = "KRESUME_RUN_URL"
ENV_RANK = "KRESUME_RANK"  # multi-rank runs only: the pod's rank, world size and resume epoch token
ENV_WORLD_SIZE = "KRESUME_WORLD_SIZE"
ENV_EPOCH = "KRESUME_EPOCH"
ENV_PARTS = "KRESUME_PARTS"  # the sidecar's copy of ANN_PARTS

# --- Remote layout of one run (store protocol, DESIGN.md invariants 1-3) ------------------------
#   <run>/checkpoints/<id>/<name>[/<relpath>]   data objects; <name> is the local file/folder name
#   <run>/manifests/<id>.json                   the commit record: its existence IS the commit
#   <run>/latest.json                           the pointer to the newest committed checkpoint
#   <run>/bad/<id>.json                         checkpoints marked bad (skipped by resolution)
CHECKPOINTS_DIR = "checkpoints"
PARTS_DIR = "parts"  # parts/<id>/<rank>.json: a rank's part of a multi-rank checkpoint
PINS_DIR = "pins"  # pins/<holder>.json: a live pod's lease on the checkpoint it resumed from
STORE_CLOCK_NAME = ".kresume-clock"  # rewritten to read the store's own clock (retention, orphans)
MANIFESTS_DIR = "manifests"
BAD_DIR = "bad"
POINTER_NAME = "latest.json"
MANIFEST_SUFFIX = ".json"
MANIFEST_VERSION = 1
MANIFEST_VERSION_ALIASES = 2  # a manifest with an alias entry (docs/store-protocol.md "Aliases"): readers that
# do not know aliases refuse it by its version instead of restoring a hole

# --- Env of the sidecar and restore containers (set by the operator's injection) ------------------
# The sidecar reads these as defaults for its flags (``kresume sidecar --help``); ``kresume restore``
# reads ENV_STORAGE_OPTIONS. Values: strings, as env always is.
ENV_WATCH = "KRESUME_WATCH"  # folder the sidecar watches (= the checkpoint dir)
ENV_POD_NAME = "KRESUME_POD_NAME"  # downward API metadata.name (source pod in manifests)
ENV_POD_NAMESPACE = "KRESUME_POD_NAMESPACE"  # downward API metadata.namespace
ENV_POD_UID = "KRESUME_POD_UID"  # legacy mode, trainer and sidecar: downward API metadata.uid (whose trainer lock)
ENV_GRACE_SECONDS = "KRESUME_GRACE_SECONDS"  # seconds to keep committing after SIGTERM (integer)
ENV_RESTART_POLICY = "KRESUME_RESTART_POLICY"  # legacy mode only: the pod's restartPolicy (sidecar/leaving.py)
ENV_STORAGE_OPTIONS = "KRESUME_STORAGE_OPTIONS"  # JSON object passed to fsspec.url_to_fs(**options)
ENV_CONCURRENCY = "KRESUME_CONCURRENCY"  # parallel uploads (integer >= 1)
ENV_KEEP_LAST = "KRESUME_KEEP_LAST"  # retention: keep the newest N checkpoints (integer >= 1)
ENV_CACHE_DIR = "KRESUME_CACHE_DIR"  # node-local cache folder (sidecar, restore)
ENV_CACHE_MAX_BYTES = "KRESUME_CACHE_MAX_BYTES"  # its cap in bytes (sidecar)
ENV_KEEP_EVERY = "KRESUME_KEEP_EVERY"  # retention: also keep every K-th step (integer >= 1)

# --- Pod-ownership labels/annotations read to derive a run identity (set by other controllers) ----
# Sources: Kubernetes batch/v1 Job (pod labels/annotations documented in "Jobs" and the
# "Well-known labels" reference), JobSet (sigs.k8s.io/jobset api/jobset/v1alpha2 labels), Kubeflow
# training-operator (kubeflow.org/v1 common labels). They are not kresume's; only copied here.
K8S_JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
K8S_LEGACY_JOB_NAME_LABEL = "job-name"
K8S_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"  # annotation (1.21+) and label (1.28+)
K8S_STATEFULSET_POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
JOBSET_REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
JOBSET_JOB_INDEX_LABEL = "jobset.sigs.k8s.io/job-index"
JOBSET_JOB_GLOBAL_INDEX_LABEL = "jobset.sigs.k8s.io/job-global-index"
JOBSET_GLOBAL_REPLICAS_LABEL = "jobset.sigs.k8s.io/global-replicas"
JOBSET_REPLICATED_JOB_REPLICAS_LABEL = "jobset.sigs.k8s.io/replicatedjob-replicas"
KUBEFLOW_JOB_NAME_LABEL = "training.kubeflow.org/job-name"
KUBEFLOW_REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
KUBEFLOW_REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
KUBEFLOW_OLD_REPLICA_TYPE_LABEL = "replica-type"  # the training-operator's labels before training.kubeflow.org/
KUBEFLOW_OLD_REPLICA_INDEX_LABEL = "replica-index"

# --- Names of CRD short names, for kubectl -------------------------------------------------------
POLICY_SHORT_NAME = "ckptpolicy"
RUN_SHORT_NAME = "ckptrun"
