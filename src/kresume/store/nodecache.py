"""The node-local tier: committed checkpoints kept on the node's disk, so a replacement pod on the same node
restores at local-disk speed instead of downloading (issue 15 item 3).

Layout under the cache root (a hostPath the policy names, shared by every pod of the node)::

    <root>/<run key>/<checkpoint id>/manifest.json      the committed manifest, byte for byte (written last)
    <root>/<run key>/<checkpoint id>/data/<name>[/<relpath>]
    <root>/<run key>/run.url                            the run URL the key stands for (for people)
    <root>/<run key>/.tmp-<id>-<random>/                an entry being written (renamed into place when whole)
    <root>/.lock                                        flock(2) held while entries are evicted

``<run key>`` is the first 24 hex digits of the SHA-256 of the run URL. An entry exists only once its folder
was renamed into place, with ``manifest.json`` inside; an interrupted write leaves a ``.tmp-`` folder that
eviction removes after an hour.

Writing (:meth:`NodeCache.put`, the sidecar, right after a commit, from the descriptors it uploaded from): each
file is cloned (``FICLONE``: copy-on-write, no data copied), else hard-linked (``linkat`` of the descriptor: same
file system *and* mount), else copied in the kernel (``copy_file_range``; the bytes were just written, so the
page cache usually holds them), else read and written. A hard link shares the trainer's inode: a trainer that
later rewrites that file in place changes the entry, which the CRC check on restore then catches.

Reading (:meth:`NodeCache.restore_into`, ``kresume restore``): the entry is used only when its manifest has the
committed manifest's id, name and every file's path, size and CRC-32C; each file is copied once into the
restore's staging folder with its CRC-32C computed on the way, and any mismatch drops the entry and falls back
to the store.

Eviction (:func:`plan_eviction`, pure): after each put, while the entries' bytes exceed ``max_bytes``, the
oldest entries go first (by commit time), never the newest entry of a run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google_crc32c

from kresume.store.manifest import FileEntry, Manifest

log = logging.getLogger("kresume.store.nodecache")

FICLONE = 0x40049409
"""``ioctl(dest_fd, FICLONE, src_fd)``: share the source's extents copy-on-write (linux/fs.h; btrfs, XFS, …)."""
COPY_CHUNK = 64 * 2**10
"""Bytes per read when a cached file is copied with its CRC-32C computed. Small on purpose: each read is a new
``bytes`` (google_crc32c takes no buffer views), and glibc serves allocations of 128 KiB and more with mmap(2) and
its page faults. Measured on this machine, 1 GB warm: 64 KiB pieces 1.11 s, 1 MiB 4.2 s, 8 MiB 2.2-3.0 s, ``cp``
0.97-1.17 s (bench/RESULTS.md "Node-local tier")."""
STALE_TMP_SECONDS = 3600.0
"""A ``.tmp-`` entry older than this is an interrupted write and is removed at eviction."""
MANIFEST = "manifest.json"


