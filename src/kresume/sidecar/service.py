"""The sidecar process: rescan → judge → capture → commit, newest first; SIGTERM flush.

:class:`Sidecar` wires the parts, each in its own module:

- :mod:`~kresume.sidecar.scanner` — the main loop's pass: list, judge from content, capture;
- :mod:`~kresume.sidecar.uploader` — ``concurrency`` worker threads committing with :meth:`RunStore.commit`
  (or, for a sharded unit of a multi-rank run, recording this rank's part: :mod:`~kresume.sidecar.multirank`);
- :mod:`~kresume.sidecar.reconcile` — multi-rank runs: the ticks that commit a step once every rank's part is in;
- :mod:`~kresume.sidecar.ledger` — what is queued, uploading, committed or rejected (shared, locked);
- :mod:`~kresume.sidecar.shutdown` — the grace period after SIGTERM and the summary line;
- :mod:`~kresume.sidecar.discovery` — watchdog events as hints; :mod:`~kresume.sidecar.metrics` — HTTP.

Decisions live in :mod:`kresume.formats` and :mod:`kresume.sidecar.scheduling` (pure).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from kresume.sidecar import leaving, logs, presence
from kresume.sidecar.discovery import Hints, choose_mode, start_observer
from kresume.sidecar.ledger import Ledger
from kresume.sidecar.metrics import Health, Metrics, serve
from kresume.sidecar.reconcile import Reconciler
from kresume.sidecar.scanner import Scanner
from kresume.sidecar.settings import PARTS_ALL_RANKS, SidecarSettings
from kresume.sidecar.shutdown import Shutdown
from kresume.sidecar.uploader import Uploader
from kresume.store import errors, layout, partcommit
from kresume.store.deadline import Deadline
from kresume.store.runstore import RunStore
from kresume.store.storage import transfer_settings


class Sidecar:
    """Run with :meth:`run` from the main thread (it installs the SIGTERM/SIGINT handlers)."""

    def __init__(self, settings: SidecarSettings, *, store: RunStore | None = None) -> None:
        self.settings = settings.validate()
        self.root = os.path.realpath(settings.watch)
        self.log = logs.get()
        self.metrics = Metrics()
        self.health = Health(stale_after=max(30.0, 3 * max(settings.rescan_seconds, settings.poll_seconds)))
        self.store = store
        self.ledger = Ledger()
        self.hints = Hints(threading.Event())
        self.scanner = Scanner(self.root, self.settings, self.ledger, self.metrics, self.log)
        self.requests = Deadline("the shutdown deadline (--grace-seconds)")
        """The store's request deadline: unset until SIGTERM (see :mod:`kresume.sidecar.shutdown`)."""
        self.shutdown = Shutdown(settings.grace_seconds, self.ledger, self.health, self.log, self.hints.wake.set,
                                 self.requests)
        self.uploader: Uploader | None = None
        self.reconciler: Reconciler | None = None
        self.watch = leaving.TrainerWatch(started_wall=time.time(), pod_uid=settings.pod_uid)
        """What the sidecar saw of the trainer's lock (legacy mode: when to leave, :mod:`~kresume.sidecar.leaving`)."""
        self.pending_ids: list[str] = []
        """Multi-rank ids with parts and no manifest when the store was opened (newest first)."""
        self.server: Any = None
        self._left_at = 0.0
        self._hurried_at = 0.0

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> int:
        """Watch until SIGTERM/SIGINT, flush within the grace period, print the summary; returns 0
        (2 when the watch folder does not exist). At the deadline, or on a second signal, the
        process ends from a watchdog thread (``os._exit(0)``) if this has not returned yet."""
        signal.signal(signal.SIGTERM, self.shutdown.on_signal)
        signal.signal(signal.SIGINT, self.shutdown.on_signal)
        if self.settings.metrics_port >= 0:
            self.server = serve(self.metrics, self.health, self.settings.metrics_host, self.settings.metrics_port)
            self.log.info("metrics on %s:%d", self.settings.metrics_host, self.server.server_address[1],
                          extra={"fields": {"port": self.server.server_address[1]}})
        if not os.path.isdir(self.root):
            self.log.error("watch folder %s does not exist (--watch / KRESUME_WATCH)", self.root)
            return 2
        while not self._load_committed():
            if self.settings.restart_policy in ("Never", "OnFailure") and self.shutdown.deadline is None:
                self._maybe_leave(presence.probe(self.root))  # the store is down and the trainer left
            if self.shutdown.signalled or (self.shutdown.deadline or float("inf")) <= time.monotonic():
                return self._finish()
            time.sleep(2.0)
        assert self.store is not None
        mode, why = choose_mode(self.settings.watch_mode, self.root)
        self.log.info("watching %s in %s mode (%s), committing to %s", self.root, mode, why, self.settings.run_url,
                      extra={"fields": {"watch": self.root, "mode": mode, "run_url": self.settings.run_url}})
        observer = start_observer(self.root, self.hints) if mode == "inotify" else None
        self.uploader = Uploader(self.store, self.settings, self.ledger, self.metrics, self.hints, self.log,
                                 lambda: self.shutdown.deadline)
        self.shutdown.bandwidth = lambda: self.uploader.bw.value if self.uploader else None
        reconciler = self.reconciler = self._start_reconciler(self.uploader)
        self.uploader.start()
        try:
            self._loop(mode)
        finally:
            if observer is not None:
                observer.stop()
            if reconciler is not None:
                reconciler.stop()
        deadline = self.shutdown.deadline or time.monotonic()
        self.uploader.stop("grace period over", join_seconds=max(0.0, min(5.0, deadline - time.monotonic())))
        return self._finish()

    def _load_committed(self) -> bool:
        """Open the store and learn what is committed; False (logged) when the store fails."""
        try:
            if self.store is None:
                self.store = RunStore.open(self.settings.run_url, self.settings.storage_options,
                                           transfer_settings(deadline=self.requests))
            manifests = self.store.list()
            layout.observe_checkpoint_ids(m.id for m in manifests)  # new ids sort after these (clock steps)
            if self.settings.multi_rank:  # steps some rank recorded a part of: a killed committer's are finished
                self.pending_ids = partcommit.pending_ids(self.store, {m.id for m in manifests})
            repaired = self.store.repair_pointer()
            if repaired:
                self.log.info("pointer named an older, incomplete or bad-marked checkpoint (e.g. a commit killed "
                              "between manifest and pointer); moved it to %s", repaired)
        except errors.StoreError as exc:
            self.health.reason = f"store: {exc}"
            self.log.error("cannot list %s: %s", self.settings.run_url, exc)
            return False
        count = self.ledger.load(manifests, self.settings.keep_last)
        self.log.info("%d checkpoints already committed in %s", count, self.settings.run_url)
        return True

    def _start_reconciler(self, uploader: Uploader) -> Reconciler | None:
        """In a multi-rank run: the reconcile ticks of this rank's recorded parts, with the uncommitted
        ids found at start adopted (:mod:`kresume.sidecar.reconcile`)."""
        s = self.settings
        if not s.multi_rank:
            return None
        assert self.store is not None and s.rank is not None and s.world_size is not None
        reconciler = Reconciler(self.store, rank=s.rank, world_size=s.world_size, epoch=s.epoch, ledger=self.ledger,
                                metrics=self.metrics, log=self.log, on_committed=uploader.part_committed)
        uploader.reconciler = reconciler
        adopted = reconciler.adopt(self.pending_ids)
        self.log.info("rank %d of %d, resume epoch %s: sharded checkpoints (%s) commit as this rank's part; "
                      "%d uncommitted multi-rank step(s) found in the store", s.rank, s.world_size, s.epoch,
                      "every format" if s.parts == PARTS_ALL_RANKS else "DCP, DeepSpeed", adopted,
                      extra={"fields": {"rank": s.rank, "world_size": s.world_size, "epoch": s.epoch,
                                        "parts": s.parts or "sharded", "adopted": adopted}})
        reconciler.start()
        return reconciler

    def _maybe_leave(self, trainer: presence.Trainer) -> None:
        """Legacy mode: start the flush-and-exit once the trainer is gone for good (:func:`leaving.leaves`)."""
        now = time.monotonic()
        self.watch.observe(trainer, now=now)
        why = leaving.leaves(self.settings.restart_policy, self.watch, now=now,
                             settle_seconds=self.settings.leave_settle_seconds)
        if why is not None:
            self._left_at = now
            self.shutdown.leave(self.settings.leave_grace_seconds, why)
            if self.reconciler is not None:
                self.reconciler.hurry()

    def _parts_done(self, now: float) -> bool:
        """After leaving without a signal, in a multi-rank run: True once no step this rank recorded a part of
        waits for a commit, or ``leave_parts_seconds`` passed (the other ranks' parts may still come); the
        waiting ids are tried every second meanwhile. Always True after a signal (the grace period is short and
        any rank's next sidecar finishes them: :meth:`Reconciler.adopt`)."""
        if self.reconciler is None or self.shutdown.signalled or self.shutdown.leaving is None:
            return True
        waiting = self.reconciler.waiting()
        if not waiting or now - self._left_at >= self.settings.leave_parts_seconds:
            if waiting:
                self.log.warning("left %d multi-rank step(s) waiting for other ranks' parts: %s (any rank's next "
                                 "sidecar finishes them)", len(waiting), ", ".join(waiting),
                                 extra={"fields": {"waiting": waiting}})
            return True
        if now - self._hurried_at >= 1.0:
            self._hurried_at = now
            self.reconciler.hurry()
        return False

    def _finish(self) -> int:
        self.shutdown.finish()
        if self.server is not None:
            self.server.shutdown()
        return 0

    # ------------------------------------------------------------------ main loop
    def _loop(self, mode: str) -> None:
        assert self.uploader is not None
        s = self.settings
        idle = s.poll_seconds if mode == "poll" else s.rescan_seconds
        may_leave = s.restart_policy in ("Never", "OnFailure")
        if may_leave:
            idle = min(idle, s.presence_seconds)
        done_before = False
        while True:
            self.health.beat()
            self.hints.wake.clear()
            # Probe the trainer before the rescan: a trainer that exits after the probe left its final
            # checkpoint for this rescan or the next one, never for none.
            trainer = presence.probe(self.root) if self.shutdown.deadline is not None or may_leave else None
            if may_leave and self.shutdown.deadline is None:
                assert trainer is not None
                self._maybe_leave(trainer)
            writing = self.scanner.rescan(writer_gone=trainer is not None and trainer.alive is False)
            deadline = self.shutdown.deadline
            self.health.ready = deadline is None
            if deadline is not None:
                if trainer is None:
                    continue  # the signal came during this turn's rescan: probe, then rescan again
                if trainer.alive and self.shutdown.stay("the trainer lock is held again after the sidecar began "
                                                        "to leave (a trainer process started)"):
                    self.watch.observe(trainer, now=time.monotonic())
                    done_before = False
                    continue
                deadline = self.shutdown.follow_trainer(trainer)
                now = time.monotonic()
                if trainer.alive is False:
                    writing = False  # the writer is gone: an incomplete unit never completes
                done = not trainer.alive and not writing and self.shutdown.flush_done(
                    now, self.uploader.pick_locked, self.uploader.bw.value) and self._parts_done(now)
                # Done twice in a row, with a rescan between: an upload that ended (or was abandoned because its
                # file changed) while this turn's rescan ran leaves its requeued unit for the next rescan.
                if now >= deadline or (done and done_before):
                    return
                done_before = done
            self.metrics.pending.set(self.ledger.pending_count())
            timeout = self.settings.recheck_seconds if (writing or deadline is not None) else idle
            if self.hints.wake.wait(timeout) and self.shutdown.deadline is None:
                time.sleep(0.02)  # coalesce a burst of events into one rescan
