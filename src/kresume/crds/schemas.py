"""OpenAPI v3 schemas (apiextensions.k8s.io/v1, structural) of kresume's CRDs.

The ``CheckpointPolicy`` spec mirrors :class:`kresume.policy.Policy`: the same patterns
(:data:`~kresume.policy.STORAGE_PATTERN`, :data:`~kresume.policy.QUANTITY_PATTERN`, DNS-1123) and
the same defaults and bounds, read from the pydantic model, so the API server refuses what the
model refuses. Only a v1.20-compatible subset is used (no CEL ``x-kubernetes-validations``).
``x-kubernetes-preserve-unknown-fields`` appears only where content is open by design:
``storageOptions`` (fsspec kwargs), an env var's ``valueFrom`` and ``status.kopf`` (kopf's own
progress records).
"""

from __future__ import annotations

from typing import Any

from kresume import policy as p

Schema = dict[str, Any]


def _default(model: type, field: str) -> Any:
    return model.model_fields[field].default  # type: ignore[attr-defined]


def _str(description: str, **kw: Any) -> Schema:
    return {"type": "string", "description": description, **kw}


def _int(description: str, **kw: Any) -> Schema:
    return {"type": "integer", "format": "int64", "description": description, **kw}


def _obj(description: str, properties: dict[str, Schema], **kw: Any) -> Schema:
    return {"type": "object", "description": description, "properties": properties, **kw}


def quantity() -> Schema:
    """A Kubernetes quantity: integer or string matching the quantity regex (as controller-gen emits)."""
    return {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": p.QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": True,
    }


def _quantities(description: str) -> Schema:
    return {"type": "object", "description": description, "additionalProperties": quantity()}


