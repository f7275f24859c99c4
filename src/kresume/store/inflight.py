"""A process-wide budget of buffers in flight, granted in arrival order.

Every upload asks for the part buffers it will hold before it reads a byte
(:mod:`kresume.store.transfer`), so the bytes a process holds for transfers stay under
``TransferSettings.parts_in_flight * part_size`` whatever the shape of the checkpoint: one big
file, many big files or many small ones. Grants are first come, first served: a big file waiting
for its buffers is not starved by a stream of small files asking for one each.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator


class Budget:
    """``total`` slots; :meth:`hold` blocks until ``n`` are free and it is first in line.

    A request for more than ``total`` is granted ``total`` (it then runs alone), so no request
    can wait forever.
    """

    def __init__(self, total: int) -> None:
        self.total = max(1, int(total))
        self._free = self.total
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self.peak_held = 0
        """Most slots held at once since creation (for tests and the bench)."""

    def acquire(self, n: int) -> int:
        """Wait for ``min(n, total)`` slots (FIFO); return how many were granted."""
        want = max(1, min(int(n), self.total))
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self._free < want:
                    self._cond.wait()
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()
            self._free -= want
            self.peak_held = max(self.peak_held, self.total - self._free)
        return want

    def release(self, n: int) -> None:
        """Give back ``n`` slots granted by :meth:`acquire`."""
        with self._cond:
            self._free = min(self.total, self._free + n)
            self._cond.notify_all()

    @contextlib.contextmanager
    def hold(self, n: int) -> Iterator[int]:
        """``with budget.hold(n) as granted:`` — slots held for the block."""
        granted = self.acquire(n)
        try:
            yield granted
        finally:
            self.release(granted)


_LOCK = threading.Lock()
_BUDGETS: dict[int, Budget] = {}

MMAP_THRESHOLD = 2**20
"""Allocations of at least this many bytes get their own ``mmap`` and go back to the kernel when freed."""


def pin_mmap_threshold() -> bool:
    """Fix glibc's ``M_MMAP_THRESHOLD`` at :data:`MMAP_THRESHOLD` (``mallopt(3)``); False where that is
    not glibc.

    glibc raises the threshold each time a large mmapped block is freed (up to 32 MiB), after which
    8 MiB part buffers come from per-thread arenas that keep freed memory: measured, a folder of
    8 x 100 MB uploaded by 4 workers peaked at 119-127 MiB RSS with a budget of 2 parts, 55 MiB with
    the threshold fixed (``MALLOC_MMAP_THRESHOLD_=1048576``; one 400 MB file: 63 MiB either way).
    Setting it also turns the dynamic adjustment off (mallopt(3)).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, MMAP_THRESHOLD))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def budget(total: int) -> Budget:
    """The process-wide :class:`Budget` of ``total`` slots (one per distinct ``total``); the first call
    also pins the allocator's mmap threshold (:func:`pin_mmap_threshold`), so granted buffers are
    really returned when released."""
    with _LOCK:
        if not _BUDGETS:
            pin_mmap_threshold()
        if total not in _BUDGETS:
            _BUDGETS[total] = Budget(total)
        return _BUDGETS[total]
