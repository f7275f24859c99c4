"""Downloading one remote object into a local file, its CRC-32C computed over the bytes as they arrive.

No second read pass: every byte is checksummed once, between the socket and ``os.pwrite``.

Two paths, one contract (:func:`download_file`):

- S3 (s3fs, :func:`kresume.store.transfer.is_s3_async`): the object is cut into ranges of
  ``TransferSettings.range_size`` bytes, fetched with ranged ``get_object`` calls through s3fs's
  async ``_call_s3`` on its own event loop (s3fs's credentials, ``s3_additional_kwargs`` such as
  SSE-C keys, request retries and error mapping apply). At most ``TransferSettings.ranges_in_flight``
  ranges are in flight across the whole process, whichever files they belong to. Each body is read
  in pieces of up to :data:`READ_SIZE` and written with ``os.pwrite`` at its offset into a file
  pre-sized with ``ftruncate``; the ranges' CRC-32Cs are combined in order
  (:func:`kresume.store.crc.combine`). A body that breaks off mid-range (connection reset, payload
  error, read timeout) is resumed from the last byte received, up to :data:`RESUMES_PER_RANGE`
  times, and then fails the file as ``StoreUnreachable`` (the caller's retry restarts it cleanly).
- every other backend: one sequential stream, ``fs.open(rpath, "rb", cache_type="none")`` read in
  ``TransferSettings.part_size`` pieces, never past ``size`` (fake-gcs-server answers a range past
  the end with HTTP 416). Measured on a 200 MB object, fresh process each (bench/RESULTS.md):
  fake-gcs-server 293-396 MB/s at 109 MiB peak RSS vs ``get_file`` + CRC pass 305-318 MB/s at
  207 MiB; Azurite 129-178 MB/s at 94 MiB vs 68-125 MB/s at 126 MiB (16 MiB pieces: no faster,
  more memory).

Memory bound (S3): aiohttp's ``StreamReader.read(n)`` raises the connection's buffer limits to
``n``/``2n`` (aiohttp 3.14 ``streams.py``, ``set_read_chunk_size``), so one range in flight holds
at most about ``2 * READ_SIZE`` buffered + one socket read (asyncio reads ≤ 256 KiB) + the returned
piece (``READ_SIZE``): ≈ 3.25 MiB, so ≈ ``ranges_in_flight * 3.25 MiB`` for the process (13 MiB at
4), independent of ``range_size`` and of the file size. Measured: reads return 256 KiB (asyncio's
per-``recv`` size), never aiohttp's 64 KiB default buffer. Other backends: about one ``part_size``
piece (plus the backend's copy of it) per file in flight.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import threading
import weakref
from collections.abc import Callable
from typing import Any

import google_crc32c

from kresume.store import crc as crcmod
from kresume.store import errors
from kresume.store.storage import TransferSettings, backoff
from kresume.store.transfer import crc32c_hex, is_s3_async

Progress = Callable[[int], None] | None

READ_SIZE = 2**20
"""Bytes asked of one S3 response body per read (aiohttp returns what is buffered, up to this)."""

RESUMES_PER_RANGE = 3
"""Times one range is re-requested from its last received byte after its body broke off."""

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def download_file(fs: Any, rpath: str, lpath: str, size: int, settings: TransferSettings, *, url: str,
                  progress: Progress = None) -> str:
    """Stream the remote object ``rpath`` (``size`` bytes per the manifest) into ``lpath``; return its
    CRC-32C (8 hex digits) over exactly the bytes written.

    ``lpath`` is created or truncated (mode 0666 & ~umask), so a retry starts from an empty file.
    ``progress`` is called with byte counts as ranges (S3) or pieces (other backends) land; a retry
    reports its bytes again.

    Raises
    ------
    CorruptCheckpoint
        The object's size differs from ``size`` (checked on every response), or it ended early.
    DestinationError
        ``lpath`` could not be created or written (disk full, permissions).
    StoreUnreachable
        A body kept breaking off after :data:`RESUMES_PER_RANGE` resumes (transient: retry the file).
    OSError and backend errors
        From the store (missing object, throttling…); the caller translates and retries transient ones.
    """
    try:
        fd = os.open(lpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
        if size:
            os.ftruncate(fd, size)
    except OSError as exc:
        raise errors.DestinationError(lpath, exc.strerror or str(exc)) from exc
    try:
        if is_s3_async(fs):
            value = _run_on_loop(fs.loop, _s3_object(fs, rpath, fd, size, settings, url, progress, lpath))
        else:
            value = _stream(fs, rpath, fd, size, settings, url, progress, lpath)
    finally:
        os.close(fd)
    return crc32c_hex(value)


def _run_on_loop(loop: asyncio.AbstractEventLoop, coro: Any) -> int:
    """Run ``coro`` on ``loop`` (another thread's) and wait; if this thread is interrupted, cancel it
    and wait until it has stopped, so no write lands after the caller closes the file. (A task
    cancelled before its first step never runs; writes happen only after its first await.)"""
    started, finished = threading.Event(), threading.Event()

    async def wrapped() -> int:
        started.set()
        try:
            return await coro
        finally:
            finished.set()

    fut = asyncio.run_coroutine_threadsafe(wrapped(), loop)
    try:
        return fut.result()
    except BaseException:
        fut.cancel()
        if started.is_set():
            finished.wait(60)
        raise


_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Semaphore]] = \
    weakref.WeakKeyDictionary()


def _range_slots(count: int) -> asyncio.Semaphore:
    """The process-wide semaphore of ranges in flight on the running loop (one per ``count``).
    Only called on that loop's thread, so no lock is needed."""
    per_loop = _SLOTS.setdefault(asyncio.get_running_loop(), {})
    if count not in per_loop:
        per_loop[count] = asyncio.Semaphore(max(1, count))
    return per_loop[count]


def _write(fd: int, data: bytes, offset: int, lpath: str) -> None:
    """``os.pwrite`` all of ``data`` at ``offset`` (short writes continue); errors as DestinationError."""
    view = memoryview(data)
    try:
        while view:
            n = os.pwrite(fd, view, offset)
            view = view[n:]
            offset += n
    except OSError as exc:
        raise errors.DestinationError(lpath, exc.strerror or str(exc),
                                      fix="free space on the restore destination or choose another") from exc


async def _s3_object(fs: Any, rpath: str, fd: int, size: int, settings: TransferSettings, url: str,
                     progress: Progress, lpath: str) -> int:
    """All ranges of one object, concurrently under the process-wide slots; the combined CRC-32C."""
    bucket, key, version = fs.split_path(rpath)
    extra = {"VersionId": version} if version else {}
    if size == 0:
        # No range can be asked of an empty object (S3 answers 416); one GET checks it exists and is empty.
        resp = await fs._call_s3("get_object", Bucket=bucket, Key=key, **extra)
        resp["Body"].close()
        if int(resp.get("ContentLength") or 0) != 0:
            raise errors.CorruptCheckpoint(url, f"object has {resp['ContentLength']} B, manifest says 0 B")
        return 0
    step = max(1, settings.range_size)
    bounds = [(start, min(start + step, size)) for start in range(0, size, step)]
    slots = _range_slots(settings.ranges_in_flight)

    async def one(start: int, end: int) -> int:
        async with slots:
            value = await _s3_range(fs, bucket, key, extra, fd, start, end, size, url, lpath)
        if progress:
            progress(end - start)
        return value

    tasks = [asyncio.ensure_future(one(start, end)) for start, end in bounds]
    try:
        values = await asyncio.gather(*tasks)
    finally:
        # gather() leaves the siblings of a failed range running: stop them before the caller closes
        # (or a retry truncates) the file.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return crcmod.combine_all(zip(values, (end - start for start, end in bounds)))


def _retryable_body_error(exc: BaseException) -> bool:
    """A body read that may succeed when asked again: s3fs's own list (``S3_RETRYABLE_ERRORS``:
    payload errors, botocore's ResponseStreamingError/ReadTimeoutError, IncompleteRead, timeouts)
    or anything :func:`errors.is_transient` accepts."""
    from s3fs.core import S3_RETRYABLE_ERRORS

    return isinstance(exc, S3_RETRYABLE_ERRORS) or errors.is_transient(exc)


async def _s3_range(fs: Any, bucket: str, key: str, extra: dict[str, str], fd: int, start: int, end: int,
                    size: int, url: str, lpath: str) -> int:
    """Fetch bytes ``[start, end)`` into ``fd``; return their CRC-32C. A body that breaks off (or a
    server that answers with fewer bytes than asked) is re-requested from the next missing byte."""
    value = 0
    pos = start
    resumes = 0
    while pos < end:
        try:
            resp = await fs._call_s3("get_object", Bucket=bucket, Key=key, Range=f"bytes={pos}-{end - 1}", **extra)
        except OSError as exc:
            # s3fs maps S3's InvalidRange / HTTP 416 to OSError(EINVAL): a range past the object's end.
            if exc.errno == errno.EINVAL and ("416" in str(exc) or "range" in str(exc).lower()):
                raise errors.CorruptCheckpoint(url, f"object is shorter than the manifest's {size} B "
                                                    f"(range {pos}-{end - 1} not satisfiable)") from exc
            raise
        body = resp["Body"]
        try:
            stop = _range_stop(resp, pos, end, size, url)
            while pos < stop:
                try:
                    data = await body.read(min(READ_SIZE, stop - pos))
                    if not data:
                        raise errors.StoreUnreachable(url, f"body ended at byte {pos} of range {start}-{end - 1}")
                except Exception as exc:  # noqa: BLE001 - classified just below
                    if not (isinstance(exc, errors.StoreUnreachable) or _retryable_body_error(exc)):
                        raise
                    resumes += 1
                    if resumes > RESUMES_PER_RANGE:
                        raise errors.StoreUnreachable(url, f"body of range {start}-{end - 1} broke off "
                                                           f"{resumes} times: {type(exc).__name__}: {exc}") from exc
                    await asyncio.sleep(backoff(resumes - 1, 0.1, 1.0))  # 0.1, 0.2, 0.4 s at most
                    break  # re-request from pos
                value = google_crc32c.extend(value, data)
                _write(fd, data, pos, lpath)
                pos += len(data)
        finally:
            body.close()
    return value


def _range_stop(resp: dict[str, Any], start: int, end: int, size: int, url: str) -> int:
    """Where this response's bytes end (exclusive), after checking it is bytes ``start..`` of a
    ``size``-byte object (RFC 9110 §14.4 ``Content-Range``), or the whole object when the server
    ignored a range starting at 0 (then only ``[0, end)`` is read)."""
    header = resp.get("ContentRange")
    if header:
        m = _CONTENT_RANGE.fullmatch(header.strip())
        if m is None:
            raise errors.StoreError(url, f"unexpected Content-Range {header!r}")
        first, last, total = int(m[1]), int(m[2]), m[3]
        if total != "*" and int(total) != size:
            raise errors.CorruptCheckpoint(url, f"object has {total} B, manifest says {size} B")
        if first != start or last < first:
            raise errors.StoreError(url, f"asked for bytes {start}-{end - 1}, got {header!r}")
        return min(end, last + 1)
    length = int(resp.get("ContentLength") or 0)
    if start != 0:
        raise errors.StoreError(url, f"the server ignored Range bytes={start}-{end - 1} (no Content-Range)",
                                fix="use an S3 server that supports ranged GETs")
    if length != size:
        raise errors.CorruptCheckpoint(url, f"object has {length} B, manifest says {size} B")
    return end


def _stream(fs: Any, rpath: str, fd: int, size: int, settings: TransferSettings, url: str, progress: Progress,
            lpath: str) -> int:
    """One sequential stream for backends without the S3 path; never reads past ``size``."""
    value = 0
    done = 0
    piece = max(1, settings.part_size)
    with fs.open(rpath, "rb", block_size=piece, cache_type="none") as f:
        actual = getattr(f, "size", None)
        if actual is None:  # fsspec's LocalFileOpener has no size
            actual = fs.size(rpath)
        if actual != size:
            raise errors.CorruptCheckpoint(url, f"object has {actual} B, manifest says {size} B")
        while done < size:
            data = f.read(min(piece, size - done))
            if not data:
                raise errors.CorruptCheckpoint(url, f"object ended at {done} B, manifest says {size} B")
            value = google_crc32c.extend(value, data)
            _write(fd, data, done, lpath)
            done += len(data)
            if progress:
                progress(len(data))
    return value