def policy_spec() -> Schema:
    """Schema of ``CheckpointPolicy.spec`` (see :class:`kresume.policy.Policy` for meanings)."""
    return _obj(
        "Where a namespace's runs are stored and how the sidecar runs.",
        {
            "storage": _str(
                "URL base; runs live at <storage>/<namespace>/<run>/. Schemes: "
                + ", ".join(p.ALLOWED_SCHEMES) + ".",
                pattern=p.STORAGE_PATTERN,
            ),
            "storageOptions": {
                "type": "object",
                "description": "fsspec storage options (fsspec.url_to_fs(url, **options)); no secrets.",
                "x-kubernetes-preserve-unknown-fields": True,
            },
            "credentialsSecret": _str(
                "Secret in the pod's namespace; its keys become env of the sidecar (envFrom).",
                pattern=p.DNS1123_SUBDOMAIN,
                maxLength=253,
            ),
            "retention": _obj(
                "Remote retention after each commit.",
                {
                    "keepLast": _int(
                        "Keep the newest N committed checkpoints.",
                        minimum=1,
                        default=_default(p.Retention, "keep_last"),
                    ),
                    "keepEvery": _int("Also keep every checkpoint whose step is a multiple of K.", minimum=1),
                },
                default={},  # so the API server fills keepLast in when retention is omitted
            ),
            "sidecar": _obj(
                "The sidecar container.",
                {
                    "image": _str("Image of `kresume sidecar`; default: the operator's image.", minLength=1),
                    "imagePullPolicy": _str("Container imagePullPolicy.", enum=list(p.PULL_POLICIES)),
                    "resources": _obj(
                        "core/v1 ResourceRequirements of the sidecar and restore containers, as a whole (unset: the "
                        "operator's --sidecar-resources, by default requests cpu 100m, memory 192Mi; limits "
                        "memory 512Mi).",
                        {
                            "requests": _quantities("Requested resources, e.g. cpu: 100m."),
                            "limits": _quantities("Resource limits, e.g. memory: 1Gi."),
                        },
                    ),
                    "concurrency": _int(
                        "Parallel uploads.", minimum=1, default=_default(p.Sidecar, "concurrency")
                    ),
                    "graceSeconds": _int(
                        "Seconds to keep committing after SIGTERM; default: the pod's "
                        "terminationGracePeriodSeconds minus a margin.",
                        minimum=0,
                    ),
                    "extraArgs": {
                        "type": "array",
                        "description": "Arguments appended to `kresume sidecar`.",
                        "items": {"type": "string"},
                    },
                    "extraEnv": {
                        "type": "array",
                        "description": "core/v1 EnvVar entries appended to the sidecar's env.",
                        "items": _obj(
                            "One env var.",
                            {
                                "name": _str("Variable name.", minLength=1),
                                "value": _str("Value."),
                                "valueFrom": {
                                    "type": "object",
                                    "description": "core/v1 EnvVarSource.",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                            required=["name"],
                        ),
                    },
                },
                default={},  # so concurrency's default applies when sidecar is omitted
            ),
            "restore": {
                "type": "boolean",
                "description": "Download the resume checkpoint into the checkpoint dir before the trainer starts.",
                "default": _default(p.Policy, "restore"),
            },
            "resolveTimeoutSeconds": {
                "type": "number",
                "description": "Webhook budget (s) for finding the newest committed checkpoint.",
                "minimum": 0,
                "exclusiveMinimum": True,
                "maximum": 8,
                "default": _default(p.Policy, "resolve_timeout_seconds"),
            },
            "epochJoinSeconds": {
                "type": "number",
                "description": "Seconds a multi-rank run's resume epoch stays open for ranks not admitted yet (and "
                               "while a pod of it is live).",
                "minimum": 0, "exclusiveMinimum": True, "maximum": 86400,
                "default": _default(p.Policy, "epoch_join_seconds"),
            },
            "crashLoop": _obj(
                "Crash-loop fallback: mark a checkpoint bad after pods fail in a row on it.",
                {
                    "failures": _int("Failed pods (or trainer restarts) in a row, with no newer commit, after being "
                                     "injected one checkpoint before it is marked bad; 0: off.", minimum=0,
                                     maximum=p.MAX_CRASH_LOOP_FAILURES,
                                     default=_default(p.CrashLoop, "failures")),
                    "maxFallbacks": _int("Fallbacks in a row without a newer commit; then crash loops are only "
                                         "reported.", minimum=0, default=_default(p.CrashLoop, "max_fallbacks")),
                },
                default={},
            ),
            "nodeCache": _obj(
                "Node-local tier: keep committed checkpoints on the node's disk and restore from there on the same "
                "node (turns on the restore init step).",
                {
                    "enabled": {"type": "boolean", "description": "Turn the node-local tier on.",
                                "default": _default(p.NodeCache, "enabled")},
                    "hostPath": _str("Node folder of the cache (a hostPath volume, DirectoryOrCreate).",
                                     pattern=p.HOST_PATH_PATTERN, maxLength=1024, default=_default(p.NodeCache, "host_path")),
                    "maxBytes": _int("Cap of the cache in bytes: oldest entries go first, never a run's newest.",
                                     minimum=1, default=_default(p.NodeCache, "max_bytes")),
                },
                default={},
            ),
        },
        required=["storage"],
    )


def _time(description: str) -> Schema:
    return _str(description, format="date-time")


def run_spec() -> Schema:
    """Schema of ``CheckpointRun.spec``: which run this is (written by the operator)."""
    return _obj(
        "The run this object tracks; written by the operator.",
        {
            "run": _str("Run name.", pattern=p.DNS1123_SUBDOMAIN, maxLength=p.MAX_RUN_LEN),
            "policy": _str("CheckpointPolicy (same namespace).", pattern=p.DNS1123_SUBDOMAIN, maxLength=253),
            "url": _str("The run's store URL, <policy.storage>/<namespace>/<run>/."),
            "source": _str(
                "What gave the run its name.", enum=["annotation", "jobset", "pytorchjob", "job", "statefulset"]
            ),
            "group": _str("The enclosing job shared by all ranks (Job, JobSet, PyTorchJob, StatefulSet)."),
            "rank": _int("Completion/replica index or ordinal.", minimum=0),
        },
        required=["run", "url"],
    )


#: Entries kept in ``status.history`` (newest last); the operator trims older ones.
HISTORY_MAX = 50
#: Failed attempts kept in ``status.crashLoop.failures`` (the policy's threshold is capped to it).
CRASH_LOOP_MAX = p.MAX_CRASH_LOOP_FAILURES


def run_status() -> Schema:
    """Schema of ``CheckpointRun.status`` (the status subresource; written by the operator)."""
    condition = _obj(
        "A metav1.Condition.",
        {
            "type": _str("Condition type.", maxLength=316),
            "status": _str("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": _str("CamelCase reason.", maxLength=1024),
            "message": _str("Human-readable detail.", maxLength=32768),
            "lastTransitionTime": _time("When status last changed."),
            "observedGeneration": _int("metadata.generation this was set for.", minimum=0),
        },
        required=["type", "status"],
    )
    return _obj(
        "Observed state of the run.",
        {
            "latest": _obj(
                "The newest committed checkpoint.",
                {
                    "url": _str("URL a trainer resumes from."),
                    "step": _int("Training step."),
                    "committedAt": _time("When its manifest was written."),
                    "checkpoint": _str("Checkpoint id in the run store."),
                },
            ),
            "checkpoints": _int("Committed checkpoints in the store.", minimum=0),
            "worldSize": _int("Pods (ranks) of the run: 1 for a single-rank run.", minimum=1),
            "pending": _obj(
                "Multi-rank steps some rank has written its part of but that are not whole yet (a stuck rank "
                "shows here).",
                {
                    "step": _int("The newest such step."),
                    "count": _int("How many steps wait for ranks.", minimum=0),
                },
            ),
            "restarts": _int("Pods of this run that ended by disruption (preemption, eviction, node loss, deletion "
                             "of a live pod) and were replaced; a pod that failed by itself (start failure, crash) "
                             "is not counted.", minimum=0),
            "lastPreemption": _obj(
                "The last pod of the run that ended by disruption.",
                {
                    "pod": _str("Pod name."),
                    "reason": _str("DisruptionTarget reason, Evicted, Preempted, NodeLost, ..."),
                    "time": _time("When it was observed."),
                },
            ),
            "restores": _obj(
                "Restore init steps of the run's pods, by where the checkpoint came from (docs/preemption.md).",
                {
                    "cache": _int("Restores from the node-local cache.", minimum=0),
                    "store": _int("Restores downloaded from the store.", minimum=0),
                    "pods": {"type": "array", "items": {"type": "string"}, "maxItems": 20,
                             "description": "The last pods counted (each pod is counted once)."},
                    "last": _obj("The last restore.", {
                        "pod": _str("Pod name."),
                        "source": _str("cache or store.", enum=["cache", "store"]),
                        "checkpoint": _str("Checkpoint id."),
                        "bytes": _int("Bytes restored.", minimum=0),
                        "seconds": _str("Duration of the restore step, seconds (decimal)."),
                        "time": _time("When the operator saw it."),
                    }),
                },
            ),
            "crashLoop": _obj(
                "Failures counted toward the crash-loop fallback (docs/operator.md \"Crash-loop fallback\").",
                {
                    "checkpoint": _str("The checkpoint the failed pods were injected."),
                    "failures": {
                        "type": "array",
                        "description": "Failed attempts in a row on that checkpoint, oldest first.",
                        "maxItems": CRASH_LOOP_MAX,
                        "items": _obj(
                            "One failed attempt (a pod, or a trainer restart inside a pod).",
                            {
                                "attempt": _str("<pod uid>/<restart count> (a rank's pod: its resume epoch)."),
                                "pod": _str("Pod name."),
                                "container": _str("The container that failed."),
                                "exitCode": _int("Its exit code."),
                                "reason": _str("Its termination reason."),
                                "time": _time("When it was observed."),
                            },
                        ),
                    },
                    "fallbacks": _int("Fallbacks in a row without a newer commit.", minimum=0),
                    "held": {"type": "boolean", "description": "The threshold was reached with the fallbacks used "
                             "up: reported, nothing marked; cleared by a newer commit."},
                },
            ),
            "epoch": _obj(
                "The current resume epoch of a multi-rank run: every rank admitted into it resumes from its "
                "checkpoint (docs/store-protocol.md \"Resume epochs\").",
                {
                    "token": _str("KRESUME_EPOCH of its pods."),
                    "checkpoint": _str("Checkpoint id its ranks resume from (absent: a fresh start)."),
                    "url": _str("That checkpoint's URL."),
                    "name": _str("Its local name."),
                    "step": _int("Its step."),
                    "ranks": {"type": "array", "description": "Ranks admitted into it.", "items": {"type": "integer"}},
                    "worldSize": _int("World size of the run.", minimum=1),
                    "started": _time("When it started."),
                },
            ),
            "lastFallback": _obj(
                "The last checkpoint the operator marked bad after a crash loop.",
                {
                    "checkpoint": _str("The checkpoint marked bad."),
                    "next": _str("The checkpoint the next pods resume from (absent: none, a fresh start)."),
                    "reason": _str("The bad mark's reason."),
                    "time": _time("When it was marked."),
                    "marked": {"type": "boolean", "description": "The bad mark was written to the store."},
                },
            ),
            "history": {
                "type": "array",
                "description": f"Admissions of the run's pods, newest last (at most {HISTORY_MAX}).",
                "maxItems": HISTORY_MAX,
                "items": _obj(
                    "One admission.",
                    {
                        "pod": _str("Pod name (or generateName prefix at admission)."),
                        "resumedFrom": _str("URL injected, or none."),
                        "step": _int("Step of that checkpoint."),
                        "time": _time("Admission time."),
                        "disruption": _str("Why this pod ended by disruption (counted in restarts); absent while "
                                           "it runs or when it ended by itself."),
                    },
                ),
            },
            "conditions": {
                "type": "array",
                "description": "Standard conditions.",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "observedGeneration": _int("metadata.generation last acted on.", minimum=0),
            "kopf": {
                "type": "object",
                "description": "kopf's handler progress (written by the operator framework).",
                "x-kubernetes-preserve-unknown-fields": True,
            },
        },
    )
