"""A complete checkpoint captured for upload, and the keys that say "already committed"."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from kresume.formats.metadata import CheckpointInfo
from kresume.formats.units import Unit
from kresume.store import errors
from kresume.store.local import LocalCheckpoint
from kresume.store.manifest import Manifest

CommitKey = tuple[str, int, tuple[tuple[str, int], ...]]
"""``(name, newest mtime ns, ((relpath, size), …))``: equal keys mean the same local bytes."""


class UploadCancelled(errors.StoreError):
    """Raised from the progress callback to stop a commit before its manifest is written
    (superseded, or the SIGTERM deadline): nothing of it becomes visible."""


def unit_key(unit: Unit) -> CommitKey:
    """Key of a unit as listed (relpaths inside the unit; ``""`` for a single file)."""
    cut = len(unit.rel) + 1
    files = tuple(sorted(("" if unit.kind == "file" else e.rel[cut:], e.size) for e in unit.files))
    return (unit.name, unit.max_mtime_ns, files)


def snapshot_key(snap: LocalCheckpoint) -> CommitKey:
    """Key of a captured checkpoint (``fstat`` values at capture)."""
    return (snap.name, snap.mtime_ns, tuple(sorted((f.relpath, f.size) for f in snap.files)))


def captured_as_listed(snap: LocalCheckpoint, unit: Unit) -> bool:
    """True when the captured files are the ones the judge saw: same key, and every file's inode
    and ctime as listed (a same-size rewrite between judge and capture that set the mtime back
    moves the ctime)."""
    if snapshot_key(snap) != unit_key(unit):
        return False
    cut = len(unit.rel) + 1
    listed = {("" if unit.kind == "file" else e.rel[cut:]): (e.ino, e.ctime_ns) for e in unit.files}
    return all(listed.get(f.relpath) == (f.ino, f.ctime_ns) for f in snap.files)


def committed_key(m: Manifest) -> CommitKey | None:
    """Key of a committed manifest (needs ``source.mtime_ns``, recorded by the store's commit)."""
    mtime = m.source.get("mtime_ns")
    if not isinstance(mtime, int):
        return None
    return (m.name, mtime, tuple(sorted((f.path, f.size) for f in m.files)))


@dataclass(eq=False)
class CommitTask:
    """One checkpoint between capture and commit. Times: ``written_at`` epoch seconds (newest
    mtime), ``not_before``/``started`` monotonic seconds; sizes in bytes."""

    rel: str
    key: CommitKey
    snap: LocalCheckpoint
    info: CheckpointInfo
    written_at: float
    attempts: int = 0
    not_before: float = 0.0
    started: float | None = None
    done_bytes: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = ""
    access: Any = None
    """The unit's access fingerprint at capture (:func:`kresume.sidecar.scanner.access_fingerprint`)."""
    extra: dict[str, Any] = field(default_factory=dict)
    part: bool = False
    """Committed as this rank's part of a multi-rank checkpoint (:mod:`kresume.sidecar.multirank`)."""

    @property
    def size(self) -> int:
        """Bytes to upload."""
        return self.snap.total_bytes

    @property
    def priority(self) -> int:
        """Newer checkpoints first: the newest file mtime in ns."""
        return self.key[1]
