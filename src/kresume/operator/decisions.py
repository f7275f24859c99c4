"""Pure decisions of the operator: no I/O, no kopf, dicts in and out (unit-tested densely).

* :func:`policy_name` — which ``CheckpointPolicy`` a pod names (always in its own namespace).
* :func:`native_sidecar` — sidecar mode from ``--native-sidecar`` and the API server version.
* :func:`disruption` — whether a pod ended by disruption, and why (``lastPreemption``).
* :func:`record_admission`, :func:`record_disruption`, :func:`record_latest` — the next
  ``CheckpointRun.status`` from the current one (bounded history; restarts = pods ended by disruption).
* :func:`run_spec` — the ``CheckpointRun.spec`` for a run.
* :func:`expired` — whether a run without live pods is past the TTL.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

from kresume import contract
from kresume.policy import DNS1123_SUBDOMAIN

#: ``--native-sidecar`` values.
NATIVE_MODES = ("auto", "always", "never")
#: First Kubernetes minor release where native sidecars (init containers with
#: ``restartPolicy: Always``) are on by default (beta, feature gate SidecarContainers: KEP-753).
NATIVE_SIDECAR_MIN = (1, 29)

#: Pod ``status.reason`` values that mean the pod was pushed out, not that it failed by itself:
#: kubelet eviction (``Evicted``), node-pressure/graceful node shutdown (``Shutdown``,
#: ``Terminated``), node controller (``NodeLost``), scheduler preemption (``Preempting``).
DISRUPTION_STATUS_REASONS = ("Evicted", "Preempting", "NodeLost", "Shutdown", "Terminated", "NodeShutdown")


class PolicyNameError(ValueError):
    """``kresume.dev/policy`` is not a valid object name (it can never name another namespace)."""


def policy_name(pod: dict[str, Any]) -> str:
    """The ``CheckpointPolicy`` name a pod asks for: ``kresume.dev/policy`` or ``default``.

    The policy is always looked up in the pod's namespace: a value with ``/`` (``ns/name``), ``..``
    or any other non-DNS-1123 character is refused, so no pod can reach another namespace's policy.

    Raises
    ------
    PolicyNameError
        The annotation is not a DNS-1123 subdomain of at most 253 characters.
    """
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    name = ann.get(contract.ANN_POLICY, contract.DEFAULT_POLICY_NAME)
    if not isinstance(name, str) or len(name) > 253 or not re.match(DNS1123_SUBDOMAIN, name):
        raise PolicyNameError(
            f"annotation {contract.ANN_POLICY}: {name!r} is not a CheckpointPolicy name; give the name of a "
            "policy in the pod's own namespace (lower-case a-z, 0-9, '-', '.'; no namespace prefix)"
        )
    return name


def server_version(version_info: dict[str, Any]) -> tuple[int, int]:
    """``(major, minor)`` from the API server's ``/version`` body (``{"major": "1", "minor": "20+"}``).

    Providers append ``+`` to the minor (GKE, EKS); it is dropped. Falls back to parsing
    ``gitVersion`` (``v1.29.3``); ``(0, 0)`` when nothing parses.
    """
    try:
        return int(str(version_info["major"]).rstrip("+")), int(str(version_info["minor"]).rstrip("+"))
    except (KeyError, TypeError, ValueError):
        m = re.match(r"v?(\d+)\.(\d+)", str(version_info.get("gitVersion", "")))
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def native_sidecar(mode: str, version: tuple[int, int]) -> bool:
    """True to inject the sidecar as a native sidecar (init container with ``restartPolicy: Always``).

    ``auto``: only when the server is ≥ 1.29 (:data:`NATIVE_SIDECAR_MIN`); older servers drop the
    field silently and the pod would hang on a never-ending init container (issue 4).

    Raises
    ------
    ValueError
        ``mode`` is not one of :data:`NATIVE_MODES`.
    """
    if mode not in NATIVE_MODES:
        raise ValueError(f"--native-sidecar: {mode!r}; choose one of {', '.join(NATIVE_MODES)}")
    if mode == "auto":
        return version >= NATIVE_SIDECAR_MIN
    return mode == "always"


def disruption(pod: dict[str, Any]) -> str | None:
    """Why ``pod`` ended by disruption, or ``None`` if it did not (yet).

    Rules, first match wins:

    1. condition ``DisruptionTarget`` with status ``True`` (Kubernetes ≥ 1.26, "Pod disruption
       conditions"): its ``reason`` (``PreemptionByScheduler``, ``EvictionByEvictionAPI``,
       ``DeletionByTaintManager``, ``DeletionByPodGC``, ``TerminationByKubelet``).
    2. ``status.reason`` in :data:`DISRUPTION_STATUS_REASONS` (kubelet eviction, node loss, node
       shutdown, preemption on older servers).
    3. ``metadata.deletionTimestamp`` set while the pod is ``Pending`` or ``Running``: someone deleted
       a live pod (a preemption by hand, a drain without the eviction API) → ``Deleted``.

    A pod that Succeeded or Failed by itself is not a disruption.
    """
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            return str(cond.get("reason") or "DisruptionTarget")
    reason = status.get("reason")
    if reason in DISRUPTION_STATUS_REASONS:
        return str(reason)
    if (pod.get("metadata") or {}).get("deletionTimestamp") and status.get("phase", "Pending") in ("Pending", "Running"):
        return "Deleted"
    return None


def is_live(pod: dict[str, Any]) -> bool:
    """True while ``pod`` may still train: not Succeeded/Failed and not being deleted."""
    phase = (pod.get("status") or {}).get("phase", "Pending")
    return phase not in ("Succeeded", "Failed") and not (pod.get("metadata") or {}).get("deletionTimestamp")


def now_iso(now: datetime | None = None) -> str:
    """RFC 3339 UTC timestamp with seconds precision (``2024-05-01T12:00:00Z``), as Kubernetes writes."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_spec(*, run: str, policy: str, url: str, source: str, group: str | None, rank: int | None) -> dict[str, Any]:
    """``CheckpointRun.spec`` (fields of the CRD; ``None`` values omitted)."""
    spec: dict[str, Any] = {"run": run, "policy": policy, "url": url, "source": source}
    if group is not None:
        spec["group"] = group
    if rank is not None:
        spec["rank"] = rank
    return spec


