"""A local checkpoint captured for upload: open file descriptors taken at detection time.

Why descriptors and not paths (measured, writers.md "What this means for the sidecar" §3):
Lightning deletes the previous checkpoint 0.1-6 ms after saving the next, and replaces
``last.ckpt`` by rename; a descriptor opened before the unlink or rename still reads the full,
correct file. An in-place rewrite changes the same inode, so :meth:`LocalFile.check_unchanged`
compares size, mtime, ctime and inode after the upload and the commit is abandoned when one moved
(the ctime catches a same-size rewrite that sets the mtime back, ``rsync --inplace -t`` style).

Safety rules (DESIGN.md: "no file outside the watched folder is ever read"): symlinks are recorded,
never followed; only regular files are opened, with ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO swapped in
cannot block us) and checked with ``fstat``; every path must resolve inside ``root``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kresume.store import errors

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


@dataclass
class LocalFile:
    """One regular file of a checkpoint, held open.

    ``relpath`` is ``""`` for a single-file checkpoint, else the ``/``-separated path inside the folder.
    ``size`` is bytes; ``mtime_ns``, ``ctime_ns`` nanoseconds since the epoch; ``ino`` and ``nlink``
    (hard links) as ``fstat`` saw them at capture.
    """

    relpath: str
    size: int
    mtime_ns: int
    fd: int
    display: str
    ino: int = 0
    ctime_ns: int = 0
    nlink: int = 1

    def check_unchanged(self, crc32c: str | None = None) -> None:
        """Raise :class:`~kresume.store.errors.SourceChanged` unless size, mtime, inode and ctime all
        still match the capture.

        A ctime that moved together with a fall of the link count is accepted: the file was
        unlinked or renamed over after capture (Lightning deletes the previous checkpoint 0.1-6 ms
        after the next save, writers.md §2), and the open descriptor still reads the complete
        bytes (writers.md "What this means for the sidecar" §3).

        With ``crc32c`` (hex, the CRC-32C of the bytes that were read for the upload), a change of the
        ctime, or of the ctime and an mtime set *back* — same inode, same size; a write moves the mtime
        forward, so a write in progress is never taken — is accepted when the bytes, read again through
        the descriptor, still have that CRC-32C (and nothing moved during that read): what was sent is
        what the file holds. The capture then takes the new mtime and ctime. Measured cause: fsspec's ``LocalFileOpener.commit`` (Lightning's
        atomic save) renames the finished file into place and then ``chmod``s it, and ``shutil.move``
        across file systems copies, then ``copystat``s (the mtime goes back to the temporary file's);
        the sidecar can capture between the two, and 10-25 % of Lightning's 8.9 MB checkpoints were
        uploaded twice. Any other change (a rewrite, a changed size or inode, different bytes) abandons
        the commit; the sidecar captures the file again.
        """
        st = os.fstat(self.fd)
        moved = self._moved(st)
        if (moved and crc32c is not None and set(moved) <= {"mtime", "ctime"} and st.st_mtime_ns <= self.mtime_ns
                and self._holds(crc32c, st)):
            return
        if moved:
            detail = (f"size {self.size}→{st.st_size} B" if "size" in moved else " and ".join(moved) + " changed")
            raise errors.SourceChanged(
                self.display,
                f"{detail} while uploading ("
                + ("rewritten in place with its mtime set back, or its permissions changed)" if moved == ["ctime"]
                   else "rewritten in place)"),
                fix="nothing was committed; the sidecar commits the next complete version, by hand run "
                    "kresume commit again once the writer is done",
            )

    def _moved(self, st: os.stat_result) -> list[str]:
        moved = [what for what, was, now in (("size", self.size, st.st_size), ("mtime", self.mtime_ns, st.st_mtime_ns),
                                             ("inode", self.ino, st.st_ino)) if was != now]
        if st.st_ctime_ns != self.ctime_ns and not st.st_nlink < self.nlink:
            moved.append("ctime")
        return moved

    def content_crc32c(self, piece: int = 4 << 20) -> str | None:
        """CRC-32C (8 hex digits) of the file's ``size`` bytes, read from the held descriptor with ``os.pread`` in
        ``piece``-byte reads (one buffer at a time); None when fewer bytes could be read (truncated)."""
        import google_crc32c

        value, offset = 0, 0
        while offset < self.size:
            data = os.pread(self.fd, min(piece, self.size - offset), offset)
            if not data:
                return None
            value = google_crc32c.extend(value, data)
            offset += len(data)
        return f"{value:08x}"

    def _holds(self, crc32c: str, st: os.stat_result) -> bool:
        """True when the file's bytes now have CRC-32C ``crc32c`` and its stat stayed ``st`` during the read;
        then the capture takes ``st``'s mtime and ctime."""
        now = self.content_crc32c()
        after = os.fstat(self.fd)
        if (after.st_size, after.st_ino, after.st_mtime_ns, after.st_ctime_ns) != (
                st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns) or now != crc32c:
            return False
        self.mtime_ns, self.ctime_ns, self.nlink = st.st_mtime_ns, st.st_ctime_ns, st.st_nlink
        return True


@dataclass
class LocalCheckpoint:
    """A file or folder checkpoint with every regular file held open (close it, or use ``with``)."""

    path: Path
    name: str
    kind: str  # "file" | "dir"
    files: list[LocalFile]
    links: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def mtime_ns(self) -> int:
        """Newest mtime among the files, ns: when the checkpoint was last written."""
        return max((f.mtime_ns for f in self.files), default=0)

    @property
    def created_at(self) -> str:
        return datetime.fromtimestamp(self.mtime_ns / 1e9, UTC).isoformat()

    def close(self) -> None:
        for f in self.files:
            try:
                os.close(f.fd)
            except OSError:
                pass
        self.files = []

    def __enter__(self) -> LocalCheckpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _open_regular(path: str, relpath: str, display: str) -> LocalFile:
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except PermissionError as exc:
        raise errors.SourceUnreadable(
            display, f"permission denied (uid {os.getuid()})",
            fix="run the sidecar as the trainer's uid, or give both the same fsGroup and make the "
                "trainer write group-readable files (safetensors 0.8 writes mode 0600)",
        ) from exc
    except OSError as exc:
        raise errors.SourceError(display, f"cannot open: {exc.strerror}") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise errors.SourceError(display, "not a regular file")
    return LocalFile(relpath, st.st_size, st.st_mtime_ns, fd, display, st.st_ino, st.st_ctime_ns, st.st_nlink)


def snapshot(path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None) -> LocalCheckpoint:
    """Capture the checkpoint at ``path`` (a file or a folder) by opening every regular file now.

    Parameters
    ----------
    path : path-like
        The checkpoint. A top-level symlink is resolved once, and only when its target is inside ``root``.
    root : path-like, optional
        Nothing outside it is read. Default: the folder itself, or a file's parent folder.

    Returns
    -------
    LocalCheckpoint
        Holding one open descriptor per regular file. Symlinks inside a folder are recorded in
        ``links`` (relative path, link text) and never followed — only relative ones without ``..``
        (:func:`link_is_portable`); sockets/FIFOs/devices go to ``skipped``.

    Raises
    ------
    OutsideRoot
        ``path`` (after resolving a top-level link) is outside ``root``, or a folder holds a link that
        is absolute or climbs with ``..`` (its file would be missing from the commit).
    SourceUnreadable
        A file is not readable by this process (e.g. mode 0600 owned by another uid).
    SourceError
        ``path`` does not exist, is empty, or is not a file or folder.
    """
    p = Path(path)
    display = str(p)
    root_real = os.path.realpath(root if root is not None else (p.parent if not p.is_dir() else p))
    real = os.path.realpath(p)
    if not _inside(real, root_real):
        raise errors.OutsideRoot(display, f"resolves to {real}, outside {root_real}")
    try:
        st = os.stat(real, follow_symlinks=False)
    except FileNotFoundError as exc:
        raise errors.SourceError(display, "does not exist") from exc
    name = Path(real).name
    if stat.S_ISREG(st.st_mode):
        f = _open_regular(real, "", display)
        return LocalCheckpoint(Path(real), name, "file", [f])
    if not stat.S_ISDIR(st.st_mode):
        raise errors.SourceError(display, "is neither a regular file nor a folder")
    files: list[LocalFile] = []
    links: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    try:
        for dirpath, dirnames, filenames in os.walk(real, followlinks=False):
            rel_dir = os.path.relpath(dirpath, real)
            for d in list(dirnames):
                full = os.path.join(dirpath, d)
                if os.path.islink(full):  # os.walk lists links to folders as dirnames
                    dirnames.remove(d)
                    links.append(_link(full, _rel(rel_dir, d), display))
            for fn in filenames:
                full = os.path.join(dirpath, fn)
                rel = _rel(rel_dir, fn)
                lst = os.lstat(full)
                if stat.S_ISLNK(lst.st_mode):
                    links.append(_link(full, rel, display))
                elif stat.S_ISREG(lst.st_mode):
                    files.append(_open_regular(full, rel, os.path.join(display, rel)))
                else:
                    skipped.append((rel, "not a regular file"))
    except BaseException:
        for f in files:
            os.close(f.fd)
        raise
    if not files:
        raise errors.SourceError(display, "folder has no regular files")
    files.sort(key=lambda f: f.relpath)
    return LocalCheckpoint(Path(real), name, "dir", files, sorted(links), skipped)


def link_is_portable(target: str) -> bool:
    """True for a link text that restore recreates: relative and without ``..`` components, so it
    can only point inside the checkpoint folder (``RunStore.restore`` applies the same rule)."""
    return bool(target) and not os.path.isabs(target) and ".." not in Path(target).parts


def _link(full: str, rel: str, display: str) -> tuple[str, str]:
    """``(rel, link text)`` of a symlink inside a folder checkpoint.

    Raises ``OutsideRoot`` when the link is absolute or climbs with ``..``: its target would not be
    uploaded (nothing outside the folder is ever read) nor recreated on restore, so the committed
    checkpoint would silently lack that file (found by a first-use trial: an HF folder whose
    ``pytorch_model.bin`` linked to a file elsewhere was committed without its weights).
    """
    target = os.readlink(full)
    if not link_is_portable(target):
        raise errors.OutsideRoot(os.path.join(display, rel),
                                 f"is a link to {target}, outside the checkpoint folder; kresume never reads "
                                 "outside it, so that file would be missing from the committed checkpoint. Copy the "
                                 "file into the folder (or link with a relative path inside it)")
    return rel, target


def _rel(rel_dir: str, name: str) -> str:
    return name if rel_dir in (".", "") else f"{rel_dir.replace(os.sep, '/')}/{name}"
