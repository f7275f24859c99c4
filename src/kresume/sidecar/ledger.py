"""The sidecar's book of checkpoints: which are queued, uploading, committed or rejected.

One :class:`Ledger` is shared by the scan loop (which queues captured checkpoints), the upload
workers (which take, commit and release them) and the shutdown path (which drains what is left).
Every mutation happens under its condition variable ``cv``; the decisions it applies come from
:mod:`kresume.sidecar.scheduling` (pure).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kresume.sidecar import scheduling
from kresume.sidecar.tasks import CommitKey, CommitTask, committed_key
from kresume.store.aliases import ALIAS_MIN_BYTES
from kresume.store.manifest import Manifest


@dataclass(frozen=True)
class Rejection:
    """Why a checkpoint is not committed, and what would make it worth judging again.

    ``access`` fingerprints the unit's names, inodes, modes, owners and ctimes when it was rejected
    (:func:`kresume.sidecar.scanner.access_fingerprint`): ``chmod``/``chown`` move a file's ctime, so
    a checkpoint refused as unreadable (writers.md §4: safetensors leaves mode 0600) is judged again
    once its permissions or ownership are fixed. ``None``: judged again only when its content changes.
    """

    reason: str
    access: Any = None


def may_alias(job: CommitTask) -> bool:
    """Whether ``job``'s commit may alias committed objects (:func:`kresume.store.aliases.choose`): a
    single-rank commit (parts never alias) of at least :data:`~kresume.store.aliases.ALIAS_MIN_BYTES`."""
    return not job.part and job.size >= ALIAS_MIN_BYTES


class Ledger:
    """Thread-safe state of every checkpoint the sidecar has seen, keyed by :data:`CommitKey`.

    Times are monotonic seconds; ``priority`` (newest file mtime, ns) orders checkpoints.
    """

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.pending: dict[CommitKey, CommitTask] = {}
        self.inflight: dict[CommitKey, CommitTask] = {}
        self.committed: dict[CommitKey, int | None] = {}  # key -> step
        self.recorded: dict[CommitKey, str] = {}
        """Multi-rank units whose part this rank recorded, not committed yet: key -> checkpoint id."""
        self.rejected: dict[CommitKey, Rejection] = {}
        self.newest_committed = -1
        """Priority (mtime ns) of the newest committed checkpoint."""
        self.floor = -1
        """Units older than this would be pruned at once (``keep_last``), so they are never uploaded."""
        self.last_step = -1
        self.commits = 0
        self.bytes = 0
        self.abandoned: set[CommitKey] = set()
        """Checkpoints seen complete and given up, and not committed since (a retry may still)."""
        self.given_up: set[CommitKey] = set()
        """Checkpoints whose commit failed after SIGTERM: not captured again before the exit."""

    # ------------------------------------------------------------------ start-up
    def load(self, manifests: Iterable[Manifest], keep_last: int | None) -> int:
        """Record the store's committed checkpoints; returns how many there are."""
        count = 0
        mtimes = []
        with self.cv:
            for m in manifests:
                count += 1
                key = committed_key(m)
                if key is not None:
                    self.committed[key] = m.step
                    mtimes.append(key[1])
            self.newest_committed = max(mtimes, default=-1)
            if keep_last is not None and len(mtimes) >= keep_last:
                self.floor = sorted(mtimes, reverse=True)[keep_last - 1]
        return count

    # ------------------------------------------------------------------ scan side
    def known(self, key: CommitKey) -> bool:
        """True when ``key`` is committed, queued, uploading, or given up for this process's life."""
        with self.cv:
            return (key in self.committed or key in self.pending or key in self.inflight or key in self.given_up
                    or key in self.recorded)

    def is_committed(self, key: CommitKey) -> bool:
        """True when ``key`` is committed."""
        with self.cv:
            return key in self.committed

    def reject(self, key: CommitKey, reason: str, access: Any = None) -> None:
        """Never commit ``key`` unless its ``access`` fingerprint changes (see :class:`Rejection`)."""
        with self.cv:
            self.rejected[key] = Rejection(reason, access)
            self.recorded.pop(key, None)

    def still_rejected(self, key: CommitKey, access: Any) -> bool:
        """True when ``key`` was rejected and nothing that could change the verdict moved since;
        a rejection whose access fingerprint changed is forgotten (the unit is judged again)."""
        with self.cv:
            rej = self.rejected.get(key)
            if rej is None:
                return False
            if rej.access is not None and rej.access != access:
                del self.rejected[key]
                return False
            return True

    def queue(self, task: CommitTask, *, skip_superseded: bool, on_drop: Callable[[CommitTask], None]) -> None:
        """Queue a captured checkpoint; with ``skip_superseded`` drop (and cancel) older ones,
        calling ``on_drop`` for each queued one dropped."""
        with self.cv:
            self.pending[task.key] = task
            if skip_superseded:
                for key, old in list(self.pending.items()):
                    if old.priority < task.priority:
                        del self.pending[key]
                        old.snap.close()
                        self.abandoned.add(key)
                        on_drop(old)
                for job in self.inflight.values():
                    if job.priority < task.priority:
                        job.cancel_reason = "superseded"
                        job.cancel.set()
            self.cv.notify_all()

    def pending_count(self) -> int:
        """Checkpoints waiting to upload."""
        with self.cv:
            return len(self.pending)

    # ------------------------------------------------------------------ worker side
    def pick_locked(self, now: float, *, deadline: float | None, bandwidth: float | None, concurrency: int,
                    max_inflight_bytes: int) -> CommitTask | None:
        """The task a worker should start now (caller holds ``cv``). During the grace period only
        checkpoints newer than the newest committed one that fit the time left are candidates."""
        cands = list(self.pending.values())
        if deadline is not None:
            left = deadline - now
            cands = [j for j in cands if j.priority > self.newest_committed
                     and scheduling.fits(j.size, bandwidth, left)]
        picked = scheduling.pick_next(
            [scheduling.Candidate(j.key, j.priority, j.size, j.not_before, may_alias(j)) for j in cands],
            inflight_count=len(self.inflight), inflight_bytes=self.inflight_bytes_locked(),
            concurrency=concurrency, max_inflight_bytes=max_inflight_bytes, now=now,
            inflight_alias_sizes={j.size for j in self.inflight.values() if may_alias(j)})
        return self.pending[picked.key] if picked is not None else None  # type: ignore[index]

    def start_locked(self, job: CommitTask) -> None:
        """Move ``job`` from pending to in flight (caller holds ``cv``)."""
        del self.pending[job.key]
        self.inflight[job.key] = job

    def inflight_bytes_locked(self) -> int:
        """Bytes of the checkpoints uploading now (caller holds ``cv``)."""
        return sum(j.size for j in self.inflight.values())

    def release(self, job: CommitTask, *, requeue: bool) -> int:
        """A worker is done with ``job``: requeue it for a retry, or close its files. Returns the
        bytes still in flight."""
        with self.cv:
            self.inflight.pop(job.key, None)
            if requeue:
                self.pending[job.key] = job
            else:
                job.snap.close()
            self.cv.notify_all()
            return self.inflight_bytes_locked()

    def record_commit(self, job: CommitTask, step: int | None) -> bool:
        """Record a committed checkpoint; returns True when its step is the newest seen."""
        return self.record_committed_key(job.key, step)

    def record_committed_key(self, key: CommitKey, step: int | None, *, count: bool = True) -> bool:
        """Record that the local unit of ``key`` is committed (by this sidecar, or — a multi-rank step —
        by another rank's); returns True when its step is the newest seen. ``count=False``: a second key
        of the same commit (the file's metadata moved during its upload), not another commit."""
        with self.cv:
            self.committed[key] = step
            self.recorded.pop(key, None)
            self.newest_committed = max(self.newest_committed, key[1])
            self.commits += 1 if count else 0
            self.abandoned.discard(key)
            if step is not None and step > self.last_step:
                self.last_step = step
                return True
            return False

    def record_part(self, job: CommitTask, checkpoint_id: str) -> None:
        """This rank's part of ``job`` is recorded; its step waits for other ranks (never captured again)."""
        with self.cv:
            self.recorded[job.key] = checkpoint_id
            self.newest_committed = max(self.newest_committed, job.priority)
            self.abandoned.discard(job.key)

    def count_abandoned(self, key: CommitKey, *, for_good: bool = False) -> None:
        """The checkpoint of ``key`` was given up (counted once, however often it is retried);
        ``for_good``: never capture it again in this process (the shutdown deadline is running)."""
        with self.cv:
            self.abandoned.add(key)
            if for_good:
                self.given_up.add(key)

    def count_bytes(self, n: int) -> None:
        """``n`` more bytes uploaded (called from upload threads)."""
        with self.cv:
            self.bytes += n

    @property
    def summary(self) -> dict[str, int]:
        """``{"committed", "abandoned", "bytes"}``: commits made by this process, checkpoints given up
        and not committed, bytes uploaded (retries included)."""
        return {"committed": self.commits, "abandoned": len(self.abandoned), "bytes": self.bytes}

    # ------------------------------------------------------------------ shutdown side
    def cancel_inflight(self, reason: str) -> None:
        """Ask every running upload to stop before its manifest is written."""
        with self.cv:
            for job in self.inflight.values():
                job.cancel_reason = job.cancel_reason or reason
                job.cancel.set()
            self.cv.notify_all()

    def drain(self, timeout: float = -1) -> None:
        """Give up everything queued or uploading (counted as abandoned) and close their files.

        ``timeout`` (seconds; -1 waits as long as needed) bounds the wait for the lock: the
        deadline's forced exit must not wait on a thread that holds it, and then drains without it.
        """
        locked = self.cv.acquire(timeout=timeout)
        try:
            for job in list(self.pending.values()) + list(self.inflight.values()):
                self.abandoned.add(job.key)
                job.snap.close()
            self.pending.clear()
            self.inflight.clear()
        finally:
            if locked:
                self.cv.release()

    def newest_step(self) -> int | None:
        """The largest step among committed checkpoints (``None`` when none has a step)."""
        with self.cv:
            steps = [s for s in self.committed.values() if s is not None]
        return max(steps) if steps else None