def admission_entry(pod: dict[str, Any], when: str) -> dict[str, Any]:
    """One ``status.history`` item from an injected pod's annotations: pod, resumedFrom, step, time."""
    meta = pod.get("metadata") or {}
    ann = meta.get("annotations") or {}
    entry: dict[str, Any] = {
        "pod": str(meta.get("name") or meta.get("generateName") or ""),
        "resumedFrom": str(ann.get(contract.ANN_RESUMED_FROM, "none")),
        "time": when,
    }
    step = ann.get(contract.ANN_RESUMED_STEP)
    if step is not None and str(step).isdigit():
        entry["step"] = int(step)
    return entry


def record_admission(status: dict[str, Any] | None, entry: dict[str, Any], *, limit: int) -> dict[str, Any] | None:
    """The next status after a pod of the run was created, or ``None`` when already recorded.

    ``history`` keeps the newest ``limit`` entries (oldest dropped). A pod already in history (an operator
    restart replays existing pods) changes nothing. ``restarts`` is not counted here (a pod replacing one that
    failed to start is no restart by disruption): :func:`record_disruption` counts it.
    """
    status = copy.deepcopy(status or {})
    history = list(status.get("history") or [])
    if any(h.get("pod") == entry["pod"] for h in history):
        return None
    history.append(entry)
    status["history"] = history[-limit:] if limit > 0 else []
    status["restarts"] = int(status.get("restarts", 0))
    return status


