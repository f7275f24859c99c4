"""The ``CheckpointPolicy`` spec as a pydantic model, and the one rule that builds a run's URL.

A policy (DESIGN.md "CRDs") says where a namespace's runs are stored and how the sidecar runs.
Field names are the Kubernetes camelCase ones (``keepLast``); Python code reads the snake_case
attributes (``policy.retention.keep_last``). The CRD's OpenAPI schema
(:mod:`kresume.crds`) mirrors this model and is built from the same constants, so the API server
rejects what this model rejects (scheme, ``keepLast < 1``, malformed quantities).

Example::

    policy = Policy.model_validate({"storage": "s3://bucket/prefix", "retention": {"keepLast": 5}})
    run_url(policy, "team-a", "train-0")  # -> "s3://bucket/prefix/team-a/train-0/"
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator
from pydantic.alias_generators import to_camel

from kresume.store import errors, urls

#: URL schemes a policy may store to (fsspec protocols of s3fs, gcsfs, adlfs and fsspec's own).
ALLOWED_SCHEMES: tuple[str, ...] = urls.POLICY_SCHEMES

#: The storage URL rule as the CRD schema's and the chart schema's pattern: the policy variant of
#: the one URL rule, :func:`kresume.store.urls.check_url` (an allowed scheme, ``://``, a bucket for
#: bucket schemes, no whitespace, ``?``, ``#`` or ``..`` segment).
STORAGE_PATTERN = urls.STORAGE_PATTERN

#: A Kubernetes resource quantity as a string (k8s.io/apimachinery/pkg/api/resource, the regex its
#: OpenAPI docs give): ``500m``, ``1.5Gi``, ``128974848``, ``129e6``.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

#: DNS-1123 label (namespace names): lower-case alphanumerics and ``-``, at most 63 characters.
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: DNS-1123 subdomain (object names, so a run name is also a valid ``CheckpointRun`` name):
#: dot-separated labels, at most 253 characters. It cannot contain ``/``, ``:`` or ``..``.
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MAX_NAMESPACE_LEN = 63
MAX_RUN_LEN = 253

#: ``imagePullPolicy`` values of core/v1 Container.
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields rejected (a typo is an error)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Retention(_Model):
    """Remote retention applied by the sidecar after each commit (store prune rules).

    keep_last : int (default 5), ``keepLast`` — keep the newest N committed checkpoints, N ≥ 1.
    keep_every : int or None, ``keepEvery`` — also keep every checkpoint whose step is a multiple
        of K (K ≥ 1); ``None`` keeps none extra.
    """

    keep_last: int = Field(5, ge=1)
    keep_every: int | None = Field(None, ge=1)


#: A quantity as an integer (``2``) or a string (``"100m"``, ``"0.5"``): the CRD schema's
#: ``x-kubernetes-int-or-string``, so a bare ``0.5`` or a boolean is refused here as there.
Quantity = StrictInt | StrictStr


class Resources(_Model):
    """core/v1 ResourceRequirements for the sidecar: ``{"cpu": "100m", "memory": "256Mi"}``."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, value: dict[str, Quantity], info: Any) -> dict[str, Quantity]:
        for name, qty in value.items():
            if isinstance(qty, bool) or not re.match(QUANTITY_PATTERN, str(qty)):
                raise ValueError(
                    f"sidecar.resources.{info.field_name}.{name}: {qty!r} is not a Kubernetes "
                    "quantity (examples: 100m, 0.5, 256Mi, 1Gi)"
                )
        return value


class EnvVar(_Model):
    """One core/v1 EnvVar; ``valueFrom`` is passed through unchecked (the API server checks it)."""

    name: str = Field(min_length=1)
    value: str | None = None
    value_from: dict[str, Any] | None = None


class Sidecar(_Model):
    """How the sidecar container runs.

    image : str or None — image of ``kresume sidecar``; ``None`` uses the operator's own image.
    image_pull_policy : "Always" | "IfNotPresent" | "Never" | None (``imagePullPolicy``).
    resources : Resources (default: none here; the injected containers then get the operator's
        ``--sidecar-resources``, :data:`kresume.injection.DEFAULT_RESOURCES` unless changed).
    concurrency : int (default 4) — parallel uploads, ≥ 1.
    grace_seconds : int or None (``graceSeconds``) — seconds to keep committing after SIGTERM;
        ``None`` derives it from the pod's ``terminationGracePeriodSeconds`` (see injection).
    extra_args : list of str (``extraArgs``) — appended to ``kresume sidecar``.
    extra_env : list of EnvVar (``extraEnv``) — appended to the sidecar's env.
    """

    image: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    resources: Resources = Field(default_factory=Resources)
    concurrency: int = Field(4, ge=1)
    grace_seconds: int | None = Field(None, ge=0)
    extra_args: list[str] = Field(default_factory=list)
    extra_env: list[EnvVar] = Field(default_factory=list)


