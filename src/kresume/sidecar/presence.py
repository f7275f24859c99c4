"""The sidecar's half of the trainer handshake (:mod:`kresume.preemption`): is a trainer still alive, and
when did its pod's grace period begin.

A trainer that uses a kresume preemption hook holds a shared ``flock(2)`` on ``<watch>/.kresume-trainer.lock``
for its whole life; the kernel drops it when the process ends, however it ends. :func:`probe` asks for the
lock exclusively without blocking: refused means some trainer still runs (it may be finishing its step or
writing its final checkpoint); granted (and released at once) means none does. ``flock`` works between
containers of one pod (same kernel, same inode on the shared volume); on NFS Linux maps it to byte-range
locks on the server.

The notice ``<watch>/.kresume-trainer.json`` says when the trainer got SIGTERM (``signal_at``, epoch seconds,
the node's clock) and how its final save went (``state``, ``checkpoint``). In native-sidecar mode the sidecar
gets its own SIGTERM only after the trainer exited, so its deadline is counted from ``signal_at``
(:func:`aligned_deadline`), not from its own signal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from dataclasses import dataclass
from typing import Any

from kresume import contract


@dataclass(frozen=True)
class Trainer:
    """What the watched folder says about the trainer.

    alive : bool or None — True: a trainer holds the lock; False: the lock file exists and nobody holds it
        (the trainer ended); None: no trainer uses a kresume hook (no lock file), so nothing is known.
    notice : dict or None — the parsed notice (``signal_at``, ``state``, ``checkpoint``, ``step``…).
    """

    alive: bool | None
    notice: dict[str, Any] | None = None
    holder: dict[str, Any] | None = None
    """What the last process to take the lock wrote in the lock file (``pod_uid``, ``pid``, ``started_at``:
    :func:`kresume.preemption.hold_for_life`), or None."""

    @property
    def signal_at(self) -> float | None:
        """Epoch seconds of the trainer's SIGTERM, from the notice."""
        v = (self.notice or {}).get("signal_at")
        return float(v) if isinstance(v, int | float) else None


def probe(root: str) -> Trainer:
    """Look at ``root``'s lock and notice now (two opens, one non-blocking ``flock``; no waiting)."""
    lock = os.path.join(root, contract.TRAINER_LOCK)
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return Trainer(None, read_notice(root))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return Trainer(True, read_notice(root))
            return Trainer(None, read_notice(root))  # locks unsupported here: unknown
        fcntl.flock(fd, fcntl.LOCK_UN)
        return Trainer(False, read_notice(root), _holder(fd))
    finally:
        os.close(fd)


def _holder(fd: int) -> dict[str, Any] | None:
    """The lock file's JSON record, or None (empty, foreign or torn: a holder rewrites it in place)."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(os.pread(fd, 4096, 0))
        if isinstance(data, dict):
            return data
    return None


def read_notice(root: str) -> dict[str, Any] | None:
    """The parsed notice, or None when absent or not a JSON object (it is replaced atomically, so a torn read
    cannot happen; a foreign file is ignored)."""
    path = os.path.join(root, contract.TRAINER_NOTICE)
    with contextlib.suppress(OSError, ValueError):
        with open(path, "rb") as f:
            data = json.loads(f.read(65536))
        if isinstance(data, dict):
            return data
    return None


def aligned_deadline(deadline: float, *, signal_at: float | None, grace_seconds: float, now_mono: float,
                     now_wall: float) -> float:
    """The sidecar's deadline (monotonic seconds) given the trainer's SIGTERM time.

    ``deadline`` was set from the sidecar's own signal (``now + grace_seconds``). When the trainer was signalled
    earlier (native-sidecar mode: the kubelet stops sidecars only after the regular containers exited, all
    within one ``terminationGracePeriodSeconds``), the grace period really ends ``grace_seconds`` after
    ``signal_at``: the earlier of the two is returned (``now_mono`` when that time has passed). A ``signal_at``
    in the future is ignored. A notice never outlives its trainer's container: the hook removes the previous
    one when it starts.
    """
    if signal_at is None:
        return deadline
    age = now_wall - signal_at
    if age < 0:
        return deadline
    return min(deadline, now_mono + max(0.0, grace_seconds - age))