def run_key(run_url: str) -> str:
    """The folder name of a run: 24 hex digits of SHA-256 of its URL (without a trailing ``/``)."""
    return hashlib.sha256(run_url.rstrip("/").encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Entry:
    """One complete cache entry: where, which run/checkpoint, bytes (from its manifest), commit time (epoch s)."""

    path: Path
    run: str
    checkpoint: str
    bytes: int
    committed: float


def plan_eviction(entries: Iterable[Entry], max_bytes: int) -> list[Entry]:
    """The entries to delete so the rest fit ``max_bytes``: oldest ``committed`` first, never the newest entry of
    each run (by checkpoint id, which orders by step and commit time). Pure."""
    entries = list(entries)
    newest: dict[str, Entry] = {}
    for e in entries:
        if e.run not in newest or e.checkpoint > newest[e.run].checkpoint:
            newest[e.run] = e
    total = sum(e.bytes for e in entries)
    out = []
    for e in sorted(entries, key=lambda e: (e.committed, e.checkpoint)):
        if total <= max_bytes:
            break
        if newest.get(e.run) is e:
            continue
        out.append(e)
        total -= e.bytes
    return out


def same_content(a: Manifest, b: Manifest) -> bool:
    """True when ``a`` and ``b`` are the same checkpoint: id, name, and every file's path, size and CRC-32C."""
    def files(m: Manifest) -> list[tuple[str, int, str]]:
        return sorted((f.path, f.size, f.crc32c) for f in m.files)

    return a.id == b.id and a.name == b.name and files(a) == files(b)


@dataclass(frozen=True)
class PutResult:
    """How :meth:`NodeCache.put` wrote an entry: ``method`` per file (clone/link/copy/rw, the slowest one used),
    bytes, seconds; ``evicted``: checkpoint ids removed to stay under the cap."""

    method: str
    bytes: int
    seconds: float
    evicted: tuple[str, ...] = ()


class NodeCache:
    """The cache at ``root`` (created if missing), capped at ``max_bytes`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    # ------------------------------------------------------------------ paths
    def run_dir(self, run_url: str) -> Path:
        """The folder of a run's entries."""
        return self.root / run_key(run_url)

    def entry_dir(self, run_url: str, checkpoint: str) -> Path:
        """The folder of one entry (it may not exist)."""
        return self.run_dir(run_url) / checkpoint

    # ------------------------------------------------------------------ write
    def put(self, run_url: str, manifest: Manifest, files: Iterable[Any]) -> PutResult | None:
        """Keep the just-committed ``manifest``'s data in the cache; ``files`` are its open local files
        (``kresume.store.local.LocalFile``: ``relpath``, ``size``, ``fd``, ``check_unchanged()``). Returns None
        (and writes nothing) when the checkpoint alone exceeds the cap, is already cached, or its files changed
        since they were uploaded. Raises ``OSError`` when the cache cannot be written (the caller logs it)."""
        if manifest.total_bytes > self.max_bytes:
            return None
        final = self.entry_dir(run_url, manifest.id)
        if (final / MANIFEST).exists():
            return None
        t0 = time.monotonic()
        run_dir = self.run_dir(run_url)
        run_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            url_file = run_dir / "run.url"
            if not url_file.exists():
                url_file.write_text(run_url.rstrip("/") + "/\n")
        tmp = run_dir / f".tmp-{manifest.id}-{secrets.token_hex(3)}"
        by_path = {f.relpath: f for f in files}
        used = set()
        try:
            for local in by_path.values():
                local.check_unchanged()  # raises SourceChanged: the bytes may differ from the committed CRCs
            for entry in manifest.files:
                local = by_path.get(entry.path)
                if local is None or local.size != entry.size:
                    return None
                dst = _data_path(tmp, manifest, entry)
                dst.parent.mkdir(parents=True, exist_ok=True)
                method = _put_file(local.fd, local.size, dst)
                used.add(method)
                if method in ("copy", "rw"):
                    local.check_unchanged()  # the copy read the bytes: they were still the committed ones
                # (a link adds a name, which moves the inode's ctime: nothing to check, nothing was read)
            (tmp / MANIFEST).write_bytes(manifest.to_json())
            os.rename(tmp, final)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise
            from kresume.store import errors

            if isinstance(exc, errors.SourceChanged):
                return None
            raise
        evicted = self.evict()
        order = ("rw", "copy", "link", "clone")
        method = min(used, key=order.index) if used else "clone"
        return PutResult(method, manifest.total_bytes, round(time.monotonic() - t0, 4), tuple(e.checkpoint for e in evicted))

    # ------------------------------------------------------------------ read
    def lookup(self, run_url: str, manifest: Manifest) -> Path | None:
        """The entry folder of ``manifest`` when its cached manifest has the same content (:func:`same_content`)
        and every data file has its size; else None (an entry that does not match is removed)."""
        folder = self.entry_dir(run_url, manifest.id)
        try:
            cached = Manifest.from_json((folder / MANIFEST).read_bytes(), expected_id=manifest.id)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._drop(folder, f"unreadable manifest ({exc})")
            return None
        if not same_content(cached, manifest):
            self._drop(folder, "its manifest differs from the committed one")
            return None
        for f in manifest.files:
            try:
                size = _data_path(folder, manifest, f).stat().st_size
            except OSError:
                size = -1
            if size != f.size:
                self._drop(folder, f"{f.path or manifest.name}: {size} B, manifest says {f.size} B")
                return None
        return folder

    def restore_into(self, run_url: str, manifest: Manifest, staging: Path,
                     progress: Callable[[int], None] | None = None) -> bool:
        """Copy ``manifest``'s cached files into ``staging/<name>`` (the restore's staging folder), computing each
        file's CRC-32C as it is copied; True when every file matched. False (nothing usable cached, or a size or
        CRC mismatch: the entry is removed and what was copied deleted) means: download from the store."""
        folder = self.lookup(run_url, manifest)
        if folder is None:
            return False
        written: list[Path] = []
        for f in manifest.files:
            src = _data_path(folder, manifest, f)
            dst = staging / manifest.name if not f.path else staging / manifest.name / f.path
            dst.parent.mkdir(parents=True, exist_ok=True)
            written.append(dst)
            try:
                crc, size = _copy_with_crc(src, dst, progress)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                    raise  # the destination's problem: downloading would fail the same way
                self._drop(folder, f"{src}: {exc}")
                _remove(written)
                return False
            if size != f.size or f"{crc:08x}" != f.crc32c:
                self._drop(folder, f"{f.path or manifest.name}: crc32c {crc:08x} / {size} B, manifest says "
                                   f"{f.crc32c} / {f.size} B (changed on disk)")
                _remove(written)
                return False
        return True

    # ------------------------------------------------------------------ eviction
    def entries(self) -> list[Entry]:
        """Every complete entry under the root."""
        out = []
        if not self.root.is_dir():
            return out
        for run_dir in self.root.iterdir():
            if not run_dir.is_dir() or run_dir.name.startswith("."):
                continue
            for folder in run_dir.iterdir():
                if folder.name.startswith(".") or not folder.is_dir():
                    continue
                try:
                    m = Manifest.from_json((folder / MANIFEST).read_bytes())
                except (OSError, ValueError):
                    continue
                committed = _epoch(m.committed_at) or folder.stat().st_mtime
                out.append(Entry(folder, run_dir.name, m.id, m.total_bytes, committed))
        return out

    def evict(self) -> list[Entry]:
        """Remove entries over the cap (:func:`plan_eviction`) and stale ``.tmp-`` folders, under the cache's
        lock (two sidecars of one node may evict at once); returns what was removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            gone = plan_eviction(self.entries(), self.max_bytes)
            for e in gone:
                shutil.rmtree(e.path, ignore_errors=True)
            now = time.time()
            for tmp in self.root.glob("*/.tmp-*"):
                with contextlib.suppress(OSError):
                    if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                        shutil.rmtree(tmp, ignore_errors=True)
            return gone
        finally:
            os.close(fd)

    def _drop(self, folder: Path, why: str) -> None:
        log.warning("node cache: dropping %s: %s", folder, why)
        aside = folder.with_name(f".tmp-drop-{folder.name}-{secrets.token_hex(3)}")
        with contextlib.suppress(OSError):
            os.rename(folder, aside)  # atomic: no reader sees a half-deleted entry
            folder = aside
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------- file copies
def _data_path(folder: Path, manifest: Manifest, f: FileEntry) -> Path:
    base = folder / "data" / manifest.name
    return base / f.path if f.path else base


def _put_file(fd: int, size: int, dst: Path) -> str:
    """Write the ``size`` bytes of open file ``fd`` to the new file ``dst``: clone, else hard link, else kernel
    copy, else read/write (module docstring); returns the method used."""
    out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        fcntl.ioctl(out, FICLONE, fd)
        if os.fstat(out).st_size == size:
            os.close(out)
            return "clone"
    except OSError:
        pass
    os.close(out)
    os.unlink(dst)
    try:
        # linkat(AT_SYMLINK_FOLLOW) of the descriptor's /proc magic link: the inode itself, no data written. (CPython
        # calls plain link(2), which links the magic link, unless a dir fd is given: absolute paths ignore it.)
        root = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.link(f"/proc/self/fd/{fd}", dst, src_dir_fd=root, dst_dir_fd=root, follow_symlinks=True)
        finally:
            os.close(root)
        if os.stat(dst).st_size == size:
            return "link"
        os.unlink(dst)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            if dst.is_symlink():
                dst.unlink()
    out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        done, method = 0, "copy"
        while done < size:
            try:
                n = os.copy_file_range(fd, out, size - done, done, done)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                n = _rw(fd, out, done, size)
                method = "rw"
            if n <= 0:
                raise OSError(errno.EIO, f"source ended at {done} of {size} B")
            done += n
        return method
    finally:
        os.close(out)


def _rw(src: int, dst: int, offset: int, size: int) -> int:
    """Copy ``[offset, size)`` with ``pread``/``pwrite``; returns the bytes copied."""
    done = offset
    while done < size:
        data = os.pread(src, min(COPY_CHUNK, size - done), done)
        if not data:
            break
        os.pwrite(dst, data, done)
        done += len(data)
    return done - offset


def _copy_with_crc(src: Path, dst: Path, progress: Callable[[int], None] | None) -> tuple[int, int]:
    """Copy ``src`` to ``dst`` in :data:`COPY_CHUNK` pieces; returns (CRC-32C, bytes) of what was copied."""
    crc, size = 0, 0
    with open(src, "rb", buffering=0) as fi, open(dst, "wb", buffering=0) as fo:
        while True:
            data = fi.read(COPY_CHUNK)  # bytes: google_crc32c takes no buffer views
            if not data:
                break
            crc = google_crc32c.extend(crc, data)
            view, off = memoryview(data), 0
            while off < len(data):
                off += fo.write(view[off:])
            size += len(data)
            if progress:
                progress(len(data))
    return crc, size


def _remove(paths: list[Path]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()


def _epoch(iso: str) -> float | None:
    import datetime

    try:
        return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
