"""Reconcile ticks of a multi-rank run: commit the steps whose parts this sidecar recorded, once whole.

After this rank records its part of a step (:meth:`RunStore.commit_part`) and the step still waits
for other ranks, the step is tried again with :meth:`RunStore.try_commit` on the store module's
schedule (:func:`kresume.store.parts.tick_delay`: 10 s, then doubling to 60 s; docs/store-protocol.md
"Commit of a multi-rank checkpoint"). Whichever rank's try finds the union whole writes the manifest;
the others' next try finds it and stops. So a committer killed between its part and the commit (kill
-9, node loss) is finished by any other rank's next tick.

At start the sidecar adopts the run's uncommitted ids with parts (:func:`adopt`): a restarted sidecar,
or the sidecar of a new epoch, finishes what a killed committer left whole. Rank 0 tries them at
once; the other ranks one tick later, by which time rank 0's try has usually committed them, so a
restart costs each other rank two small requests per id (manifest GET, parts LIST), not W reads.
An adopted id of another epoch that still misses ranks is dropped after its first try (its own
epoch's sidecars, if alive, tick it). An id still waiting after :data:`GIVE_UP_SECONDS` is given
up (logged); it stays uncommitted, never half-committed, and retention deletes it as an orphan.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kresume.sidecar.ledger import Ledger
from kresume.sidecar.metrics import Metrics
from kresume.sidecar.multirank import epoch_of
from kresume.sidecar.tasks import CommitKey
from kresume.store import errors, parts
from kresume.store.manifest import Manifest
from kresume.store.runstore import RunStore

GIVE_UP_SECONDS = 3600.0
"""Seconds after which a recorded part whose step is still not whole is no longer tried by this sidecar."""

ADOPT_LIMIT = 32
"""Newest uncommitted ids adopted at start (older ones are left to retention's orphan rule)."""


@dataclass
class Tick:
    """One uncommitted multi-rank id this sidecar tries; times are monotonic seconds."""

    checkpoint_id: str
    rel: str
    """The local unit (``""`` for an id adopted at start)."""
    key: CommitKey | None
    since: float
    due: float
    attempt: int = 0
    adopted: bool = False


class Reconciler:
    """One daemon thread trying :class:`Tick` s when due. ``on_committed(tick, manifest, created)`` is
    called (from that thread) once an id is committed, by this sidecar's try or another rank's."""

    def __init__(self, store: RunStore, *, rank: int, world_size: int, epoch: str, ledger: Ledger,
                 metrics: Metrics, log: logging.Logger,
                 on_committed: Callable[[Tick, Manifest, bool], None]) -> None:
        self.store = store
        self.rank, self.world_size, self.epoch = rank, world_size, epoch
        self.ledger = ledger
        self.metrics = metrics
        self.log = log
        self.on_committed = on_committed
        self._cv = threading.Condition()
        self._ticks: dict[str, Tick] = {}
        self._stop = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the tick thread."""
        self._thread = threading.Thread(target=self._run, name="kresume-reconcile", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking (ids still waiting stay recorded in the store)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    # ------------------------------------------------------------------ queueing
    def add(self, checkpoint_id: str, rel: str, key: CommitKey | None) -> None:
        """Try ``checkpoint_id`` on the schedule (first after ``tick_delay(0)``); a known id keeps its schedule."""
        now = time.monotonic()
        with self._cv:
            if checkpoint_id not in self._ticks:
                self._ticks[checkpoint_id] = Tick(checkpoint_id, rel, key, now, now + parts.tick_delay(0))
                self._cv.notify_all()
            elif key is not None:
                self._ticks[checkpoint_id].key, self._ticks[checkpoint_id].rel = key, rel
            self.metrics.parts_waiting.set(len(self._ticks))

    def adopt(self, checkpoint_ids: Iterable[str]) -> int:
        """Adopt uncommitted ids found at start (newest first, at most :data:`ADOPT_LIMIT`); returns how many."""
        now = time.monotonic()
        first = now if self.rank == 0 else now + parts.tick_delay(0)
        n = 0
        with self._cv:
            for cid in list(checkpoint_ids)[:ADOPT_LIMIT]:
                if cid not in self._ticks:
                    self._ticks[cid] = Tick(cid, "", None, now, first, adopted=True)
                    n += 1
            self.metrics.parts_waiting.set(len(self._ticks))
            self._cv.notify_all()
        return n

    def hurry(self) -> None:
        """Make every waiting id due now (the trainer left: its last steps should commit before the sidecar
        exits, not on the 10-60 s schedule)."""
        now = time.monotonic()
        with self._cv:
            for tick in self._ticks.values():
                tick.due = min(tick.due, now)
            self._cv.notify_all()

    def waiting(self) -> list[str]:
        """Ids still waiting to be committed."""
        with self._cv:
            return sorted(self._ticks)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._stop:
                        return
                    now = time.monotonic()
                    due = [t for t in self._ticks.values() if t.due <= now]
                    if due:
                        break
                    nxt = min((t.due for t in self._ticks.values()), default=now + 60.0)
                    self._cv.wait(timeout=max(0.05, nxt - now))
            for tick in sorted(due, key=lambda t: t.checkpoint_id, reverse=True):  # newest step first
                self._try(tick)

    def _try(self, tick: Tick) -> None:
        cid = tick.checkpoint_id
        try:
            outcome = self.store.try_commit(cid, world_size=self.world_size)
        except errors.CommitConflict as exc:
            self._drop(tick)
            self.metrics.failures.labels("part_conflict").inc()
            if tick.key is not None:
                self.ledger.reject(tick.key, str(exc))
            self.log.error("multi-rank checkpoint %s can never commit: %s", cid, exc,
                           extra={"fields": {"id": cid, "unit": tick.rel, "reason": "part_conflict"}})
            return
        except Exception as exc:  # noqa: BLE001 - StoreError after the store's retries, or a bug: try later
            self._reschedule(tick, f"{type(exc).__name__}: {exc}", store_error=True)
            return
        if outcome.committed:
            assert outcome.manifest is not None
            self._drop(tick)
            self.on_committed(tick, outcome.manifest, outcome.created)
            return
        waiting = outcome.waiting
        if tick.adopted and epoch_of(cid) != self.epoch and waiting is not None and waiting.missing_ranks:
            self._drop(tick)
            self.log.info("left %s to its own epoch: %s", cid, waiting.reason,
                          extra={"fields": {"id": cid, "reason": waiting.reason}})
            return
        self._reschedule(tick, waiting.reason if waiting else "not whole yet")

    def _reschedule(self, tick: Tick, reason: str, *, store_error: bool = False) -> None:
        tick.attempt += 1
        now = time.monotonic()
        if now - tick.since >= GIVE_UP_SECONDS:
            self._drop(tick)
            self.log.warning("gave up committing %s after %.0f s: %s (it stays uncommitted; retention deletes it "
                             "as an orphan)", tick.checkpoint_id, now - tick.since, reason,
                             extra={"fields": {"id": tick.checkpoint_id, "unit": tick.rel, "reason": reason}})
            return
        tick.due = now + parts.tick_delay(tick.attempt)
        level = logging.WARNING if store_error else logging.DEBUG
        self.log.log(level, "%s not committed yet (%s); next try in %.0f s", tick.checkpoint_id, reason,
                     tick.due - now, extra={"fields": {"id": tick.checkpoint_id, "unit": tick.rel, "reason": reason}})

    def _drop(self, tick: Tick) -> None:
        with self._cv:
            self._ticks.pop(tick.checkpoint_id, None)
            self.metrics.parts_waiting.set(len(self._ticks))
