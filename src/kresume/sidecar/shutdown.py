"""SIGTERM/SIGINT handling: the grace-period deadline, what may still upload, the summary, the exit.

After the first signal the sidecar keeps committing for ``grace_seconds``: a running upload goes on
only while the measured bandwidth says it can finish in time, and a queued checkpoint starts only
when it is newer than everything committed and fits (:func:`kresume.sidecar.scheduling.fits`).

The deadline is hard (issue 11 item 8):

- every store request ends ``margin`` seconds before it (the store's :class:`Deadline`, which
  cancels requests already running: :class:`kresume.store.deadline.BoundedFS`), so the sidecar
  normally finishes on its own path with an exact summary;
- at the deadline itself, or at once on a second signal, a watchdog thread prints the summary
  and ends the process with ``os._exit(0)`` whatever its threads are doing.

Leaving then loses nothing: an upload stopped here never wrote its manifest, so the pointer never
names a partial checkpoint (DESIGN.md invariant 1).

A trainer that uses a kresume preemption hook (:mod:`kresume.preemption`) is followed through
:mod:`kresume.sidecar.presence`: while it still runs (finishing its step, writing its final
checkpoint) the sidecar waits for it within the deadline; once it has exited, what is complete is
committed and nothing else is waited for. In native-sidecar mode the deadline counts from the
trainer's SIGTERM (:meth:`Shutdown.follow_trainer`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from kresume.sidecar import presence, scheduling
from kresume.sidecar.ledger import Ledger
from kresume.sidecar.metrics import Health
from kresume.store.deadline import Deadline, exit_now, watch

EXIT_STATUS = 0
"""Exit status after a signal, by the normal path or at the deadline (sidecar/README "Signals and exit")."""


def request_margin(grace_seconds: float) -> float:
    """Seconds before the grace period's end at which store requests are cut: a quarter of the
    grace period, at most 2 s (time for the workers to report and the summary to be printed)."""
    return min(2.0, grace_seconds / 4)


class Shutdown:
    """The deadline set by the first signal, the decisions of the grace period, the forced exit.

    ``requests`` is the store's deadline (shared with its :class:`~kresume.store.storage.TransferSettings`).
    """

    def __init__(self, grace_seconds: float, ledger: Ledger, health: Health, log: logging.Logger,
                 wake: Callable[[], None], requests: Deadline) -> None:
        self.grace_seconds = grace_seconds
        self.ledger = ledger
        self.health = health
        self.log = log
        self.wake = wake
        self.requests = requests
        self.deadline: float | None = None
        """Monotonic seconds when the grace period ends; ``None`` until the first signal."""
        self._lock = threading.Lock()
        self._now = threading.Event()
        self._printed = False
        self.bandwidth: Callable[[], float | None] = lambda: None
        """The measured upload bandwidth, bytes/s (set by the sidecar to its uploader's estimate)."""
        self._aligned = False
        self.signalled = False
        """True after the first SIGTERM/SIGINT."""
        self.leaving: str | None = None
        """Why the sidecar left without a signal (:meth:`leave`), or None."""
        self._watching = False
        self._trainer_state: tuple[bool | None, str | None] | None = None

    def on_signal(self, signum: int, frame: Any = None) -> None:
        """Signal handler: the first signal starts the grace period (or shortens the flush after the trainer
        left to it), a second one ends the process."""
        now = time.monotonic()
        with self._lock:
            first = not self.signalled
            self.signalled = True
            self.deadline = min(self.deadline or now + self.grace_seconds, now + self.grace_seconds) if first else now
        if first:
            self.requests.set(self.deadline - request_margin(self.grace_seconds))
            self._watch()
            self.health.ready, self.health.reason = False, "terminating"
            self.log.info("signal %d: committing for up to %.1f s", signum, max(0.0, self.deadline - now))
        else:
            self.requests.set(now)
            self._now.set()  # the watchdog thread ends the process (no I/O in the handler)
        self.wake()

    def leave(self, seconds: float, why: str) -> None:
        """Start a flush without a signal (legacy mode, the trainer is gone for good: :mod:`kresume.sidecar.
        leaving`): commit what is complete for at most ``seconds``, then the run ends as after SIGTERM (exit
        :data:`EXIT_STATUS`). No-op once a signal or an earlier call set the deadline."""
        now = time.monotonic()
        with self._lock:
            if self.deadline is not None:
                return
            self.deadline = now + seconds
            self.leaving = why
        self.requests.set(self.deadline - request_margin(self.grace_seconds))
        self._watch()
        self.health.ready, self.health.reason = False, "trainer exited"
        self.log.info("%s: committing what is complete for up to %.1f s, then exiting", why, seconds,
                      extra={"fields": {"reason": why, "seconds": seconds}})
        self.wake()

    def stay(self, why: str) -> bool:
        """Call off a flush started by :meth:`leave` (no signal came since): the deadline and the store's
        request limit are removed and the sidecar runs on. Returns False (nothing changed) after a signal."""
        with self._lock:
            if self.signalled or self.leaving is None:
                return False
            self.deadline, self.leaving = None, None
        self.requests.clear()
        self.health.ready, self.health.reason = True, ""
        self.log.warning("%s: staying", why, extra={"fields": {"reason": why}})
        return True

    def _watch(self) -> None:
        """Start the deadline's watchdog thread once (it follows later, earlier deadlines)."""
        if not self._watching:
            self._watching = True
            watch(self.requests, self._at_deadline, after=request_margin(self.grace_seconds), now=self._now,
                  name="kresume-shutdown")

    def follow_trainer(self, trainer: presence.Trainer) -> float:
        """During the grace period: align the deadline to the trainer's SIGTERM once
        (:func:`presence.aligned_deadline`) and log each change of the trainer's state; returns the
        deadline (monotonic seconds)."""
        assert self.deadline is not None
        if not self._aligned and trainer.signal_at is not None and self.signalled:
            self._aligned = True
            new = presence.aligned_deadline(self.deadline, signal_at=trainer.signal_at,
                                            grace_seconds=self.grace_seconds, now_mono=time.monotonic(),
                                            now_wall=time.time())
            if new < self.deadline - 0.5:
                self.log.info("the trainer got SIGTERM %.1f s before the sidecar: %.1f s of the grace period left",
                              time.time() - trainer.signal_at, max(0.0, new - time.monotonic()))
            with self._lock:
                self.deadline = min(self.deadline, new)
            self.requests.set(self.deadline - request_margin(self.grace_seconds))
        state = (trainer.alive, (trainer.notice or {}).get("state"))
        if state != self._trainer_state:
            self._trainer_state = state
            notice = trainer.notice or {}
            fields = {"trainer_alive": trainer.alive, "trainer_state": state[1],
                      "checkpoint": notice.get("checkpoint"), "signal_at": notice.get("signal_at"),
                      "saved_at": notice.get("saved_at")}
            if trainer.alive:
                self.log.info("trainer still running (%s): waiting for its final checkpoint", state[1] or "no notice",
                              extra={"fields": fields})
            elif trainer.alive is False:
                self.log.info("trainer exited (final save: %s%s): committing what is complete", state[1] or "none",
                              f", {notice['checkpoint']}" if notice.get("checkpoint") else "",
                              extra={"fields": fields})
        return self.deadline

    def flush_done(self, now: float, pick_locked: Callable[[float], Any], bandwidth: float | None) -> bool:
        """During the grace period: True when nothing is uploading and nothing left may start.

        Running uploads that can no longer finish in the time left (at ``bandwidth`` bytes/s) are
        cancelled here; ``pick_locked(now)`` says whether a queued one may still start.
        """
        with self.ledger.cv:
            left = (self.deadline or now) - now
            for job in list(self.ledger.inflight.values()):
                if not scheduling.fits(job.size - job.done_bytes, bandwidth, left) and not job.cancel.is_set():
                    job.cancel_reason = "cannot finish within the grace period"
                    job.cancel.set()
            return not self.ledger.inflight and pick_locked(now) is None

    def report_left(self, *, lock_timeout: float = -1) -> None:
        """Log each checkpoint the grace period left behind (queued, never started, or still uploading), with
        the reason: the time left at the measured bandwidth (:attr:`bandwidth`), or the deadline itself."""
        now = time.monotonic()
        left = max(0.0, (self.deadline or now) - now)
        bandwidth = self.bandwidth()
        rate = f"{bandwidth / 1e6:.1f} MB/s" if bandwidth else "unknown bandwidth"
        locked = self.ledger.cv.acquire(timeout=lock_timeout)
        try:
            jobs = [(j, "queued") for j in list(self.ledger.pending.values())]
            jobs += [(j, "uploading") for j in list(self.ledger.inflight.values())]
        finally:
            if locked:
                self.ledger.cv.release()
        for job, where in jobs:
            self.log.warning("not committed: %s (%d B, %s): %s", job.rel, job.size, where,
                             f"cannot upload in the {left:.1f} s left at {rate}" if left > 0
                             else "the grace period ended", extra={"fields": {
                                 "unit": job.rel, "bytes": job.size, "state": where, "seconds_left": round(left, 3),
                                 "bandwidth": bandwidth}})  # fmt: skip

    def summary_line(self) -> str:
        """``kresume sidecar: committed=N abandoned=M bytes=B newest_step=S`` (README "Signals and exit")."""
        s = self.ledger.summary
        newest = self.ledger.newest_step()
        return (f"kresume sidecar: committed={s['committed']} abandoned={s['abandoned']} bytes={s['bytes']} "
                f"newest_step={'none' if newest is None else newest}")

    def finish(self, *, lock_timeout: float = -1) -> None:
        """Give up what is left, log and print the summary line once (stdout, one line)."""
        with self._lock:
            if self._printed:
                return
            self._printed = True
        if self.deadline is not None:
            self.report_left(lock_timeout=lock_timeout)
        self.ledger.drain(timeout=lock_timeout)
        line = self.summary_line()
        self.log.info(line, extra={"fields": dict(self.ledger.summary)})
        os.write(sys.stdout.fileno(), (line + "\n").encode())

    def _at_deadline(self) -> None:
        """Watchdog: the grace period is over (or a second signal came): summary, then exit."""
        running = len(self.ledger.inflight)  # no lock: a thread stuck in a store call must not hold us
        why = ("second signal" if self._now.is_set() else "grace period over" if self.signalled
               else "the flush after the trainer left is over (--leave-grace-seconds)")
        self.log.warning("%s: exiting at the deadline with %d upload(s) still running; nothing partial was "
                         "committed", why, running, extra={"fields": {"running": running, "reason": why}})
        self.finish(lock_timeout=1.0)
        exit_now(EXIT_STATUS)