#: An absolute path of one or more non-empty segments, no trailing ``/`` (``.``/``..`` refused by the validator).
HOST_PATH_PATTERN = r"^/[^/\x00]+(/[^/\x00]+)*$"


class NodeCache(_Model):
    """The node-local tier (issue 15 item 3; docs/preemption.md "Node-local tier").

    enabled : bool (default False) — keep every committed checkpoint on the node too (the sidecar writes it as it
        commits) and restore from there when the replacement pod lands on the same node; turns on the restore init
        step for the run's pods.
    host_path : str (``hostPath``, default ``/var/lib/kresume/cache``) — the node folder (a ``hostPath`` volume of
        type ``DirectoryOrCreate``), shared by every pod of the node that uses it; absolute and normalised.
    max_bytes : int (``maxBytes``, default 20 GiB) — the cache's cap in bytes; oldest entries are evicted first,
        never a run's newest; a checkpoint larger than the cap is not kept.
    """

    enabled: bool = False
    host_path: str = Field("/var/lib/kresume/cache", pattern=HOST_PATH_PATTERN, max_length=1024)
    max_bytes: int = Field(20 * 2**30, ge=1)

    @field_validator("host_path")
    @classmethod
    def _host_path(cls, value: str) -> str:
        if any(part in (".", "..") for part in value.split("/")):
            raise ValueError(f"nodeCache.hostPath: {value!r} must be absolute and normalised (no '.' or '..')")
        return value


#: Highest ``crashLoop.failures`` (the failures counted are kept in ``CheckpointRun.status``).
MAX_CRASH_LOOP_FAILURES = 20


class CrashLoop(_Model):
    """The crash-loop fallback (issue 11 item 2; DESIGN.md invariant 2, docs/operator.md "Crash-loop fallback").

    failures : int (default 2) — pods (or restarts of a trainer inside one pod) that must fail in a row after
        being injected the same checkpoint, with no newer commit in between, before the operator marks that
        checkpoint bad and the next pod resumes from the one before; 0 turns the fallback off.
    max_fallbacks : int (default 1, ``maxFallbacks``) — fallbacks in a row without a newer commit; once used up,
        a further crash loop is reported (Warning Event) but marks nothing (a trainer that crashes for a reason of
        its own must not walk the run back checkpoint by checkpoint).
    """

    failures: int = Field(2, ge=0, le=MAX_CRASH_LOOP_FAILURES)
    max_fallbacks: int = Field(1, ge=0)


