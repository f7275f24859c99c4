"""A directory listing taken without following symlinks: the input of every pure decision.

The sidecar never trusts events (writers.md, "What this means for the sidecar" 1): it rescans the
watched folder and decides checkpoint units and completeness from this listing plus cheap content
checks. :func:`scan` is the only function here that touches the filesystem.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

Kind = Literal["file", "dir", "link", "other"]


@dataclass(frozen=True)
class Entry:
    """One name under the watched root, as ``lstat`` saw it (a symlink is never followed).

    ``rel`` is the POSIX path relative to the root (no leading ``./``, never containing ``..``);
    ``size`` is in bytes, ``mtime_ns`` and ``ctime_ns`` in nanoseconds since the epoch (a writer can
    set the mtime back, never the ctime: ``chmod``, ``chown`` and every write move it); ``target`` is
    the raw ``readlink`` text for links (``None`` otherwise).
    """

    rel: str
    kind: Kind
    size: int = 0
    mtime_ns: int = 0
    ino: int = 0
    dev: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    ctime_ns: int = 0
    target: str | None = None

    @property
    def name(self) -> str:
        """The last path component."""
        return self.rel.rsplit("/", 1)[-1]

    @property
    def parent(self) -> str:
        """The relative parent folder (``""`` for the root)."""
        return self.rel.rsplit("/", 1)[0] if "/" in self.rel else ""

    @property
    def fingerprint(self) -> tuple[str, int, int, int, int]:
        """``(rel, size, mtime_ns, ino, ctime_ns)``: changes whenever the file is rewritten or
        replaced, also by a same-size rewrite that restores the mtime (``rsync --inplace -t``)."""
        return (self.rel, self.size, self.mtime_ns, self.ino, self.ctime_ns)

    @property
    def access(self) -> tuple[str, int, int, int, int, int]:
        """``(rel, ino, mode, uid, gid, ctime_ns)``: changes when the entry's permissions or owner do."""
        return (self.rel, self.ino, self.mode, self.uid, self.gid, self.ctime_ns)


Listing = Mapping[str, Entry]
"""Entries keyed by ``Entry.rel``."""


def entry_from_stat(rel: str, st: os.stat_result, target: str | None = None) -> Entry:
    """Build an :class:`Entry` from an ``lstat`` result."""
    if stat.S_ISLNK(st.st_mode):
        kind: Kind = "link"
    elif stat.S_ISREG(st.st_mode):
        kind = "file"
    elif stat.S_ISDIR(st.st_mode):
        kind = "dir"
    else:
        kind = "other"
    return Entry(
        rel=rel,
        kind=kind,
        size=st.st_size if kind == "file" else 0,
        mtime_ns=st.st_mtime_ns,
        ino=st.st_ino,
        dev=st.st_dev,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        ctime_ns=st.st_ctime_ns,
        target=target,
    )


def scan(root: str | os.PathLike[str], *, max_depth: int = 8) -> dict[str, Entry]:
    """List everything under ``root`` (not ``root`` itself) with ``lstat``, never following links.

    Symlinked folders are recorded as links and not descended into, so nothing outside ``root`` is
    ever listed. Names vanishing during the walk (trainers delete old checkpoints 0.1–6 ms after
    saving a new one, writers.md §2) are skipped silently. ``max_depth`` bounds the recursion
    (folders deeper than that are listed but not entered).

    Raises ``FileNotFoundError`` / ``NotADirectoryError`` when ``root`` itself is missing.
    """
    out: dict[str, Entry] = {}
    for entry in _walk(os.fspath(root), "", max_depth):
        out[entry.rel] = entry
    return out


def _walk(top: str, prefix: str, depth: int) -> Iterator[Entry]:
    try:
        it = os.scandir(top)
    except (FileNotFoundError, NotADirectoryError):
        if not prefix:
            raise
        return
    except PermissionError:
        return
    with it:
        for d in it:
            rel = f"{prefix}{d.name}"
            try:
                st = d.stat(follow_symlinks=False)
                target = os.readlink(d.path) if stat.S_ISLNK(st.st_mode) else None
            except (FileNotFoundError, NotADirectoryError):
                continue
            e = entry_from_stat(rel, st, target)
            yield e
            if e.kind == "dir" and depth > 0:
                yield from _walk(d.path, rel + "/", depth - 1)


def children(listing: Listing, folder: str) -> list[Entry]:
    """Direct children of ``folder`` (``""`` = root), sorted by name."""
    return sorted((e for e in listing.values() if e.parent == folder), key=lambda e: e.rel)


def descendants(listing: Listing, folder: str) -> list[Entry]:
    """Every entry below ``folder`` (recursive), sorted by rel path."""
    pre = folder + "/"
    return sorted((e for e in listing.values() if e.rel.startswith(pre)), key=lambda e: e.rel)
