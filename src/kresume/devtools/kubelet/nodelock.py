"""One real node per loopback address on this machine: an exclusive ``flock`` held for the node's life.

Two real-node stacks on one machine (a demo and a test run, two test runs) both name their first node
``127.0.0.1``; the second kubelet cannot bind the first one's port 10250, and kubelet v1.20's container GC deletes
the ``/var/log/pods`` folders of pods it does not run, so both stacks hang or lose their pods' logs (measured:
the second stack waited for its Node to turn Ready until its timeout). The lock turns that into an error at once,
naming the process that holds the address.

The lock is ``fcntl.flock`` on ``/run/kresume-node-<address>.lock``: the kernel drops it when the holder exits,
however it exits (SIGKILL included), so a stale file never blocks a later start. The file's text (pid and command
line of the holder) is only for the message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path

LOCK_DIR = Path("/run")
"""Where the lock files live (tmpfs: gone at reboot)."""


class NodeAddressBusy(RuntimeError):
    """Another process on this machine runs a real node with this address (``holder``: its pid and command)."""

    def __init__(self, address: str, holder: str) -> None:
        super().__init__(
            f"another kresume real node with address {address} runs on this machine ({holder}); only one real-node "
            "stack per address can run at a time: wait for it or stop it, or use the node agent (--node agent)")
        self.address, self.holder = address, holder


def lock_path(address: str, lock_dir: Path | None = None) -> Path:
    """``<lock_dir>/kresume-node-<address>.lock`` (``lock_dir`` default :data:`LOCK_DIR`)."""
    return (lock_dir or LOCK_DIR) / f"kresume-node-{address}.lock"


class NodeLock:
    """The exclusive lock of one node address; :meth:`acquire` then :meth:`release` (idempotent)."""

    def __init__(self, address: str, lock_dir: Path | None = None) -> None:
        self.address = address
        self.path = lock_path(address, lock_dir)
        self._fd: int | None = None

    def acquire(self) -> NodeLock:
        """Take the lock without waiting. Raises :class:`NodeAddressBusy` when another process holds it, OSError
        when the lock file cannot be opened."""
        if self._fd is not None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = _read(fd)
            os.close(fd)
            raise NodeAddressBusy(self.address, text or "a process that left no name") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays: deleting it could let two processes lock two different files)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor releases the flock


def holder(address: str, lock_dir: Path | None = None) -> str | None:
    """Who holds ``address`` now (pid and command), or None when nobody does (the check takes and drops the lock;
    a start right after it can still meet :class:`NodeAddressBusy`)."""
    path = lock_path(address, lock_dir)
    if not path.exists():
        return None
    try:
        NodeLock(address, lock_dir).acquire().release()
    except NodeAddressBusy as busy:
        return busy.holder
    except OSError:
        return None
    return None


def _read(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 400, 0).decode(errors="replace").strip()
    return ""