def record_disruption(status: dict[str, Any] | None, pod_name: str, reason: str, when: str,
                      created: str | None = None) -> dict[str, Any] | None:  # fmt: skip
    """The next status after pod ``pod_name`` of the run ended by disruption (:func:`disruption` gave ``reason``),
    or ``None`` when it is already recorded.

    ``restarts`` counts pods of the run that ended by disruption (preemption, eviction, node loss, deletion of a
    live pod), once per pod whatever order the watch events of N pods arrive in: the pod's ``history`` entry gets
    ``disruption: reason`` and a marked entry is never counted again. A pod that failed by itself (a command that
    cannot start, a crash) is not a disruption and is never counted (issue 12: start failures showed as restarts).
    A pod missing from ``history``: counted unless it is ``lastPreemption`` already, or was ``created`` before the
    oldest entry (trimmed from the window: it was counted when it happened). ``lastPreemption`` is this pod.
    """
    status = copy.deepcopy(status or {})
    history = [dict(h) for h in status.get("history") or []]
    mine = next((h for h in history if h.get("pod") == pod_name), None)
    if mine is not None:
        if mine.get("disruption"):
            return None
        mine["disruption"] = reason
        status["history"] = history
    else:
        if (status.get("lastPreemption") or {}).get("pod") == pod_name:
            return None
        oldest = min((str(h.get("time") or "") for h in history), default="")
        if created and oldest and created < oldest:
            return None
    status["restarts"] = int(status.get("restarts", 0)) + 1
    status["lastPreemption"] = {"pod": pod_name, "reason": reason, "time": when}
    return status


def record_latest(status: dict[str, Any] | None, latest: dict[str, Any] | None, count: int | None, *,
                  pending: dict[str, Any] | None | bool = False) -> dict[str, Any] | None:
    """The next status with ``latest`` (and ``checkpoints`` when known), or ``None`` if unchanged.

    ``pending`` (:func:`pending_summary`): ``status.pending`` — a dict sets it, None removes it, False (the
    store cannot say) leaves it as it is.
    """
    status = copy.deepcopy(status or {})
    changed = False
    if latest is not None and status.get("latest") != latest:
        status["latest"] = latest
        changed = True
    if count is not None and status.get("checkpoints") != count:
        status["checkpoints"] = count
        changed = True
    if pending is not False and status.get("pending") != pending:
        if pending is None:
            status.pop("pending", None)
        else:
            status["pending"] = pending
        changed = True
    return status if changed else None


def pending_summary(steps: list[int] | None) -> dict[str, Any] | None | bool:
    """``status.pending`` from the steps waiting for ranks (newest first): ``{"step": newest, "count": n}``;
    None when none waits; False when the store cannot say (``steps`` None)."""
    if steps is None:
        return False
    return {"step": steps[0], "count": len(steps)} if steps else None


def waiting_for_ranks(pending: list[int] | None, latest_step: int | None) -> list[int] | None:
    """The pending steps that still matter: newer than the newest whole step (an older step a dead epoch left
    uncommitted is never resumed; retention deletes it as an orphan). ``None`` stays ``None``."""
    if pending is None:
        return None
    return [s for s in pending if latest_step is None or s > latest_step]


def record_world_size(status: dict[str, Any] | None, world_size: int) -> dict[str, Any] | None:
    """The next status with ``worldSize`` (pods of the run), or ``None`` when unchanged."""
    status = copy.deepcopy(status or {})
    if status.get("worldSize") == world_size:
        return None
    status["worldSize"] = world_size
    return status


def last_activity(run_obj: dict[str, Any]) -> str:
    """The newest RFC 3339 time on a ``CheckpointRun``: creation, admissions, preemption, commit."""
    status = run_obj.get("status") or {}
    times = [str((run_obj.get("metadata") or {}).get("creationTimestamp") or "")]
    times += [str(h.get("time") or "") for h in status.get("history") or []]
    times.append(str((status.get("lastPreemption") or {}).get("time") or ""))
    times.append(str((status.get("latest") or {}).get("committedAt") or ""))
    return max(t for t in times)  # RFC 3339 UTC strings sort in time order


def expired(run_obj: dict[str, Any], *, ttl_seconds: float, now: datetime, live: bool) -> bool:
    """True when a run has no live pod and its last activity is older than ``ttl_seconds``.

    ``ttl_seconds <= 0`` disables expiry (runs are kept until deleted by hand).
    """
    if ttl_seconds <= 0 or live:
        return False
    when = parse_time(last_activity(run_obj) or "")
    if when is None:
        return False
    return (now - when).total_seconds() > ttl_seconds


def parse_time(value: str) -> datetime | None:
    """An ISO-8601 / RFC 3339 time (``Z`` or offset; naive means UTC) as an aware datetime, or None."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
