"""What the pod watch records for an opted-in pod: Events once the pod exists, ``CheckpointRun`` status.

* :func:`post_admission_events` — the admission's findings as Events on the pod (it had no uid at admission):
  ``Resumed``/``FreshStart``/``ResolveFailed`` from its annotations, Warnings held in :class:`~kresume.operator.
  notes.Notes`. :class:`Seen` keeps them from being posted twice, :func:`recent` from being repeated when the
  operator restarts and lists old pods, :class:`EventBudget` the Normal ones from flooding the API server in a
  burst (Warnings are always posted).
* :func:`record` — ``status.history`` (admission), ``restarts``/``lastPreemption`` (disruption).
* :func:`pod_run_url` — the run URL injected into the pod's sidecar.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf

from kresume import contract, identity
from kresume.operator import admission, decisions, metrics, statuswriter

logger = logging.getLogger(__name__)


def pod_run_url(pod: dict[str, Any]) -> str | None:
    """The run URL injected into the sidecar's env (``KRESUME_RUN_URL``)."""
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if c.get("name") == contract.SIDECAR_CONTAINER_NAME:
            for e in c.get("env") or []:
                if e.get("name") == contract.ENV_RUN_URL and e.get("value"):
                    return str(e["value"])
    return None


def recent(pod: dict[str, Any], window: float) -> bool:
    when = decisions.parse_time(str((pod.get("metadata") or {}).get("creationTimestamp") or ""))
    if when is None:
        return True
    return (datetime.now(UTC) - when).total_seconds() <= window


class Seen:
    """Bounded set of pod uids whose admission Events were posted (an LRU of ``limit`` entries)."""

    def __init__(self, limit: int = 20000) -> None:
        self._items: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def add(self, uid: str) -> bool:
        """Record ``uid``; False when it was already there."""
        if uid in self._items:
            return False
        self._items[uid] = None
        while len(self._items) > self._limit:
            self._items.popitem(last=False)
        return True


class EventBudget:
    """A token bucket for the Normal admission Events (``Resumed``/``FreshStart``): ``burst`` at once, then
    ``rate`` per second. Each Event is an API write; after a mass preemption a burst of N replacement pods
    would add N writes while the API server admits the pods. What a dropped Event said stays on the pod (its
    ``kresume.dev/resumed-from`` annotation) and in ``CheckpointRun.status.history``; drops are counted
    (``kresume_events_dropped_total``) and logged once per ``log_every`` seconds. The rule of client-go's
    EventCorrelator spam filter (a token bucket per source), with a budget for the whole operator. ``rate`` 0
    or less: no limit. Event loop only."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 log_every: float = 10.0) -> None:
        self.rate, self.burst = rate, max(1, burst)
        self._clock = clock
        self._tokens = float(self.burst)
        self._at = clock()
        self._log_every = log_every
        self._logged_at: float | None = None
        self.dropped = 0

    def take(self) -> bool:
        """True when one Event may be posted now (a token was taken); False: drop it (counted)."""
        if self.rate <= 0:
            return True
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.dropped += 1
        metrics.EVENTS_DROPPED.inc()
        if self._logged_at is None or now - self._logged_at >= self._log_every:
            self._logged_at = now
            logger.info("admission Events over %g/s (burst %d): %d Normal Event(s) not posted so far; the pods' "
                        "annotations and CheckpointRun history still say where each resumed from",
                        self.rate, self.burst, self.dropped)
        return False


def sidecar_world_size(pod: dict[str, Any]) -> int:
    """The world size injected into the pod's sidecar (``KRESUME_WORLD_SIZE``), 1 for a single-rank run."""
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if c.get("name") == contract.SIDECAR_CONTAINER_NAME:
            for e in c.get("env") or []:
                if e.get("name") == contract.ENV_WORLD_SIZE and str(e.get("value") or "").isdigit():
                    return max(1, int(e["value"]))
    return 1


def has_sidecar(pod: dict[str, Any]) -> bool:
    """True when kresume's sidecar is among the pod's containers (init or regular)."""
    spec = pod.get("spec") or {}
    return any(c.get("name") == contract.SIDECAR_CONTAINER_NAME
               for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])])


