"""Operator settings: one frozen dataclass per concern (kopf's ``OperatorSettings`` style).

Every field's docstring gives its unit and default. ``kresume operator`` (``cli.py``) fills them
from flags and ``KRESUME_*`` env; tests build them directly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from kresume.injection.params import DEFAULT_RESOURCES

#: Image used for the sidecar/restore containers when neither the policy nor the flag sets one.
DEFAULT_SIDECAR_IMAGE = "ghcr.io/kresume/kresume:0.1.0"


@dataclass(frozen=True)
class WebhookSettings:
    """The HTTPS admission server (kopf ``WebhookServer``)."""

    host: str = "0.0.0.0"
    """Address to listen on."""
    port: int = 9443
    """TCP port; the chart's Service targets it. The handler path is ``/inject-pod``."""
    cert_file: str | None = None
    """PEM serving certificate (chart: /etc/kresume/tls/tls.crt). kopf re-reads it when it changes."""
    key_file: str | None = None
    """PEM private key (chart: /etc/kresume/tls/tls.key). Without cert and key a self-signed pair for
    127.0.0.1/localhost is generated in a temp dir (development only; its CA is logged)."""


@dataclass(frozen=True)
class ScopeSettings:
    """Which namespaces are served and whether several replicas coordinate."""

    namespaces: tuple[str, ...] = ()
    """Namespaces (kopf patterns, e.g. ``team-*``) to watch; empty = cluster-wide."""
    peering: str | None = None
    """kopf peering object name: replicas with the same name elect one active watcher. ``None`` runs
    standalone (one replica). The webhook is served by every replica either way."""


@dataclass(frozen=True)
class ProbeSettings:
    """Health and metrics endpoints."""

    liveness_port: int = 8080
    """kopf liveness endpoint ``http://0.0.0.0:<port>/healthz``; 0 disables it."""
    metrics_port: int = 9090
    """Prometheus ``/metrics`` on this port; 0 disables it."""


@dataclass(frozen=True)
class InjectionSettings:
    """How pods are mutated."""

    sidecar_image: str = DEFAULT_SIDECAR_IMAGE
    """Image of the sidecar and restore containers, unless the policy names one."""
    native_sidecar: str = "auto"
    """``auto`` (native sidecar when the API server is ≥ 1.29), ``always`` or ``never``."""
    sidecar_resources: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(DEFAULT_RESOURCES))
    """core/v1 ResourceRequirements of the sidecar and restore containers when the policy sets none
    (``kresume.injection.DEFAULT_RESOURCES``: sized from the measured peak RSS)."""


@dataclass(frozen=True)
class ResolutionSettings:
    """Finding a run's newest committed checkpoint at admission."""

    timeout: float = 2.0
    """Hard budget of one admission's store lookup, seconds (a policy's ``resolveTimeoutSeconds`` may
    lower it). Well under the webhook's ``timeoutSeconds`` (5 in the chart): the rest is for the API
    server round trip."""
    refresh_interval: float = 20.0
    """Seconds between background refreshes of live runs (runs with a pod that is not finished):
    keeps the result cache, the store connections and ``CheckpointRun.status.latest`` fresh."""
    refresh_rate: float = 25.0
    """Live runs refreshed per second at most (each refresh: ~3-4 store requests, a few ms of CPU); a round of N
    live runs takes at least N / rate seconds, so with more than ``refresh_interval * refresh_rate`` live runs
    (500 at the defaults) each is refreshed less often than every ``refresh_interval``. 0: unpaced."""
    refresh_timeout: float = 15.0
    """Budget of one background refresh of one run, seconds."""
    quiet_max_age: float = 30.0
    """Seconds a cached answer of a *quiet* run (no pod of it may be committing; see
    ``kresume.operator.activity``) is used for admissions without asking the store, when its lookup
    started after the run became quiet. Bounds how long a change made by hand while the run has no
    pod (``kresume commit``, ``prune``) can go unseen; a ``mark-bad`` is seen at once (the bad mark of
    the checkpoint to inject is read before every such answer). 0 always asks the store. Unused
    with ``peering`` (a passive replica's pod watch is paused, so it cannot know a run is quiet)."""
    admission_grace: float = 60.0
    """Seconds an admitted pod keeps its run busy (not quiet) while the pod watch has not shown it
    yet; after that the pod is taken to have been refused by the API server."""
    workers: int = 8
    """Threads for admissions' store lookups and bad-mark reads (a lookup that outlives its budget keeps its
    thread until the store answers; the pool bounds how many can pile up). Background store work (refreshes
    of live runs, the crash-loop fallback) has ``workers // 2`` (at least 2) threads of its own, so it never
    delays an admission."""
    secret_ttl: float = 60.0
    """Seconds a credentials Secret read is reused before it is read again."""


@dataclass(frozen=True)
class RunSettings:
    """``CheckpointRun`` bookkeeping."""

    history_limit: int = 20
    """``status.history`` keeps this many newest admissions (the CRD allows at most 50)."""
    ttl_seconds: float = 0.0
    """Delete a ``CheckpointRun`` this many seconds after its last activity when it has no live pod;
    0 keeps runs until deleted by hand (``kubectl delete ckptrun``)."""
    event_window: float = 300.0
    """Pods created longer ago than this, seconds, get no Resumed/FreshStart events when the operator
    (re)starts and lists them, so a restart does not repeat old events."""
    event_rate: float = 5.0
    """Normal admission Events (``Resumed``/``FreshStart``) posted per second once ``event_burst`` are spent
    (a token bucket for the whole operator); the rest are not posted and counted in
    ``kresume_events_dropped_total``. Warnings are always posted. 0 posts every one."""
    event_burst: int = 50
    """Normal admission Events posted at once before ``event_rate`` applies."""
    status_delay: float = 0.25
    """Seconds a run's first pending status change (history, restarts, world size, …) waits for others, so
    that the pods of a burst are recorded in one write (``kresume.operator.statuswriter``); status lags pod
    events by about this much."""


@dataclass(frozen=True)
class OperatorConfig:
    """All settings of ``kresume operator``."""

    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    scope: ScopeSettings = field(default_factory=ScopeSettings)
    probes: ProbeSettings = field(default_factory=ProbeSettings)
    injection: InjectionSettings = field(default_factory=InjectionSettings)
    resolution: ResolutionSettings = field(default_factory=ResolutionSettings)
    runs: RunSettings = field(default_factory=RunSettings)
