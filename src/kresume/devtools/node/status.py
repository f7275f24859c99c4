"""Pure builders of the pod status the local node agent reports through ``pods/status``.

Shapes are core/v1 ``PodStatus`` / ``ContainerStatus`` / ``PodCondition`` as JSON (camelCase keys,
RFC 3339 times). ``DisruptionTarget`` and its reasons are from the Kubernetes docs "Pod disruption
conditions" (1.26+): ``PreemptionByScheduler`` (named ``PreemptionByKubeScheduler`` before 1.28),
``DeletionByTaintManager``, ``EvictionByEvictionAPI``, ``TerminationByKubelet``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

HOST_IP = "127.0.0.1"
"""Every pod shares the host network on the dev node: podIP = hostIP = loopback."""
DISRUPTION_TARGET = "DisruptionTarget"
PREEMPTION_REASON = "PreemptionByScheduler"
KILL_REASON = "TerminationByKubelet"


def rfc3339(t: float | None) -> str | None:
    """Seconds since the epoch as ``2026-11-29T10:00:00Z`` (the API's second resolution); None stays None."""
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerState:
    """What the agent knows about one container; ``to_status`` renders a ``ContainerStatus``."""

    name: str
    image: str = ""
    state: str = "waiting"
    """``waiting`` | ``running`` | ``terminated``."""
    reason: str = "ContainerCreating"
    message: str = ""
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    restart_count: int = 0
    pid: int | None = None
    last_terminated: dict[str, Any] | None = None
    log_path: str = ""

    def terminated(self) -> dict[str, Any]:
        """The ``state.terminated`` dict of the current run."""
        return {k: v for k, v in {
            "exitCode": self.exit_code if self.exit_code is not None else 137, "reason": self.reason,
            "message": self.message or None, "startedAt": rfc3339(self.started_at),
            "finishedAt": rfc3339(self.finished_at), "containerID": self.container_id,
        }.items() if v is not None}  # fmt: skip

    @property
    def container_id(self) -> str | None:
        """``kresume-dev://<pid>`` while or after it ran (the runtime://id shape kubelet reports)."""
        return f"kresume-dev://{self.pid}" if self.pid else None

    def to_status(self) -> dict[str, Any]:
        """core/v1 ``ContainerStatus``."""
        if self.state == "running":
            state: dict[str, Any] = {"running": {"startedAt": rfc3339(self.started_at)}}
        elif self.state == "terminated":
            state = {"terminated": self.terminated()}
        else:
            state = {"waiting": {k: v for k, v in {"reason": self.reason, "message": self.message or None}.items()
                                 if v}}  # fmt: skip
        out: dict[str, Any] = {
            "name": self.name, "image": self.image or "ignored", "imageID": "", "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
            "ready": self.state == "running", "started": self.state == "running",
            "restartCount": self.restart_count,
        }  # fmt: skip
        if self.container_id:
            out["containerID"] = self.container_id
        return out


@dataclass
class PodState:
    """Pod-level state: phase, conditions by type, start time, reason/message."""

    phase: str = "Pending"
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    start_time: float | None = None
    reason: str | None = None
    message: str | None = None

    def set_condition(self, type_: str, status: bool, reason: str | None = None, message: str | None = None,
                      now: float | None = None) -> None:  # fmt: skip
        """Set a condition; ``lastTransitionTime`` changes only when the status flips (API convention)."""
        value = "True" if status else "False"
        old = self.conditions.get(type_)
        when = old["lastTransitionTime"] if old and old["status"] == value else rfc3339(now)
        self.conditions[type_] = {k: v for k, v in {
            "type": type_, "status": value, "reason": reason, "message": message,
            "lastProbeTime": None, "lastTransitionTime": when,
        }.items() if v is not None or k == "lastProbeTime"}  # fmt: skip


def pod_status(pod: PodState, init: list[ContainerState], regular: list[ContainerState]) -> dict[str, Any]:
    """core/v1 ``PodStatus`` for ``pods/status`` (sent as a strategic merge patch: conditions merge by type)."""
    status: dict[str, Any] = {
        "phase": pod.phase, "hostIP": HOST_IP, "podIP": HOST_IP, "podIPs": [{"ip": HOST_IP}],
        "conditions": list(pod.conditions.values()), "qosClass": "BestEffort",
        "containerStatuses": [c.to_status() for c in regular],
    }  # fmt: skip
    if init:
        status["initContainerStatuses"] = [c.to_status() for c in init]
    if pod.start_time is not None:
        status["startTime"] = rfc3339(pod.start_time)
    if pod.reason:
        status["reason"] = pod.reason
    if pod.message:
        status["message"] = pod.message
    return status


def final_phase(regular: list[ContainerState]) -> str:
    """``Succeeded`` when every regular container exited 0, else ``Failed`` (kubelet's rule for a pod whose
    containers will not restart)."""
    return "Succeeded" if all(c.state == "terminated" and c.exit_code == 0 for c in regular) else "Failed"
