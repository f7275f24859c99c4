"""Admission findings waiting for their pod to exist, so they can become Events on it.

At admission a pod has no uid (and often no name: ``generateName``), so an Event cannot point at
it yet. The webhook leaves its Warning lines here under ``(namespace, key)`` — the run name, or the
pod's name/generateName for a pod without a run — and the pod watcher pops them when the pod
appears (usually milliseconds later). Entries expire after ``ttl`` seconds (a pod rejected by a
later admission step never appears). In-process only: with several replicas, a note may be held by
a replica whose watcher is paused (peering) and is then dropped at expiry; the stateless events
(Resumed, FreshStart, ResolveFailed come from the pod's annotations) are never lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Note:
    """One Event to post: ``reason`` (CamelCase) and ``message``; always type Warning."""

    reason: str
    message: str


class Notes:
    """A small expiring multimap ``(namespace, key) -> [Note]``; thread-safe."""

    def __init__(self, ttl: float = 120.0, *, clock: Callable[[], float] = time.monotonic, limit: int = 10000) -> None:
        self._ttl = ttl
        self._clock = clock
        self._limit = limit
        self._items: dict[tuple[str, str], tuple[float, list[Note]]] = {}
        self._lock = threading.Lock()

    def add(self, namespace: str, key: str, notes: list[Note]) -> None:
        """Append ``notes`` for a pod to come (nothing for an empty list)."""
        if not notes:
            return
        with self._lock:
            self._expire()
            if len(self._items) >= self._limit:
                return
            _, held = self._items.get((namespace, key), (0.0, []))
            self._items[(namespace, key)] = (self._clock(), held + list(notes))

    def pop(self, namespace: str, key: str) -> list[Note]:
        """Take (and forget) the notes held for a pod; [] when none or expired."""
        with self._lock:
            self._expire()
            _, held = self._items.pop((namespace, key), (0.0, []))
            return held

    def _expire(self) -> None:
        now = self._clock()
        for k in [k for k, (t, _) in self._items.items() if now - t > self._ttl]:
            del self._items[k]
