"""Streaming one file between a local descriptor/path and the store, with CRC-32C on the fly.

Memory per transfer is bounded by ``TransferSettings.part_size`` (one read buffer plus the
backend's write buffer of one block): no whole file is ever held. Uploads read with ``os.pread``
from the descriptor captured at detection time, never by re-opening the path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import google_crc32c

from kresume.store import errors
from kresume.store.local import LocalFile
from kresume.store.storage import TransferSettings

Progress = Callable[[int], None] | None


def crc32c_hex(value: int) -> str:
    """CRC-32C value as 8 lowercase hex digits (the manifest encoding)."""
    return f"{value:08x}"


def is_local_fs(fs: Any) -> bool:
    """True for fsspec's LocalFileSystem (which needs parent folders created and atomic renames)."""
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def upload_file(fs: Any, local: LocalFile, rpath: str, settings: TransferSettings, progress: Progress = None) -> str:
    """Upload ``local`` to ``rpath``; return its CRC-32C (hex).

    Raises
    ------
    SourceChanged
        Fewer bytes than captured could be read, or size/mtime moved during the upload.
    OSError and backend errors
        From the store (the caller retries transient ones).
    """
    if is_local_fs(fs):
        fs.makedirs(fs._parent(rpath), exist_ok=True)
    crc = 0
    offset = 0
    chunk = settings.part_size
    with fs.open(rpath, "wb", block_size=settings.part_size) as out:
        while offset < local.size:
            data = os.pread(local.fd, min(chunk, local.size - offset), offset)
            if not data:
                break
            crc = google_crc32c.extend(crc, data)
            out.write(data)
            offset += len(data)
            if progress:
                progress(len(data))
    if offset != local.size:
        raise errors.SourceChanged(local.display, f"only {offset} of {local.size} B could be read (truncated)")
    local.check_unchanged()
    return crc32c_hex(crc)


def file_crc32c(path: str, block: int = 8 * 2**20) -> str:
    """CRC-32C (hex) of a local file, read in ``block``-byte pieces."""
    crc = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            data = f.read(block)
            if not data:
                break
            crc = google_crc32c.extend(crc, data)
    return crc32c_hex(crc)


def remote_crc32c(fs: Any, rpath: str, size: int, settings: TransferSettings) -> str:
    """CRC-32C (hex) of the first ``size`` bytes of a remote object, streamed in ``part_size``
    reads (never held whole). Reads stop at ``size``: fake-gcs-server answers a range past the end
    with HTTP 416 instead of an empty body."""
    crc = 0
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
