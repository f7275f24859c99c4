"""The upload side of the sidecar: ``concurrency`` worker threads that commit queued checkpoints.

Each worker takes the task :meth:`Ledger.pick_locked` chooses (newest first, within the in-flight
byte budget, :mod:`kresume.sidecar.scheduling`), commits it with :meth:`RunStore.commit` (data, then
manifest, then pointer: DESIGN.md invariant 1) — or, for a unit of a multi-rank run that goes through
parts (:mod:`kresume.sidecar.multirank`), records this rank's part with :meth:`RunStore.commit_part`
and leaves a step that waits for other ranks to the :mod:`~kresume.sidecar.reconcile` ticks — and
records the outcome. A multi-rank unit rewritten in place within one epoch is refused (logged, counted
as ``failures_total{reason="rewritten"}``). A failed commit is retried
as a whole with full-jitter backoff (:func:`kresume.store.storage.backoff`) after the store's own
per-request retries gave up; after SIGTERM it is not retried. Retention runs after each commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kresume.sidecar import multirank, scheduling
from kresume.sidecar.discovery import Hints
from kresume.sidecar.ledger import Ledger
from kresume.sidecar.metrics import Metrics
from kresume.sidecar.reconcile import Reconciler, Tick
from kresume.sidecar.settings import SidecarSettings
from kresume.sidecar.tasks import CommitKey, CommitTask, UploadCancelled, committed_key
from kresume.store import clock, errors
from kresume.store.manifest import Manifest
from kresume.store.nodecache import NodeCache
from kresume.store.runstore import RunStore
from kresume.store.storage import backoff


class Uploader:
    """Worker threads over ``ledger``; ``deadline()`` returns the SIGTERM deadline (monotonic
    seconds) or ``None`` while running normally."""

    def __init__(self, store: RunStore, settings: SidecarSettings, ledger: Ledger, metrics: Metrics,
                 hints: Hints, log: logging.Logger, deadline: Callable[[], float | None]) -> None:
        self.store = store
        self.settings = settings
        self.ledger = ledger
        self.metrics = metrics
        self.hints = hints
        self.log = log
        self.deadline = deadline
        self.bw = scheduling.Bandwidth()
        self.threads: list[threading.Thread] = []
        self._stop = False
        self._prune_lock = threading.Lock()
        self.reconciler: Reconciler | None = None
        """Tries this rank's recorded parts' steps again (multi-rank runs only; set by the sidecar)."""
        self.cache: NodeCache | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker threads (daemons: a blocked upload never keeps the process alive)."""
        self.threads = [threading.Thread(target=self._worker, name=f"kresume-commit-{i}", daemon=True)
                        for i in range(self.settings.concurrency)]
        for t in self.threads:
            t.start()

    def stop(self, reason: str, join_seconds: float) -> None:
        """Cancel running uploads (``reason`` is logged), stop the workers and wait up to
        ``join_seconds`` for each."""
        with self.ledger.cv:
            self._stop = True
        self.ledger.cancel_inflight(reason)
        for t in self.threads:
            t.join(timeout=join_seconds)

    def pick_locked(self, now: float) -> CommitTask | None:
        """The next task to start (caller holds ``ledger.cv``)."""
        deadline = self.deadline()
        # After SIGTERM one upload at a time, newest first: the trainer's final save gets the whole bandwidth
        # (two uploads sharing it can both miss the deadline), and an older checkpoint starts only once nothing
        # newer is left, which it then no longer is (only checkpoints newer than every commit may start).
        return self.ledger.pick_locked(now, deadline=deadline, bandwidth=self.bw.value,
                                       concurrency=1 if deadline is not None else self.settings.concurrency,
                                       max_inflight_bytes=self.settings.max_inflight_bytes)

    # ------------------------------------------------------------------ worker
    def _worker(self) -> None:
        cv = self.ledger.cv
        while True:
            with cv:
                while True:
                    if self._stop:
                        return
                    job = self.pick_locked(time.monotonic())
                    if job is not None:
                        self.ledger.start_locked(job)
                        self.metrics.inflight_bytes.set(self.ledger.inflight_bytes_locked())
                        break
                    cv.wait(timeout=0.5)
            requeued = False
            try:
                requeued = self._commit(job)
            finally:
                self.metrics.inflight_bytes.set(self.ledger.release(job, requeue=requeued))
                self.hints.wake.set()

    def _commit(self, job: CommitTask) -> bool:
        """Commit one job; returns True when it should be retried later."""
        job.started, job.done_bytes = time.monotonic(), 0
        job.cancel.clear()

        def progress(n: int) -> None:
            job.done_bytes += n
            self.ledger.count_bytes(n)
            self.metrics.bytes_uploaded.inc(n)
            if job.cancel.is_set():
                raise UploadCancelled(job.rel, job.cancel_reason or "cancelled")

        s = self.settings
        source = {"unit": job.rel, **({"pod": s.pod_name} if s.pod_name else {}),
                  **({"namespace": s.pod_namespace} if s.pod_namespace else {})}
        log_fields = {"unit": job.rel, "bytes": job.size, "attempt": job.attempts + 1}
        try:
            if job.part:
                manifest = self._record_part(job, source, progress, log_fields)
                if manifest is None:
                    return False  # recorded; the step waits for other ranks (reconcile ticks)
            else:
                manifest = self.store.commit(job.snap, info=job.info, source=source, progress=progress)
        except UploadCancelled as exc:
            self._abandon(job, "cancelled", f"upload of {job.rel} stopped: {exc.detail or exc}")
            return False
        except errors.SourceChanged as exc:
            self._abandon(job, "source_changed", f"{job.rel} changed while uploading, not committed: {exc}")
            return False
        except (errors.SourceUnreadable, errors.OutsideRoot) as exc:
            self.ledger.reject(job.key, str(exc), job.access)
            self._abandon(job, "unreadable", f"{job.rel}: {exc}")
            return False
        except errors.SourceError as exc:
            self._abandon(job, "source", f"{job.rel}: {exc}")
            return False
        except Exception as exc:  # noqa: BLE001 - StoreError after the store's retries, or a bug
            if job.part and isinstance(exc, errors.CommitConflict):
                self._refuse_part(job, exc, log_fields)
                return False
            job.attempts += 1
            reason = "store" if isinstance(exc, errors.StoreError) else "internal"
            if job.attempts < s.commit_attempts and self.deadline() is None:
                delay = backoff(job.attempts - 1, s.retry_base_seconds, s.retry_max_seconds)
                job.not_before = time.monotonic() + delay
                self.metrics.failures.labels(f"{reason}_retry").inc()
                self.log.warning("commit of %s failed (%s); retry %d/%d in %.1f s", job.rel, exc,
                                 job.attempts + 1, s.commit_attempts, delay, extra={"fields": log_fields},
                                 exc_info=reason == "internal")
                return True
            self._abandon(job, reason, f"commit of {job.rel} failed after {job.attempts} tries: {exc}")
            return False
        elapsed = time.monotonic() - job.started
        self.bw.add(manifest.stored_bytes, elapsed)  # an alias sends nothing: no bandwidth sample from it
        self._committed(job.key, job.written_at, manifest)
        aliases = sorted({f.alias for f in manifest.files if f.alias})
        note = f"; {manifest.stored_bytes} B sent, the rest alias {', '.join(aliases[:3])}" if aliases else ""
        self.log.info("committed %s as %s (step %s, %d B in %.2f s%s)", job.rel, manifest.id, manifest.step,
                      job.size, elapsed, note,
                      extra={"fields": {**log_fields, "id": manifest.id, "step": manifest.step,
                                        **({"aliases": aliases} if aliases else {})}})
        self._keep_on_node(job, manifest)
        self._prune()
        return False

    def _record_part(self, job: CommitTask, source: dict, progress: Callable[[int], None],
                     log_fields: dict) -> Manifest | None:
        """Upload and record this rank's part of ``job``'s multi-rank checkpoint, then try its commit; the
        manifest when the step is committed now, ``None`` when it waits for other ranks (then the reconcile
        ticks try again). Raises as :meth:`RunStore.commit_part`."""
        s = self.settings
        assert s.rank is not None and s.world_size is not None
        if s.resume_from:
            source = {**source, "resumed_from": s.resume_from}
        outcome = self.store.commit_part(job.snap, rank=s.rank, world_size=s.world_size, epoch=s.epoch,
                                         info=job.info, expect=multirank.part_expects(job.snap, s.world_size),
                                         source=source, progress=progress)
        self.metrics.parts_recorded.inc()
        if outcome.committed:
            assert outcome.manifest is not None
            return outcome.manifest
        self.bw.add(job.size, time.monotonic() - (job.started or time.monotonic()))
        self.ledger.record_part(job, outcome.checkpoint_id)
        waiting = outcome.waiting
        reason = waiting.reason if waiting is not None else "not whole yet"
        self.log.info("recorded rank %d's part of %s as %s (%d B): %s", s.rank, job.rel, outcome.checkpoint_id,
                      job.size, reason, extra={"fields": {**log_fields, "id": outcome.checkpoint_id, "rank": s.rank,
                                                          "reason": reason}})
        if self.reconciler is not None:
            self.reconciler.add(outcome.checkpoint_id, job.rel, job.key)
        return None

    def _refuse_part(self, job: CommitTask, exc: errors.CommitConflict, log_fields: dict) -> None:
        """A multi-rank unit rewritten in place within one epoch (or whose parts disagree): never committed."""
        self.ledger.reject(job.key, str(exc), job.access)
        self.ledger.count_abandoned(job.key)
        self.metrics.failures.labels("rewritten").inc()
        self.log.error("refusing %s: %s", job.rel, exc, extra={"fields": {**log_fields, "reason": "rewritten"}})

    def part_committed(self, tick: Tick, manifest: Manifest, created: bool) -> None:
        """A multi-rank step this rank recorded a part of is committed (a reconcile tick: by this sidecar's
        try, ``created``, or by another rank's)."""
        if tick.key is not None:
            self._committed(tick.key, tick.key[1] / 1e9, manifest)
        by = "this sidecar's reconcile tick" if created else "another rank's sidecar"
        self.log.info("committed %s as %s (step %s, %d ranks; committed by %s)", tick.rel or manifest.name,
                      manifest.id, manifest.step, len(manifest.source.get("ranks") or []), by,
                      extra={"fields": {"unit": tick.rel, "id": manifest.id, "step": manifest.step}})
        self._prune()

    def _committed(self, key: CommitKey, written_at: float, manifest: Manifest) -> None:
        if self.ledger.record_committed_key(key, manifest.step):
            self.metrics.last_step.set(manifest.step)
        now = committed_key(manifest)
        if now is not None and now != key:  # the store took a metadata-only change (copystat): the new mtime
            self.ledger.record_committed_key(now, manifest.step, count=False)
        self.metrics.commits.inc()
        self.metrics.commit_lag.observe(max(0.0, clock.time() - written_at))

    def _keep_on_node(self, job: CommitTask, manifest: Manifest) -> None:
        """The node-local tier (``--cache-dir``): keep the committed checkpoint on this node, from the files
        still open; a failure is logged and counted, never a failed commit."""
        if not self.settings.cache_dir:
            return
        if self.cache is None:
            self.cache = NodeCache(self.settings.cache_dir, self.settings.cache_max_bytes)
        try:
            res = self.cache.put(self.settings.run_url, manifest, job.snap.files)
        except Exception as exc:  # noqa: BLE001 - the cache is an optimisation: never fail the commit for it
            self.metrics.cache_put_failures.inc()
            self.log.warning("node cache: cannot keep %s in %s: %s", job.rel, self.settings.cache_dir,
                             getattr(exc, "strerror", None) or exc, exc_info=not isinstance(exc, OSError))
            return
        if res is None:
            return
        self.metrics.cache_puts.labels(res.method).inc()
        self.log.info("node cache: kept %s (%s, %d B in %.3f s)%s", manifest.id, res.method, res.bytes, res.seconds,
                      f"; evicted {', '.join(res.evicted)}" if res.evicted else "",
                      extra={"fields": {"id": manifest.id, "method": res.method, "evicted": list(res.evicted)}})

    def _abandon(self, job: CommitTask, reason: str, message: str) -> None:
        # After SIGTERM a given-up checkpoint is not captured again, except one whose file changed under the upload:
        # what it holds now (Lightning's move from $TMPDIR ends with copystat, which moves mtime and ctime after the
        # bytes are whole) is judged and captured afresh, within the time left.
        self.ledger.count_abandoned(job.key, for_good=self.deadline() is not None and reason != "source_changed")
        self.metrics.failures.labels(reason).inc()
        self.log.warning(message, extra={"fields": {"unit": job.rel, "reason": reason}})

    def _prune(self) -> None:
        if self.settings.keep_last is None:
            return
        with self._prune_lock:
            try:
                plan = self.store.prune(self.settings.keep_last, self.settings.keep_every)
            except errors.StoreError as exc:
                self.log.warning("retention failed: %s", exc)
                return
        if plan.delete:
            self.log.info("retention deleted %d checkpoints", len(plan.delete),
                          extra={"fields": {"deleted": plan.delete}})
