"""Event hints from watchdog, and the choice between inotify and polling.

Events are only hints (writers.md "What this means for the sidecar" 1, 2, 4): the handler puts a
wake-up on a queue and the main loop rescans and judges content. The sidecar's own reads produce
``FileOpenedEvent``/``FileClosedNoWriteEvent``; those are dropped so they cannot cause rescans.
inotify sees nothing written by other nodes on NFS/FUSE/CIFS (writers.md 5, watchdog's README for
CIFS), so ``auto`` mode polls there.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from watchdog.events import FileClosedNoWriteEvent, FileOpenedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

NETWORK_FS = {"nfs", "nfs4", "cifs", "smb", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "gpfs",
              "beegfs", "afs", "ncpfs", "fuse", "fuseblk", "sshfs", "davfs", "virtiofs"}


def parse_mounts(text: str) -> list[tuple[str, str]]:
    """``[(mountpoint, fstype)]`` from ``/proc/mounts`` text (octal escapes like ``\\040`` decoded)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            mp = parts[1].encode().decode("unicode_escape")
            out.append((mp, parts[2]))
    return out


def fs_type_for(path: str, mounts: list[tuple[str, str]]) -> str:
    """The fstype of the longest mount point containing ``path`` (an absolute real path)."""
    best, fstype = "", "unknown"
    for mp, t in mounts:
        norm = mp.rstrip("/") or "/"
        inside = path == norm or path.startswith(norm.rstrip("/") + "/") or norm == "/"
        if inside and len(norm) >= len(best):
            best, fstype = norm, t
    return fstype


def is_network_fs(fstype: str) -> bool:
    """True for network and FUSE filesystems (``fuse.gcsfuse``, ``nfs4``, ``cifs`` …)."""
    return fstype in NETWORK_FS or fstype.startswith("fuse.")


def choose_mode(mode: str, path: str, mounts_file: str = "/proc/mounts") -> tuple[str, str]:
    """``(effective_mode, why)``: ``auto`` becomes ``poll`` on network/FUSE volumes, else ``inotify``."""
    if mode != "auto":
        return mode, "set by --watch-mode"
    try:
        with open(mounts_file) as f:
            fstype = fs_type_for(os.path.realpath(path), parse_mounts(f.read()))
    except OSError:
        return "poll", f"cannot read {mounts_file}"
    if is_network_fs(fstype):
        return "poll", f"{path} is on {fstype} (inotify misses remote writes)"
    return "inotify", f"{path} is on {fstype}"


@dataclass
class Hints:
    """What arrived since the main loop last looked: a wake-up event plus whether a folder was created."""

    wake: threading.Event
    dir_created: bool = False
    count: int = 0


class HintHandler(FileSystemEventHandler):
    """watchdog handler that only records a hint and wakes the main loop (never does I/O)."""

    def __init__(self, hints: Hints) -> None:
        self.hints = hints

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, (FileOpenedEvent, FileClosedNoWriteEvent)):
            return
        if event.is_directory and event.event_type == "created":
            self.hints.dir_created = True
        self.hints.count += 1
        self.hints.wake.set()


def start_observer(path: str, hints: Hints) -> Observer:
    """Start a recursive inotify observer on ``path`` that feeds ``hints``; caller stops it."""
    obs = Observer()
    obs.schedule(HintHandler(hints), path, recursive=True)
    obs.daemon = True
    obs.start()
    return obs
