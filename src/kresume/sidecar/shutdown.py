"""SIGTERM/SIGINT handling: the grace-period deadline, what may still upload, the summary line.

After the first signal the sidecar keeps committing for ``grace_seconds``: a running upload goes on
only while the measured bandwidth says it can finish in time, and a queued checkpoint starts only
when it is newer than everything committed and fits (:func:`kresume.sidecar.scheduling.fits`).
Nothing partial is ever committed: an upload stopped here never wrote its manifest. A second signal
ends the grace period at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kresume.sidecar import scheduling
from kresume.sidecar.ledger import Ledger
from kresume.sidecar.metrics import Health


class Shutdown:
    """The deadline set by the first signal, and the decisions of the grace period."""

    def __init__(self, grace_seconds: float, ledger: Ledger, health: Health, log: logging.Logger,
                 wake: Callable[[], None]) -> None:
        self.grace_seconds = grace_seconds
        self.ledger = ledger
        self.health = health
        self.log = log
        self.wake = wake
        self.deadline: float | None = None
        """Monotonic seconds when the grace period ends; ``None`` until the first signal."""
        self._lock = threading.Lock()

    def on_signal(self, signum: int, frame: Any = None) -> None:
        """Signal handler: the first signal starts the grace period, a second one ends it."""
        now = time.monotonic()
        with self._lock:
            first = self.deadline is None
            self.deadline = now + self.grace_seconds if first else now
        if first:
            self.health.ready, self.health.reason = False, "terminating"
            self.log.info("signal %d: committing for up to %.1f s", signum, self.grace_seconds)
        else:
            self.log.info("second signal: stopping now")
        self.wake()
        with self.ledger.cv:
            self.ledger.cv.notify_all()

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

    def summary_line(self) -> str:
        """``kresume sidecar: committed=N abandoned=M bytes=B newest_step=S`` (README "Signals and exit")."""
        s = self.ledger.summary
        newest = self.ledger.newest_step()
        return (f"kresume sidecar: committed={s['committed']} abandoned={s['abandoned']} bytes={s['bytes']} "
                f"newest_step={'none' if newest is None else newest}")
