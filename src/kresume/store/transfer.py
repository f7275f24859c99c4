"""Streaming one file between a local descriptor/path and the store, with CRC-32C on the fly.

No whole file is ever held. Uploads read with ``os.pread`` from the descriptor captured at
detection time, never by re-opening the path, and the CRC-32C is computed over exactly the bytes
handed to the store.

Two upload paths, one contract:

- every backend: ``fs.open(rpath, "wb", block_size=part_size)`` (the fsspec interface); memory is
  one read buffer plus the backend's write buffer of one block;
- S3 (an fsspec filesystem with s3fs's async ``_call_s3``): a file of at most two parts goes up
  in one ``put_object``; a larger one in a multipart upload whose parts go through that same
  filesystem's async API on its own event loop, up to ``TransferSettings.parts_in_flight`` at
  once across the whole process. s3fs's buffered writer uploads one part at a time and copies
  each part twice (fsspec buffer, then a BytesIO). Measured in-process on SeaweedFS, 400 MB,
  2 busy cores (bench/RESULTS.md "Optimisation log"): buffered writer, 16 MiB parts: 19-21 MB/s
  at 128-142 MiB peak RSS; this path, 8 MiB x 2 in flight: 30-35 MB/s at 102 MiB. Buffers are
  bounded by ``max_workers * 2 * part_size`` (single PUTs) or ``(parts_in_flight + max_workers)
  * part_size`` (multipart).

Downloads use the backend's ``get_file`` (see :mod:`kresume.store.storage` for the s3fs setting
that makes it one stream).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
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
    if is_s3_async(fs):
        if local.size > 2 * settings.part_size:
            return _upload_s3_multipart(fs, local, rpath, settings, progress)
        return _upload_s3_single(fs, local, rpath, progress)
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


def is_s3_async(fs: Any) -> bool:
    """True for s3fs (or a subclass): an async filesystem with ``_call_s3`` and its own event loop."""
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "s3" in protocol and callable(getattr(fs, "_call_s3", None)) and getattr(fs, "loop", None) is not None


S3_MAX_PARTS = 10_000
"""Most parts one S3 multipart upload may have (AWS S3 User Guide, "Amazon S3 multipart upload limits")."""


def s3_part_size(size: int, part_size: int) -> int:
    """Part size for a ``size``-byte object: ``part_size``, or larger (whole MiB) when ``size`` would
    otherwise need more than :data:`S3_MAX_PARTS` parts (e.g. 8 MiB parts cap an object at 80 GiB)."""
    need = -(-size // S3_MAX_PARTS)
    return max(part_size, -(-need // 2**20) * 2**20)


_SLOTS_LOCK = threading.Lock()
_SLOTS: dict[int, threading.BoundedSemaphore] = {}


def _part_slots(count: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore bounding multipart parts in flight (one per distinct ``count``)."""
    with _SLOTS_LOCK:
        if count not in _SLOTS:
            _SLOTS[count] = threading.BoundedSemaphore(max(1, count))
        return _SLOTS[count]


def _upload_s3_single(fs: Any, local: LocalFile, rpath: str, progress: Progress) -> str:
    """One ``put_object`` for a file of at most two parts (held in memory: <= ``2 * part_size``).

    s3fs's writer would split a 16 MiB shard into create + 2 parts + complete, one part at a time;
    one PUT is a single request (measured on sharded folders, bench/RESULTS.md). Raises like
    :func:`upload_file`.
    """
    data = os.pread(local.fd, local.size, 0) if local.size else b""
    if len(data) != local.size:
        raise errors.SourceChanged(local.display, f"only {len(data)} of {local.size} B could be read (truncated)")
    crc = google_crc32c.value(data) if data else 0
    bucket, key, _ = fs.split_path(rpath)
    try:
        fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data)
    finally:
        fs.invalidate_cache(rpath)
    if progress:
        progress(len(data))
    local.check_unchanged()
    return crc32c_hex(crc)


def _upload_s3_multipart(fs: Any, local: LocalFile, rpath: str, settings: TransferSettings,
                         progress: Progress) -> str:
    """S3 multipart upload of ``local`` with parts in flight concurrently; returns the CRC-32C (hex).

    Parts are read in order with ``os.pread`` (CRC-32C extended as read) and sent with
    ``upload_part`` coroutines on the filesystem's loop (s3fs's ``_call_s3``: its retries, error
    mapping and ``s3_additional_kwargs`` such as SSE settings apply). The upload is aborted on any
    error, so no half object is ever visible. Raises like :func:`upload_file`.
    """
    bucket, key, _ = fs.split_path(rpath)
    part_size = s3_part_size(local.size, settings.part_size)
    slots = _part_slots(settings.parts_in_flight)
    mpu = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
    upload_id = mpu["UploadId"]
    pending: deque[tuple[int, int, Future[Any]]] = deque()
    etags: list[dict[str, Any]] = []

    def collect_oldest() -> None:
        number, nbytes, fut = pending.popleft()
        out = fut.result()
        etags.append({"PartNumber": number, "ETag": out["ETag"]})
        if progress:
            progress(nbytes)

    crc = 0
    offset = 0
    try:
        while offset < local.size:
            data = os.pread(local.fd, min(part_size, local.size - offset), offset)
            if not data:
                break
            crc = google_crc32c.extend(crc, data)
            offset += len(data)
            while pending and pending[0][2].done():
                collect_oldest()
            slots.acquire()
            number = len(etags) + len(pending) + 1
            coro = fs._call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload_id,
                               PartNumber=number, Body=data)
            fut = asyncio.run_coroutine_threadsafe(coro, fs.loop)
            # Released when the part finishes, not when this thread collects it: another worker
            # thread blocked in acquire() must not wait for us (no deadlock across files).
            fut.add_done_callback(lambda _f: slots.release())
            pending.append((number, len(data), fut))
            del data
            if len(pending) >= settings.parts_in_flight:
                collect_oldest()
        while pending:
            collect_oldest()
        if offset != local.size:
            raise errors.SourceChanged(local.display, f"only {offset} of {local.size} B could be read (truncated)")
        local.check_unchanged()
        fs.call_s3("complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id,
                   MultipartUpload={"Parts": etags})
    except BaseException:
        for _, _, fut in pending:
            fut.cancel()  # its done-callback releases the slot
        try:
            fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:  # noqa: BLE001 - best effort; the original error matters
            pass
        raise
    finally:
        fs.invalidate_cache(rpath)
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