#: The Warning on an opted-in pod kresume's webhook never saw.
NOT_INJECTED = ("the pod has the label {label}=true but kresume's webhook never saw it (the operator was down, "
                "or the API server gave up on the webhook: failurePolicy Ignore admits pods unchanged); kresume is "
                "off for this pod: no sidecar, so nothing it writes is committed, and no resume. Delete it once the "
                "operator runs again (its controller recreates it through the webhook)")


def post_admission_events(body: Any, pod: dict[str, Any], state: admission.State, run: str | None) -> None:
    """Events for a pod that just appeared (first watch event): the admission's held Warnings, then Resumed /
    FreshStart / ResolveFailed from its annotations; or, for an opted-in pod that is not injected and that the
    admission left no note about, ``KresumeNotInjected`` (and ``kresume_uninjected_pods_total``)."""
    meta = pod.get("metadata") or {}
    ann = meta.get("annotations") or {}
    notes = state.notes.pop(meta.get("namespace") or "", admission.note_key(pod, run))
    for note in notes:
        kopf.event(body, type="Warning", reason=note.reason, message=note.message)
    if contract.ANN_INJECTED not in ann:
        if not notes and not has_sidecar(pod):
            metrics.UNINJECTED_PODS.inc()
            kopf.event(body, type="Warning", reason="KresumeNotInjected",
                       message=NOT_INJECTED.format(label=contract.LABEL_INJECT))
        return
    resumed = ann.get(contract.ANN_RESUMED_FROM, "none")
    budget: EventBudget | None = getattr(state, "events", None)
    if budget is None or budget.take():
        if resumed and resumed != "none":
            step = ann.get(contract.ANN_RESUMED_STEP)
            kopf.event(body, type="Normal", reason="Resumed",
                       message=f"run {run}: resuming from {resumed}" + (f" (step {step})" if step else ""))
        else:
            kopf.event(body, type="Normal", reason="FreshStart",
                       message=f"run {run}: no committed checkpoint; starting fresh")
    error = ann.get(contract.ANN_RESOLVE_ERROR)
    if error:
        kopf.event(body, type="Warning", reason="ResolveFailed",
                  message=f"newest checkpoint not confirmed by the store ({error}); injected the last known value")


async def record(pod: dict[str, Any], event_type: str | None, state: admission.State, run: identity.RunIdentity) -> None:
    """Queue the status changes pod event ``event_type`` of ``pod`` makes to its run: the admission entry and
    world size on its first event, the disruption when it ended by one (:mod:`~kresume.operator.statuswriter`
    writes them, with the run's other pending changes, a moment later)."""
    meta = pod.get("metadata") or {}
    ns, name = meta.get("namespace") or "", meta.get("name") or ""
    limit = state.config.runs.history_limit
    if event_type in (None, "ADDED") and contract.ANN_INJECTED in (meta.get("annotations") or {}):
        url = pod_run_url(pod)
        if url:
            try:
                pname = decisions.policy_name(pod)
            except decisions.PolicyNameError:
                pname = contract.DEFAULT_POLICY_NAME
            spec = decisions.run_spec(run=run.run, policy=pname, url=url, source=run.source, group=run.group,
                                      rank=None)
            entry = decisions.admission_entry(pod, meta.get("creationTimestamp") or decisions.now_iso())
            world = sidecar_world_size(pod)

            def change(status: dict[str, Any] | None) -> dict[str, Any] | None:
                admitted = decisions.record_admission(status, entry, limit=limit)
                sized = decisions.record_world_size(admitted if admitted is not None else status, world)
                return sized if sized is not None else admitted

            await statuswriter.post(state, ns, run.run, change, spec=spec)
    reason = decisions.disruption(pod)
    if reason and name:
        when = decisions.now_iso()
        created = meta.get("creationTimestamp")
        await statuswriter.post(state, ns, run.run,
                                lambda s: decisions.record_disruption(s, name, reason, when, created))
