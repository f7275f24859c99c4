"""Inputs and outputs of :func:`kresume.injection.inject` (frozen, so a call is a pure function)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Seconds subtracted from the pod's ``terminationGracePeriodSeconds`` to get the sidecar's
#: commit budget after SIGTERM: leaves time to write the manifest/pointer and exit before SIGKILL.
GRACE_MARGIN_SECONDS = 5
#: Kubernetes' default ``terminationGracePeriodSeconds`` (core/v1 PodSpec).
DEFAULT_TERMINATION_GRACE_SECONDS = 30
#: core/v1 ResourceRequirements of the injected sidecar and restore containers when the policy sets none
#: (``spec.sidecar.resources`` replaces them as a whole; the operator's ``--sidecar-resources`` and the chart's
#: ``operator.sidecarResources`` change them). Measured (bench/RESULTS.md, wait4 ru_maxrss): sidecar peak RSS
#: 123 MiB uploading a 4 GB checkpoint, restore 78 MiB; the request leaves ~50 % headroom, the limit 4x, so the
#: kernel kills a runaway sidecar, never a normal one. No CPU limit: throttling would only slow commits.
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "192Mi"},
    "limits": {"memory": "512Mi"},
}


class InjectionError(ValueError):
    """The pod cannot be injected as asked (bad annotation, unknown container or volume).

    ``reason`` is a CamelCase word for the Warning event; the message names the annotation or
    field and the fix. The webhook admits such a pod unchanged.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Resume:
    """The committed checkpoint a pod resumes from (the store protocol's ``latest``).

    url : str — the URL a trainer loads, e.g. ``s3://b/p/ns/run/checkpoints/<id>/epoch=3-step=400.ckpt``
        (a folder URL for folder checkpoints).
    checkpoint : str — the checkpoint id in the run store (``kresume restore --checkpoint <id>``).
    name : str — the checkpoint's local file/folder name (``epoch=3-step=400.ckpt``); with restore
        it lands at ``<checkpoint dir>/<name>``.
    step : int or None — training step from the manifest, when known.
    """

    url: str
    checkpoint: str
    name: str
    step: int | None = None

    @classmethod
    def from_resolved(cls, resolved: Any) -> Resume:
        """From the store's ``kresume.store.selection.Resolved`` (``RunStore.latest()``)."""
        return cls(
            url=resolved.url,
            checkpoint=resolved.checkpoint_id,
            name=resolved.manifest.name,
            step=resolved.step,
        )


@dataclass(frozen=True)
class RankEnv:
    """A multi-rank pod's place: ``rank`` in ``0..world_size-1`` and its resume ``epoch`` token
    (``KRESUME_RANK``, ``KRESUME_WORLD_SIZE``, ``KRESUME_EPOCH``; docs/store-protocol.md "Resume epochs")."""

    rank: int
    world_size: int
    epoch: str


@dataclass(frozen=True)
class Injection:
    """The result of :func:`kresume.injection.inject`.

    pod : dict — a NEW pod dict (the input is never modified).
    warnings : tuple of str — one line each, for Warning events (user env overriding ours, …).
    run_url : str — the run's store URL written into the pod.
    changed : bool — False when the pod already carried the injection marker and was returned as is.
    """

    pod: dict[str, Any]
    warnings: tuple[str, ...] = ()
    run_url: str = ""
    changed: bool = True
