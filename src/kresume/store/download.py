"""Downloading one remote object into a local file, its CRC-32C computed over the bytes as they arrive.

No second read pass: every byte is checksummed once, between the socket and ``os.pwrite``.

Two paths, one contract (:func:`download_file`):

- native (s3://, az:// through obstore, :mod:`kresume.store.native`): the object is cut into
  ranges of ``TransferSettings.range_size`` bytes, fetched with ranged GETs by a process-wide pool
  of ``TransferSettings.ranges_in_flight`` threads (whichever files the ranges belong to). Each
  body is streamed in the pieces the HTTP client received (:data:`PIECE_SIZE`), each checksummed
  and written with ``os.pwrite`` at its offset, in the range's own thread, into a file pre-sized
  with ``ftruncate``; the ranges' CRC-32Cs are combined in order (:func:`kresume.store.crc.combine`).
  The thread waiting for an object's ranges enforces the store's deadline (a frozen store still
  fails the file in bounded time, ``DeadlineExceeded``). A body that breaks off mid-range is resumed from the last
  byte received, up to :data:`RESUMES_PER_RANGE` times, and then fails the file as
  ``StoreUnreachable`` (the caller's retry restarts it cleanly). Memory: about one piece per range
  in flight plus the HTTP client's socket buffers.
- every other backend: one sequential stream, ``fs.open(rpath, "rb", cache_type="none")`` read in
  ``TransferSettings.part_size`` pieces, never past ``size`` (fake-gcs-server answers a range past
  the end with HTTP 416). Measured on a 200 MB object, fresh process each (bench/RESULTS.md):
  fake-gcs-server 293-396 MB/s at 109 MiB peak RSS vs ``get_file`` + CRC pass 305-318 MB/s at
  207 MiB; Azurite through adlfs 129-178 MB/s at 94 MiB vs 68-125 MB/s at 126 MiB.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import google_crc32c

from kresume.store import crc as crcmod
from kresume.store import errors, native
from kresume.store.storage import TransferSettings, backoff
from kresume.store.transfer import crc32c_hex

Progress = Callable[[int], None] | None

PIECE_SIZE = 0
"""``min_chunk_size`` of a ranged GET's body stream (bytes): 0 takes each piece as the HTTP client received it
(hundreds of KiB on loopback), checksummed and written from obstore's own buffer. Gathering 1 MiB pieces made
obstore copy every byte once more into a fresh buffer of its own (page faults, ``munmap``): measured, a 1 GB
restore from SeaweedFS took 1.81 CPU-s with 1 MiB pieces against 1.14 with 0 (bench/RESULTS.md "Restore CPU")."""

RESUMES_PER_RANGE = 3
"""Times one range is re-requested from its last received byte after its body broke off."""


def download_file(fs: Any, rpath: str, lpath: str, size: int, settings: TransferSettings, *, url: str,
                  progress: Progress = None) -> str:
    """Stream the remote object ``rpath`` (``size`` bytes per the manifest) into ``lpath``; return its
    CRC-32C (8 hex digits) over exactly the bytes written.

    ``lpath`` is created or truncated (mode 0666 & ~umask), so a retry starts from an empty file.
    ``progress`` is called with byte counts as pieces land; a retry reports its bytes again.

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
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lpath)  # a new file per attempt: a range of an abandoned attempt writes only into its own
        fd = os.open(lpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
        if size:
            os.ftruncate(fd, size)
    except OSError as exc:
        raise errors.DestinationError(lpath, exc.strerror or str(exc)) from exc
    try:
        if native.is_native(fs):
            value = _native_object(fs, rpath, fd, size, settings, url, progress, lpath)
        else:
            value = _stream(fs, rpath, fd, size, settings, url, progress, lpath)
    finally:
        os.close(fd)
    return crc32c_hex(value)


_POOLS_LOCK = threading.Lock()
_POOLS: dict[int, cf.ThreadPoolExecutor] = {}


def _range_pool(count: int) -> cf.ThreadPoolExecutor:
    """The process-wide pool running ranged GETs (one per distinct ``count``; its threads are the bound)."""
    with _POOLS_LOCK:
        if count not in _POOLS:
            _POOLS[count] = cf.ThreadPoolExecutor(max(1, count), thread_name_prefix="kresume-range")
        return _POOLS[count]


def _write(fd: int, data: Any, offset: int, lpath: str) -> None:
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


def _native_object(fs: Any, rpath: str, fd: int, size: int, settings: TransferSettings, url: str,
                   progress: Progress, lpath: str) -> int:
    """All ranges of one object through the process-wide range pool; the combined CRC-32C.

    The range threads call the store directly; this thread, which waits for them anyway, is the one that
    enforces ``fs.deadline`` (:func:`_gather`): one wait per object instead of a helper-thread hand-off per
    store call and per piece (:meth:`kresume.store.native.NativeFileSystem.call`), which cost CPU on every
    1 MiB (bench/RESULTS.md "Restore CPU").
    """
    import obstore

    key = fs.key(rpath)
    if size == 0:
        with native.errors_mapped():
            meta = fs.call(obstore.head, fs.store, key)
        if int(meta["size"]) != 0:
            raise errors.CorruptCheckpoint(url, f"object has {meta['size']} B, manifest says 0 B")
        return 0
    step = max(1, settings.range_size)
    bounds = [(start, min(start + step, size)) for start in range(0, size, step)]
    pool = _range_pool(settings.ranges_in_flight)
    stop = threading.Event()
    futures = [pool.submit(_native_range, fs, key, fd, start, end, size, url, lpath, progress, stop)
               for start, end in bounds]
    try:
        values = _gather(futures, fs.deadline)
    except BaseException as exc:
        # Siblings stop at their next piece; each writes through its own descriptor of this attempt's
        # file (a retry writes a new file), so one still blocked in a frozen store can damage nothing.
        stop.set()
        for f in futures:
            f.cancel()
        if isinstance(exc, _deadline_exceeded()):
            _retire_range_pool(settings.ranges_in_flight, pool)  # its threads may be stuck in the store
        else:
            cf.wait(futures)
        raise
    return crcmod.combine_all(zip(values, (end - start for start, end in bounds)))


def _deadline_exceeded() -> type[BaseException]:
    from kresume.store.deadline import DeadlineExceeded

    return DeadlineExceeded


def _gather(futures: list[cf.Future[int]], deadline: Any) -> list[int]:
    """The futures' results in order; the first failure is raised at once. With a
    :class:`~kresume.store.deadline.Deadline`, raises ``DeadlineExceeded`` when it passes first (re-checked
    every :data:`kresume.store.native.POLL_SECONDS`, so a deadline moved while waiting counts, as in
    :meth:`~kresume.store.native.NativeFileSystem.call`; the range threads renew an idle one per piece)."""
    if deadline is None:
        return [f.result() for f in futures]
    pending: set[cf.Future[int]] = set(futures)
    while pending:
        left = deadline.remaining()
        if left is not None and left <= 0:
            raise _deadline_exceeded()(f"no answer before {deadline.what}")
        wait = native.POLL_SECONDS if left is None else min(left, native.POLL_SECONDS)
        done, pending = cf.wait(pending, timeout=wait, return_when=cf.FIRST_EXCEPTION)
        for f in done:
            if f.exception() is not None:
                f.result()
    return [f.result() for f in futures]


def _retire_range_pool(count: int, pool: cf.ThreadPoolExecutor) -> None:
    """Later downloads get a fresh range pool: ``pool``'s threads may stay blocked in a store that stopped
    answering until the client's request timeout (``CLIENT_DEFAULTS``); they finish or fail on their own."""
    with _POOLS_LOCK:
        if _POOLS.get(count) is pool:
            del _POOLS[count]
    pool.shutdown(wait=False, cancel_futures=True)


class _Stopped(Exception):
    """A sibling range failed or the object's deadline passed: this range stops (never reported)."""


def _native_range(fs: Any, key: str, fd: int, start: int, end: int, size: int, url: str, lpath: str,
                  progress: Progress, stop: threading.Event) -> int:
    """Fetch bytes ``[start, end)`` into the file of ``fd``; return their CRC-32C. A body that breaks off (or a
    server that answers with fewer bytes than asked) is re-requested from the next missing byte.

    Runs in a range thread and calls obstore directly (the waiting thread enforces the deadline,
    :func:`_gather`); every piece renews an idle deadline. Writes through its own duplicate of ``fd``, and
    stops before the next write once ``stop`` is set."""
    import obstore

    deadline = fs.deadline
    value = 0
    pos = start
    resumes = 0
    own = os.dup(fd)
    try:
        while pos < end:
            if stop.is_set():
                raise _Stopped
            try:
                with native.errors_mapped():
                    # The whole object is asked for without a Range: some servers (rclone serve s3)
                    # answer a range covering everything with a plain 200, which obstore refuses.
                    whole = pos == 0 and end == size
                    result = obstore.get(fs.store, key, options=None if whole else {"range": (pos, end)})
                    if deadline is not None:
                        deadline.touch()
                    total = int(result.meta["size"])
                    if total != size:
                        _check_stored_size(fs, key, size, url, total)
                        raise ConnectionError(f"a GET said the object has {total} B; stored: {size} B (cut on the way)")
                    for chunk in result.stream(min_chunk_size=PIECE_SIZE):  # bytes
                        if stop.is_set():
                            raise _Stopped
                        if len(chunk) > end - pos:
                            raise errors.StoreError(url, f"asked for bytes {pos}-{end - 1}, got more")
                        value = google_crc32c.extend(value, chunk)
                        _write(own, chunk, pos, lpath)
                        pos += len(chunk)
                        if deadline is not None:
                            deadline.touch()
                        if progress:
                            progress(len(chunk))
                if pos < end:
                    raise ConnectionError(f"body ended at byte {pos} of range {start}-{end - 1}")
            except (errors.StoreError, FileNotFoundError, _Stopped):
                raise
            except Exception as exc:  # noqa: BLE001 - classified just below
                if _range_error(exc):
                    raise errors.CorruptCheckpoint(url, f"object is shorter than the manifest's {size} B "
                                                        f"(range {pos}-{end - 1} not satisfiable)") from exc
                if not errors.is_transient(exc):
                    raise
                resumes += 1
                if resumes > RESUMES_PER_RANGE:
                    raise errors.StoreUnreachable(url, f"body of range {start}-{end - 1} broke off "
                                                       f"{resumes} times: {type(exc).__name__}: {exc}") from exc
                time.sleep(backoff(resumes - 1, 0.1, 1.0))  # 0.1, 0.2, 0.4 s at most
    finally:
        os.close(own)
    return value


def _check_stored_size(fs: Any, key: str, size: int, url: str, answered: int) -> None:
    """A GET whose declared size differs from the manifest's is asked again with a HEAD: a middlebox or a
    server that cut one answer (a 200 with half the body and a Content-Length to match, measured through
    tests/faults' proxy) is transient; an object stored at another size is damaged. Raises
    :class:`CorruptCheckpoint` when the stored size is not ``size``."""
    import obstore

    with native.errors_mapped():
        meta = fs.call(obstore.head, fs.store, key)
    if int(meta["size"]) != size:
        raise errors.CorruptCheckpoint(url, f"object has {meta['size']} B, manifest says {size} B "
                                            f"(a GET answered {answered} B)")


def _range_error(exc: BaseException) -> bool:
    """A ranged GET the store refused as unsatisfiable (HTTP 416, object_store's range checks)."""
    if getattr(exc, "status", None) == 416:
        return True
    text = str(exc).lower()
    return "range not satisfiable" in text or "invalidrange" in text or "wanted range" in text


def _stream(fs: Any, rpath: str, fd: int, size: int, settings: TransferSettings, url: str, progress: Progress,
            lpath: str) -> int:
    """One sequential stream for backends without the native path; never reads past ``size``."""
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
