"""Which runs are *quiet*: no pod of theirs can be committing a checkpoint right now.

A checkpoint of a run is committed by the sidecar in one of the run's pods (``kresume commit`` by
hand aside). Every such pod is created through the webhook (its label is the webhook's
objectSelector), so this operator hears of it at admission — before the pod exists — and then from
its pod watch until the pod ends. A run is quiet when

* the pod watch of this process has shown an event of the run (so its view of the run is real, not
  merely empty: namespaces outside the operator's scope never become quiet),
* no pod of the run may still commit: every pod seen is gone (``DELETED``) or has finished
  (phase ``Succeeded``/``Failed``: all its containers, the sidecar included, have stopped), and
* every admission of the run has shown up in the watch as a new pod, or is older than
  ``admission_grace`` seconds (a pod refused after our admission, e.g. by another webhook or a quota,
  never appears).

While a run is quiet, a store answer fetched after the run became quiet stays exact: nothing can
have moved the run's pointer since (:class:`kresume.operator.resolution.Resolver` then answers
admissions from memory). Being deleted is not finished: a pod with a ``deletionTimestamp`` still runs
its sidecar's final flush during the grace period.

Not thread-safe: call it from the operator's event loop only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Pod phases after which no container of the pod runs again (Kubernetes pod lifecycle).
FINISHED_PHASES = ("Succeeded", "Failed")


def may_commit(pod: Mapping[str, Any]) -> bool:
    """True while a pod's sidecar may still commit: the pod exists and has not finished.

    A pod being deleted (``deletionTimestamp`` set) may: its sidecar flushes in the grace period.
    """
    return (pod.get("status") or {}).get("phase", "Pending") not in FINISHED_PHASES


@dataclass
class _Run:
    pods: set[str] = field(default_factory=set)
    """Keys (uid, else namespace/name) of the run's pods that may still commit."""
    known: set[str] = field(default_factory=set)
    """Keys of every pod of the run the watch has shown (so a pod's second event is not taken for
    the arrival of another admitted pod)."""
    admissions: list[float] = field(default_factory=list)
    """Clock times of admissions not yet matched by a new pod in the watch (oldest first)."""
    observed: bool = False
    quiet_since: float | None = None


class Activity:
    """Per-run view of pods that may commit, fed by admissions and the pod watch.

    Parameters
    ----------
    admission_grace : float
        Seconds an admission keeps its run busy when no new pod of the run shows up in the watch.
    clock : callable
        Monotonic seconds (``time.monotonic``); tests pass their own.
    """

    def __init__(self, admission_grace: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.admission_grace = admission_grace
        self._clock = clock
        self._runs: dict[str, _Run] = {}

    def admitted(self, url: str) -> None:
        """A pod of run ``url`` is being created (call for real, not dry-run, admissions)."""
        run = self._runs.setdefault(url, _Run())
        run.admissions.append(self._clock())
        run.quiet_since = None

    def observed(self, url: str, key: str, pod: Mapping[str, Any], *, deleted: bool = False) -> bool:
        """Record a watch event of pod ``key`` of run ``url``; returns True when it made the run quiet.

        ``deleted`` is True for ``DELETED`` events (the pod is gone whatever its last phase).
        """
        run = self._runs.setdefault(url, _Run())
        run.observed = True
        now = self._clock()
        if key not in run.known:
            run.known.add(key)
            if run.admissions:
                run.admissions.pop(0)
        if deleted:
            run.known.discard(key)
        if not deleted and may_commit(pod):
            run.pods.add(key)
            run.quiet_since = None
            return False
        run.pods.discard(key)
        return self._settle(run, now)

    def quiet_since(self, url: str) -> float | None:
        """Clock time since which run ``url`` has been quiet, or None while it may be committing."""
        run = self._runs.get(url)
        if run is None:
            return None
        self._settle(run, self._clock())
        return run.quiet_since

    def forget(self, url: str) -> None:
        """Drop what is known of a run (its CheckpointRun was deleted)."""
        self._runs.pop(url, None)

    def _settle(self, run: _Run, now: float) -> bool:
        """Expire old admissions; mark the run quiet when nothing may commit. True when it just became quiet."""
        while run.admissions and now - run.admissions[0] >= self.admission_grace:
            run.admissions.pop(0)
        if run.quiet_since is not None or not run.observed or run.pods or run.admissions:
            return False
        run.quiet_since = now
        return True
