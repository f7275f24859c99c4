"""Progress as log lines (bytes, rate, ETA), for transfers whose output is a container log rather than a terminal
(``kresume restore`` in the ``kresume-restore`` init container; issue 15 item 4)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO


def human(n: float) -> str:
    """Bytes in binary units, 3 significant digits: ``512 B``, ``1.50 MiB``, ``12.3 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"


def line(label: str, done: int, total: int, elapsed: float) -> str:
    """One progress line: ``LABEL: 512 MiB of 1.00 GiB (50 %), 210 MB/s, ETA 2.4 s`` (rate in MB/s = 10^6 B/s,
    ETA at the mean rate so far; ``done`` once complete)."""
    pct = 100.0 * done / total if total else 100.0
    rate = done / elapsed if elapsed > 0 else 0.0
    if done >= total:
        tail = f"done in {elapsed:.1f} s"
    elif rate > 0:
        tail = f"ETA {(total - done) / rate:.1f} s"
    else:
        tail = "ETA unknown"
    return f"{label}: {human(done)} of {human(total)} ({pct:.0f} %), {rate / 1e6:.0f} MB/s, {tail}"


class ProgressLog:
    """A progress callback (``advance(n)``, thread-safe) that writes :func:`line` to ``stream`` at most every
    ``every`` seconds, and once at :meth:`finish`."""

    def __init__(self, label: str, total: int, every: float, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total, self.every = label, total, every
        self.stream = stream or sys.stderr
        self.clock = clock
        self.start = clock()
        self.done = 0
        self._next = self.start + every
        self._lock = threading.Lock()

    def advance(self, n: int) -> None:
        """``n`` more bytes arrived."""
        with self._lock:
            self.done += n
            now = self.clock()
            if now >= self._next and self.done < self.total:
                self._next = now + self.every
                self._write(now)

    def finish(self, what: str = "") -> None:
        """Write the final line (``what`` appended, e.g. the source)."""
        with self._lock:
            self._write(self.clock(), what)

    def _write(self, now: float, what: str = "") -> None:
        text = line(self.label, self.done, self.total, now - self.start) + (f" ({what})" if what else "")
        print(text, file=self.stream, flush=True)
