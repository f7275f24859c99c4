"""The sidecar process: rescan → judge → capture → commit, newest first; SIGTERM flush.

Threads: the main loop (scans, judges, captures with :func:`kresume.store.local.snapshot` the moment
a unit is complete — Lightning deletes the previous checkpoint 0.1–6 ms later, writers.md §2),
``concurrency`` upload workers (:meth:`RunStore.commit`), the watchdog observer (hints only) and
the metrics server. Decisions live in :mod:`kresume.formats` and :mod:`kresume.sidecar.scheduling`.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from typing import Any

from kresume.formats.judge import ContentReader, judge
from kresume.formats.listing import scan
from kresume.formats.metadata import CheckpointInfo, describe
from kresume.formats.units import Rules, Unit, find_units
from kresume.sidecar import logs, scheduling
from kresume.sidecar.discovery import Hints, choose_mode, start_observer
from kresume.sidecar.tasks import CommitKey, CommitTask, UploadCancelled, committed_key, snapshot_key, unit_key
from kresume.sidecar.metrics import Health, Metrics, serve
from kresume.sidecar.settings import SidecarSettings
from kresume.store import errors
from kresume.store.local import snapshot
from kresume.store.runstore import RunStore


class Sidecar:
    """Run with :meth:`run` from the main thread (it installs the SIGTERM/SIGINT handlers)."""

    def __init__(self, settings: SidecarSettings, *, store: RunStore | None = None) -> None:
        self.settings = settings.validate()
        self.root = os.path.realpath(settings.watch)
        self.rules = Rules(settings.include, settings.exclude, settings.marker)
        self.reader = ContentReader(self.root)
        self.log = logs.get()
        self.metrics = Metrics()
        self.health = Health(stale_after=max(30.0, 3 * max(settings.rescan_seconds, settings.poll_seconds)))
        self.store = store
        self.cv = threading.Condition()
        self.pending: dict[CommitKey, CommitTask] = {}
        self.inflight: dict[CommitKey, CommitTask] = {}
        self.committed: dict[CommitKey, int | None] = {}  # key -> step
        self.rejected: dict[CommitKey, str] = {}
        self.noted: dict[str, tuple[Any, str, str]] = {}
        self.bw = scheduling.Bandwidth()
        self.deadline: float | None = None  # monotonic, set by SIGTERM
        self.newest_committed = -1  # priority (mtime ns) of the newest committed checkpoint
        self.floor = -1  # units older than this would be pruned at once (keep_last), so never uploaded
        self.last_step = -1
        self.summary = {"committed": 0, "abandoned": 0, "bytes": 0}
        self.hints = Hints(threading.Event())
        self._prune_lock = threading.Lock()
        self._workers_stop = False
        self.server: Any = None

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> int:
        """Watch until SIGTERM/SIGINT, flush within the grace period, print the summary; returns 0."""
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        if self.settings.metrics_port >= 0:
            self.server = serve(self.metrics, self.health, self.settings.metrics_host, self.settings.metrics_port)
            self.log.info("metrics on %s:%d", self.settings.metrics_host, self.server.server_address[1],
                          extra={"fields": {"port": self.server.server_address[1]}})
        if not os.path.isdir(self.root):
            self.log.error("watch folder %s does not exist (--watch / KRESUME_WATCH)", self.root)
            return 2
        while not self._load_committed():
            if self.deadline is not None:
                return self._finish()
            time.sleep(2.0)
        mode, why = choose_mode(self.settings.watch_mode, self.root)
        self.log.info("watching %s in %s mode (%s), committing to %s", self.root, mode, why, self.settings.run_url,
                      extra={"fields": {"watch": self.root, "mode": mode, "run_url": self.settings.run_url}})
        observer = start_observer(self.root, self.hints) if mode == "inotify" else None
        workers = [threading.Thread(target=self._worker, name=f"kresume-commit-{i}", daemon=True)
                   for i in range(self.settings.concurrency)]
        for w in workers:
            w.start()
        try:
            self._loop(mode)
        finally:
            if observer is not None:
                observer.stop()
        with self.cv:
            self._workers_stop = True
            for job in self.inflight.values():
                job.cancel_reason = job.cancel_reason or "grace period over"
                job.cancel.set()
            self.cv.notify_all()
        for w in workers:
            w.join(timeout=5.0)
        return self._finish()

    def _load_committed(self) -> bool:
        try:
            if self.store is None:
                self.store = RunStore.open(self.settings.run_url, self.settings.storage_options)
            manifests = self.store.list()
            repaired = self.store.repair_pointer()
            if repaired:
                self.log.info("pointer named an older, incomplete or bad-marked checkpoint (e.g. a commit killed "
                              "between manifest and pointer); moved it to %s", repaired)
        except errors.StoreError as exc:
            self.health.reason = f"store: {exc}"
            self.log.error("cannot list %s: %s", self.settings.run_url, exc)
            return False
        mtimes = []
        for m in manifests:
            key = committed_key(m)
            if key is not None:
                self.committed[key] = m.step
                mtimes.append(key[1])
        self.newest_committed = max(mtimes, default=-1)
        if self.settings.keep_last is not None and len(mtimes) >= self.settings.keep_last:
            self.floor = sorted(mtimes, reverse=True)[self.settings.keep_last - 1]
        self.log.info("%d checkpoints already committed in %s", len(manifests), self.settings.run_url)
        return True

    def _on_term(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.settings.grace_seconds
            self.health.ready, self.health.reason = False, "terminating"
            self.log.info("signal %d: committing for up to %.1f s", signum, self.settings.grace_seconds)
        else:
            self.deadline = now
            self.log.info("second signal: stopping now")
        self.hints.wake.set()
        with self.cv:
            self.cv.notify_all()

    def _finish(self) -> int:
        with self.cv:
            for job in list(self.pending.values()) + list(self.inflight.values()):
                self.summary["abandoned"] += 1
                job.snap.close()
            self.pending.clear()
            self.inflight.clear()
        steps = [s for s in self.committed.values() if s is not None]
        line = (f"kresume sidecar: committed={self.summary['committed']} abandoned={self.summary['abandoned']} "
                f"bytes={self.summary['bytes']} newest_step={max(steps) if steps else 'none'}")
        self.log.info(line, extra={"fields": dict(self.summary)})
        print(line, flush=True)
        if self.server is not None:
            self.server.shutdown()
        return 0

    # ------------------------------------------------------------------ main loop
    def _loop(self, mode: str) -> None:
        idle = self.settings.poll_seconds if mode == "poll" else self.settings.rescan_seconds
        while True:
            self.health.beat()
            self.hints.wake.clear()
            writing = self._rescan()
            self.health.ready = self.deadline is None
            if self.deadline is not None:
                now = time.monotonic()
                if now >= self.deadline or (not writing and self._flush_done(now)):
                    return
            with self.cv:
                self.metrics.pending.set(len(self.pending))
            timeout = self.settings.recheck_seconds if (writing or self.deadline is not None) else idle
            if self.hints.wake.wait(timeout) and self.deadline is None:
                time.sleep(0.02)  # coalesce a burst of events into one rescan

    def _rescan(self) -> bool:
        """One reconcile pass; returns True while some unit is still being written."""
        try:
            listing = scan(self.root)
        except OSError as exc:
            self.log.error("cannot list %s: %s", self.root, exc)
            return False
        found = find_units(listing, self.rules)
        now_ns = time.time_ns()
        settle_ns = int(self.settings.settle_seconds * 1e9)
        writing = False
        for unit in found.units:
            key = unit_key(unit)
            with self.cv:
                known = key in self.committed or key in self.pending or key in self.inflight
            if known or key in self.rejected or unit.max_mtime_ns < self.floor:
                continue
            v = judge(unit, listing, self.reader, now_ns=now_ns, settle_ns=settle_ns, rules=self.rules)
            self._note(unit.rel, key, v.state, v.reason)
            if v.state == "incomplete":
                writing = writing or now_ns - unit.max_mtime_ns < settle_ns or not unit.files
            elif v.state in ("corrupt", "unreadable"):
                self.rejected[key] = v.reason
                self.metrics.failures.labels(v.state).inc()
            else:
                writing = self._capture(unit, key) or writing
        for alias in found.aliases:
            self._note(alias.rel, alias.target, "alias",
                       f"symlink to {alias.target}" + (" (outside the watched folder; never read)" if alias.outside
                                                       else f" = alias of {alias.resolved}; not uploaded"))
        if self.settings.delete_local_after_commit and found.units:
            self._reclaim(found.units)
        return writing

    def _note(self, rel: str, key: Any, state: str, reason: str) -> None:
        """Log a unit's state once per change (not on every rescan)."""
        if self.noted.get(rel) == (key, state, reason):
            return
        self.noted[rel] = (key, state, reason)
        fields = {"unit": rel, "state": state, "reason": reason}
        if state in ("corrupt", "unreadable"):
            self.log.error("skipping %s: %s — %s", rel, state, reason, extra={"fields": fields})
        elif state == "incomplete":
            self.log.info("waiting for %s: %s", rel, reason, extra={"fields": fields})
        elif state == "alias":
            self.log.info("%s: %s", rel, reason, extra={"fields": fields})

    def _capture(self, unit: Unit, key: CommitKey) -> bool:
        """Open every file of a complete unit now; returns True when it must be looked at again."""
        path = os.path.join(self.root, unit.rel)
        try:
            snap = snapshot(path, root=self.root)
        except errors.SourceUnreadable as exc:
            self.rejected[key] = str(exc)
            self.metrics.failures.labels("unreadable").inc()
            self.log.error("skipping %s: %s", unit.rel, exc, extra={"fields": {"unit": unit.rel}})
            return False
        except errors.OutsideRoot as exc:
            self.rejected[key] = str(exc)
            self.metrics.failures.labels("outside_root").inc()
            self.log.error("skipping %s: %s", unit.rel, exc, extra={"fields": {"unit": unit.rel}})
            return False
        except errors.SourceError:
            return True  # vanished or emptied between judge and capture: look again
        if snapshot_key(snap) != key:
            snap.close()  # rewritten between judge and capture: judge the new content
            return True
        try:
            info = describe(path)
        except Exception:  # noqa: BLE001 - describe is best effort; the name still carries the step
            info = CheckpointInfo(unit.format)
        job = CommitTask(unit.rel, key, snap, info, written_at=key[1] / 1e9)
        self.log.info("complete: %s (%s, step %s, %d B), queued", unit.rel, info.format, info.step, job.size,
                      extra={"fields": {"unit": unit.rel, "step": info.step, "bytes": job.size}})
        with self.cv:
            self.pending[key] = job
            if self.settings.skip_superseded:
                self._drop_superseded(job.priority)
            self.cv.notify_all()
        return False

    def _drop_superseded(self, newest: int) -> None:
        for key, job in list(self.pending.items()):
            if job.priority < newest:
                del self.pending[key]
                job.snap.close()
                self.summary["abandoned"] += 1
                self.log.info("superseded before upload: %s", job.rel)
        for job in self.inflight.values():
            if job.priority < newest:
                job.cancel_reason = "superseded"
                job.cancel.set()

    def _reclaim(self, units: tuple[Unit, ...]) -> None:
        newest = max(units, key=lambda u: u.max_mtime_ns)
        for u in units:
            key = unit_key(u)
            if u is newest or key not in self.committed:
                continue
            path = os.path.join(self.root, u.rel)
            try:
                if u.kind == "folder":
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
                self.log.info("deleted local %s (committed)", u.rel)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self.log.warning("cannot delete local %s: %s", u.rel, exc)

    # ------------------------------------------------------------------ shutdown decisions
    def _flush_done(self, now: float) -> bool:
        """During the grace period: True when nothing is uploading and nothing left may start."""
        with self.cv:
            left = (self.deadline or now) - now
            for job in list(self.inflight.values()):
                if not scheduling.fits(job.size - job.done_bytes, self.bw.value, left) and not job.cancel.is_set():
                    job.cancel_reason = "cannot finish within the grace period"
                    job.cancel.set()
            return not self.inflight and self._pick_locked(now) is None

    def _pick_locked(self, now: float) -> CommitTask | None:
        cands = list(self.pending.values())
        if self.deadline is not None:
            left = self.deadline - now
            cands = [j for j in cands if j.priority > self.newest_committed
                     and scheduling.fits(j.size, self.bw.value, left)]
        picked = scheduling.pick_next(
            [scheduling.Candidate(j.key, j.priority, j.size, j.not_before) for j in cands],
            inflight_count=len(self.inflight), inflight_bytes=sum(j.size for j in self.inflight.values()),
            concurrency=self.settings.concurrency, max_inflight_bytes=self.settings.max_inflight_bytes, now=now)
        return self.pending[picked.key] if picked is not None else None  # type: ignore[index]

    # ------------------------------------------------------------------ upload workers
    def _worker(self) -> None:
        while True:
            with self.cv:
                while True:
                    if self._workers_stop:
                        return
                    job = self._pick_locked(time.monotonic())
                    if job is not None:
                        del self.pending[job.key]
                        self.inflight[job.key] = job
                        self.metrics.inflight_bytes.set(sum(j.size for j in self.inflight.values()))
                        break
                    self.cv.wait(timeout=0.5)
            requeued = False
            try:
                requeued = self._commit(job)
            finally:
                with self.cv:
                    self.inflight.pop(job.key, None)
                    self.metrics.inflight_bytes.set(sum(j.size for j in self.inflight.values()))
                    if requeued:
                        self.pending[job.key] = job
                    else:
                        job.snap.close()
                    self.cv.notify_all()
                self.hints.wake.set()

    def _commit(self, job: CommitTask) -> bool:
        """Commit one job; returns True when it should be retried later."""
        assert self.store is not None
        job.started, job.done_bytes = time.monotonic(), 0
        job.cancel.clear()

        def progress(n: int) -> None:
            job.done_bytes += n
            self.summary["bytes"] += n
            self.metrics.bytes_uploaded.inc(n)
            if job.cancel.is_set():
                raise UploadCancelled(job.rel, job.cancel_reason or "cancelled")

        source = {"unit": job.rel, **({"pod": self.settings.pod_name} if self.settings.pod_name else {}),
                  **({"namespace": self.settings.pod_namespace} if self.settings.pod_namespace else {})}
        log_fields = {"unit": job.rel, "bytes": job.size, "attempt": job.attempts + 1}
        try:
            manifest = self.store.commit(job.snap, info=job.info, source=source, progress=progress)
        except UploadCancelled as exc:
            self._abandon(job, "cancelled", f"upload of {job.rel} stopped: {exc.detail or exc}")
            return False
        except errors.SourceChanged as exc:
            self._abandon(job, "source_changed", f"{job.rel} changed while uploading, not committed: {exc}")
            return False
        except (errors.SourceUnreadable, errors.OutsideRoot) as exc:
            self.rejected[job.key] = str(exc)
            self._abandon(job, "unreadable", f"{job.rel}: {exc}")
            return False
        except errors.SourceError as exc:
            self._abandon(job, "source", f"{job.rel}: {exc}")
            return False
        except Exception as exc:  # noqa: BLE001 - StoreError after the store's retries, or a bug
            job.attempts += 1
            reason = "store" if isinstance(exc, errors.StoreError) else "internal"
            if job.attempts < self.settings.commit_attempts and self.deadline is None:
                delay = scheduling.backoff(job.attempts - 1, self.settings.retry_base_seconds, self.settings.retry_max_seconds)
                job.not_before = time.monotonic() + delay
                self.metrics.failures.labels(f"{reason}_retry").inc()
                self.log.warning("commit of %s failed (%s); retry %d/%d in %.1f s", job.rel, exc,
                                 job.attempts + 1, self.settings.commit_attempts, delay, extra={"fields": log_fields},
                                 exc_info=reason == "internal")
                return True
            self._abandon(job, reason, f"commit of {job.rel} failed after {job.attempts} tries: {exc}")
            return False
        elapsed = time.monotonic() - job.started
        self.bw.add(job.size, elapsed)
        with self.cv:
            self.committed[job.key] = manifest.step
            self.newest_committed = max(self.newest_committed, job.priority)
            self.summary["committed"] += 1
        self.metrics.commits.inc()
        self.metrics.commit_lag.observe(max(0.0, time.time() - job.written_at))
        if manifest.step is not None and manifest.step > self.last_step:
            self.last_step = manifest.step
            self.metrics.last_step.set(manifest.step)
        self.log.info("committed %s as %s (step %s, %d B in %.2f s)", job.rel, manifest.id, manifest.step,
                      job.size, elapsed, extra={"fields": {**log_fields, "id": manifest.id, "step": manifest.step}})
        self._prune()
        return False

    def _abandon(self, job: CommitTask, reason: str, message: str) -> None:
        with self.cv:
            self.summary["abandoned"] += 1
        self.metrics.failures.labels(reason).inc()
        self.log.warning(message, extra={"fields": {"unit": job.rel, "reason": reason}})

    def _prune(self) -> None:
        if self.settings.keep_last is None or self.store is None:
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
