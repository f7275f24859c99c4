"""A line every so often while a long step of the demo runs (image builds, nodes starting): a newcomer's first
``make demo`` printed nothing for 16.5 min of image builds and 6 min of node start-up (new-user trial,
2026-12-02), which reads as a hang."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def last_line(log: Path | None, width: int = 100) -> str:
    """The last non-empty line of ``log`` (its final 4 KiB), cut to ``width`` characters; ``""`` when none."""
    if log is None:
        return ""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:width] if lines else ""


@contextlib.contextmanager
def beat(say: Callable[[str], None], what: str, *, log: Path | None = None, every: float = 30.0) -> Iterator[None]:
    """While the ``with`` body runs, call ``say`` every ``every`` seconds with ``still <what> (<elapsed>)`` and the
    last line of ``log``. The thread is a daemon and stops with the body, however it ends."""
    done = threading.Event()
    t0 = time.monotonic()

    def loop() -> None:
        while not done.wait(every):
            minutes, seconds = divmod(int(time.monotonic() - t0), 60)
            tail = last_line(log)
            say(f"… still {what} ({minutes}:{seconds:02d})" + (f": {tail}" if tail else ""))

    thread = threading.Thread(target=loop, name="demo-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)
