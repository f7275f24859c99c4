"""Streaming one file between a local descriptor and the store, with CRC-32C on the fly.

No whole file is ever held. Uploads read with ``os.pread`` from the descriptor captured at
detection time, never by re-opening the path, and the CRC-32C is computed over exactly the bytes
handed to the store.

Memory is bounded process-wide, whatever the shape of the checkpoint: before reading a byte, an
upload asks the process-wide :mod:`kresume.store.inflight` budget of
``TransferSettings.parts_in_flight`` buffers of ``part_size`` bytes for the buffers it will hold,
and keeps them until it ends. Two paths, one contract:

- native (s3://, az:// through obstore, :mod:`kresume.store.native`): a file of at most two
  parts goes up in one PUT (held whole: it asks for that many buffers); a larger one in a
  multipart upload with ``granted - 1`` parts in flight and one being read (obstore's multipart
  writer keeps at most ``max_concurrency`` parts in flight plus the one it is filling). Parts are
  fed to obstore by a generator of ``part_size`` reads, so a part is read only once its buffer is
  granted. obstore aborts the multipart upload on any error, so no half object is ever visible.
- every other fsspec backend: ``fs.open(rpath, "wb", block_size=part_size)``, asking for two
  buffers (kresume's read buffer and the backend's block).

Object-size limits: S3 allows 10,000 parts per upload (AWS S3 User Guide, "multipart upload
limits"); :func:`part_size_for` grows the part size for objects that would need more.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import google_crc32c

from kresume.store import errors, inflight, native
from kresume.store.local import LocalFile
from kresume.store.storage import TransferSettings

Progress = Callable[[int], None] | None

MAX_PARTS = 10_000
"""Most parts one S3 multipart upload may have (AWS S3 User Guide, "Amazon S3 multipart upload limits")."""


def crc32c_hex(value: int) -> str:
    """CRC-32C value as 8 lowercase hex digits (the manifest encoding)."""
    return f"{value:08x}"


def is_local_fs(fs: Any) -> bool:
    """True for fsspec's LocalFileSystem (which needs parent folders created and atomic renames)."""
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def part_size_for(size: int, part_size: int) -> int:
    """Part size for a ``size``-byte object: ``part_size``, or larger (whole MiB) when ``size`` would
    otherwise need more than :data:`MAX_PARTS` parts (8 MiB parts cap an object at 80 GiB)."""
    need = -(-size // MAX_PARTS)
    return max(part_size, -(-need // 2**20) * 2**20)


def buffers_for(size: int, part_size: int, parts_in_flight: int) -> int:
    """How many ``part_size`` buffers a native upload of ``size`` bytes asks the budget for: its
    parts when it goes up in one PUT (at most two), else ``parts_in_flight`` (capped by its parts + 1)."""
    parts = max(1, -(-size // part_size))
    return parts if parts <= 2 else min(parts_in_flight, parts + 1)


def upload_file(fs: Any, local: LocalFile, rpath: str, settings: TransferSettings, progress: Progress = None) -> str:
    """Upload ``local`` to ``rpath``; return its CRC-32C (hex).

    Raises
    ------
    SourceChanged
        Fewer bytes than captured could be read, or the file moved during the upload (a change of mtime or
        ctime alone is accepted when the bytes still have the CRC-32C sent: :meth:`LocalFile.check_unchanged`).
    OSError and backend errors
        From the store (the caller retries transient ones).
    """
    if is_local_fs(fs):
        fs.makedirs(fs._parent(rpath), exist_ok=True)
    budget = inflight.budget(settings.parts_in_flight)
    part = part_size_for(local.size, settings.part_size)
    state = _Read(local, part, progress)
    if native.is_native(fs):
        import obstore

        with budget.hold(buffers_for(local.size, part, budget.total)) as granted:
            single = local.size <= 2 * part
            try:
                with native.errors_mapped():
                    fs.call(obstore.put, fs.store, fs.key(rpath), state.pieces(), use_multipart=not single,
                                chunk_size=part, max_concurrency=max(1, granted - 1))
            except BaseException:
                state.raise_if_short()  # obstore may wrap the generator's own error
                raise
    else:
        with budget.hold(2), fs.open(rpath, "wb", block_size=part) as out:
            for data in state.pieces():
                out.write(data)
    if state.offset != local.size:
        raise errors.SourceChanged(local.display, f"only {state.offset} of {local.size} B could be read (truncated)")
    crc = crc32c_hex(state.crc)
    local.check_unchanged(crc)
    return crc


class _Read:
    """Sequential ``part_size`` reads of a captured file, CRC-32C extended over each piece read."""

    def __init__(self, local: LocalFile, part: int, progress: Progress) -> None:
        self.local, self.part, self.progress = local, part, progress
        self.crc = 0
        self.offset = 0
        self.short = False

    def pieces(self) -> Iterator[bytes]:
        while self.offset < self.local.size:
            data = os.pread(self.local.fd, min(self.part, self.local.size - self.offset), self.offset)
            if not data:
                self.short = True
                self.raise_if_short()
            self.crc = google_crc32c.extend(self.crc, data)
            self.offset += len(data)
            if self.progress:
                self.progress(len(data))
            yield data

    def raise_if_short(self) -> None:
        """``SourceChanged`` when a read came back short of the captured size (the file was truncated)."""
        if self.short:
            raise errors.SourceChanged(self.local.display,
                                       f"only {self.offset} of {self.local.size} B could be read (truncated)")


def remote_crc32c(fs: Any, rpath: str, size: int, settings: TransferSettings) -> str:
    """CRC-32C (hex) of the first ``size`` bytes of a remote object, streamed (never held whole).
    Reads stop at ``size``: fake-gcs-server answers a range past the end with HTTP 416 instead of
    an empty body."""
    crc = 0
    if native.is_native(fs):
        import obstore

        if size == 0:
            return crc32c_hex(0)
        with native.errors_mapped():
            result = fs.call(obstore.get, fs.store, fs.key(rpath), options={"range": (0, size)})
            for chunk in fs.iterate(result.stream(min_chunk_size=2**20)):
                crc = google_crc32c.extend(crc, chunk)
        return crc32c_hex(crc)
    done = 0
    with fs.open(rpath, "rb", block_size=settings.part_size, cache_type="none") as f:
        while done < size:
            data = f.read(min(settings.part_size, size - done))
            if not data:
                break
            crc = google_crc32c.extend(crc, data)
            done += len(data)
    return crc32c_hex(crc)


def write_small(fs: Any, rpath: str, data: bytes) -> None:
    """Write a small document (manifest, pointer) so readers see all of it or none of it.

    Object stores make a single PUT atomic; on a local filesystem we write a temporary sibling
    and rename it over the target (POSIX ``rename(2)`` is atomic within one filesystem).
    """
    if is_local_fs(fs):
        parent = fs._parent(rpath)
        fs.makedirs(parent, exist_ok=True)
        tmp = f"{rpath}.tmp-{os.getpid()}-{os.urandom(3).hex()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, rpath)
        return
    fs.pipe_file(rpath, data)