class Policy(_Model):
    """``CheckpointPolicy.spec``.

    storage : str — URL base, ``<scheme>://…`` with a scheme in :data:`ALLOWED_SCHEMES`; a
        trailing ``/`` is dropped. Runs live at ``<storage>/<namespace>/<run>/``.
    storage_options : dict (``storageOptions``) — passed to ``fsspec.url_to_fs(url, **options)``
        (e.g. ``{"endpoint_url": "http://minio:9000"}``); put secrets in ``credentialsSecret``.
    credentials_secret : str or None (``credentialsSecret``) — a Secret in the pod's namespace;
        every key becomes an env var of the sidecar and restore containers (``envFrom``), e.g.
        ``AWS_ACCESS_KEY_ID``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_CONNECTION_STRING``.
    retention : Retention; sidecar : Sidecar.
    restore : bool (default False) — add the restore init step to every pod (the pod annotation
        ``kresume.dev/restore: "true"`` turns it on for one pod).
    resolve_timeout_seconds : float (default 2, ``resolveTimeoutSeconds``) — the webhook's budget
        for finding the newest committed checkpoint, > 0 and ≤ 8 (the webhook times out at 10 s).
    crash_loop : CrashLoop (``crashLoop``) — when the operator marks a checkpoint that keeps failing bad.
    epoch_join_seconds : float (default 60, ``epochJoinSeconds``) — a multi-rank run's resume epoch stays open for
        ranks not admitted yet this long after it started, and for as long as a pod of it is live
        (docs/store-protocol.md "Resume epochs"); > 0, ≤ 86400.
    node_cache : NodeCache (``nodeCache``) — the node-local tier (off by default).

    Raises
    ------
    pydantic.ValidationError
        On any invalid field; the message names the field and the allowed values.
    """

    storage: str
    storage_options: dict[str, Any] = Field(default_factory=dict)
    credentials_secret: str | None = Field(None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    retention: Retention = Field(default_factory=Retention)
    sidecar: Sidecar = Field(default_factory=Sidecar)
    restore: bool = False
    resolve_timeout_seconds: float = Field(2.0, gt=0, le=8)
    crash_loop: CrashLoop = Field(default_factory=CrashLoop)
    epoch_join_seconds: float = Field(60.0, gt=0, le=86400)
    node_cache: NodeCache = Field(default_factory=NodeCache)

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        try:
            urls.check_url(value, policy=True)
        except errors.BadURL as exc:
            raise ValueError(
                f"storage: {value!r}: {exc.detail} ({exc.fix}); a policy's storage is "
                f"<scheme>://<bucket-or-path> with scheme one of {', '.join(ALLOWED_SCHEMES)}, "
                "no whitespace, '?', '#' or '..' segment"
            ) from None
        stripped = value.rstrip("/")
        # "file:///" stripped would lose the root; keep the scheme's separator intact.
        return stripped if not stripped.endswith(":/") and not stripped.endswith(":") else value

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Policy:
        """Build from a ``CheckpointPolicy`` object's ``spec`` dict (camelCase keys)."""
        return cls.model_validate(spec)

    def to_spec(self) -> dict[str, Any]:
        """The camelCase ``spec`` dict, defaults included, ``None`` fields omitted."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class RunNameError(ValueError):
    """A namespace or run name that could escape or alias the policy's storage base."""


def check_namespace(namespace: str) -> str:
    """Return ``namespace`` if it is a DNS-1123 label (≤ 63 chars), else raise :class:`RunNameError`."""
    if not isinstance(namespace, str) or not namespace:
        raise RunNameError("namespace: empty; a pod's namespace is required to build its run URL")
    if len(namespace) > MAX_NAMESPACE_LEN or not re.match(DNS1123_LABEL, namespace):
        raise RunNameError(
            f"namespace {namespace!r}: must be a DNS-1123 label (lower-case a-z, 0-9, '-', "
            f"at most {MAX_NAMESPACE_LEN} characters)"
        )
    return namespace


def check_run_name(run: str, *, field: str = "run") -> str:
    """Return ``run`` if it is a DNS-1123 subdomain (≤ 253 chars), else raise :class:`RunNameError`.

    The rule is the one for Kubernetes object names (so the run name is also the
    ``CheckpointRun`` name); it excludes ``/``, ``..``, ``:`` (URL schemes), upper case and spaces.
    ``field`` names the source in the message (e.g. ``annotation kresume.dev/run``).
    """
    if not isinstance(run, str) or not run:
        raise RunNameError(f"{field}: empty run name")
    if len(run) > MAX_RUN_LEN:
        raise RunNameError(f"{field}: run name is {len(run)} characters; at most {MAX_RUN_LEN}")
    if not re.match(DNS1123_SUBDOMAIN, run):
        raise RunNameError(
            f"{field}: {run!r} is not a valid run name: use lower-case a-z, 0-9, '-' and '.' "
            "(a DNS-1123 subdomain; no '/', '..', ':', spaces or upper case)"
        )
    return run


def run_url(policy: Policy, namespace: str, run: str) -> str:
    """The run's store URL: ``<policy.storage>/<namespace>/<run>/`` (always ends with ``/``).

    Both names are checked (:func:`check_namespace`, :func:`check_run_name`) so the result is
    always strictly inside the policy's base (DESIGN.md "CRDs": annotations can never point
    outside the policy's base).

    Raises
    ------
    RunNameError
        When the namespace or run name is not safe; the message names which and why.
    """
    check_namespace(namespace)
    check_run_name(run)
    base = policy.storage if policy.storage.endswith("/") else policy.storage + "/"
    return f"{base}{namespace}/{run}/"
