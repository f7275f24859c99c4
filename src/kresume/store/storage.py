"""Opening a run's filesystem, backend defaults that keep memory bounded, and retries.

This is the only module that calls :func:`fsspec.url_to_fs`. Storage options come, in order of
precedence, from the caller, then fsspec's own config (``FSSPEC_<PROTOCOL>_<KEY>`` environment
variables and ``~/.config/fsspec/*.json``; fsspec applies those in its filesystem metaclass),
then :data:`BACKEND_DEFAULTS`.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from kresume.store import errors

# gcsfs >= 2026.x probes zonal/HNS buckets through gRPC first; against anything but real GCS that
# stalls 50-110 s per call (measured, shared/objstores/README.md). Must be set before import.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import fsspec  # noqa: E402

T = TypeVar("T")
logger = logging.getLogger("kresume.store")

#: Per-protocol defaults applied unless the caller or fsspec config sets the key.
#: adlfs resolves ``max_concurrency`` to thousands by default and then holds a whole blob in memory
#: (measured: 1 GiB put peaks the client at 1.1-1.4 GiB); 4 keeps it near 100 MiB.
#: s3fs's ``get_file`` with its default ``max_concurrency=10`` downloads 10 ranges of 50 MiB at once:
#: measured on SeaweedFS (400 MB, bench/RESULTS.md) 52-83 MB/s at 711-751 MiB peak RSS, against
#: 70-121 MB/s at 80 MiB with one stream (``max_concurrency=1``). kresume's own uploads and restores
#: do not use it (they stream ranges themselves); it bounds anything else calling get_file/put_file.
BACKEND_DEFAULTS: dict[str, dict[str, Any]] = {
    "s3": {"max_concurrency": 1},
    "s3a": {"max_concurrency": 1},
    "az": {"max_concurrency": 4},
    "abfs": {"max_concurrency": 4},
    "abfss": {"max_concurrency": 4},
}


@dataclass(frozen=True)
class TransferSettings:
    """How data moves between local disk and the store.

    All sizes are bytes; all times seconds.
    """

    part_size: int = 8 * 2**20
    """Block size of remote writes and local reads (S3 multipart part size, raised for objects over
    10,000 parts; gcsfs chunk size, a multiple of 256 KiB), and of sequential reads when restoring
    from backends other than S3. Peak memory per file in flight is about two parts. 8 MiB with 2 parts in flight measured fastest and leanest on the local S3 servers
    (bench/RESULTS.md)."""

    max_workers: int = 4
    """Files transferred in parallel within one checkpoint."""

    parts_in_flight: int = 2
    """S3 multipart parts uploading at once, across all files of the process (see
    :mod:`kresume.store.transfer`). Peak buffer memory ≈ ``(parts_in_flight + max_workers) * part_size``."""

    range_size: int = 32 * 2**20
    """Bytes per ranged GET when restoring from S3 (an object's last range is shorter). Bodies are
    streamed, so this does not bound memory; larger ranges mean fewer requests, and botocore spends
    a few ms of CPU per request. Measured on SeaweedFS, 1 GB, 2 cores (bench/RESULTS.md): 32 MiB
    x 4 in flight restored fastest (16 MiB: +15 %, 64 MiB: +35 % time; 8 MiB: +40 % server CPU).
    Other backends read sequentially in ``part_size`` pieces (:mod:`kresume.store.download`)."""

    ranges_in_flight: int = 4
    """Ranged GETs of S3 restores running at once, across all files of the process (one semaphore
    per distinct value). Peak buffer memory ≈ ``ranges_in_flight * 3.25 MiB``
    (:mod:`kresume.store.download`); 2 and 8 measured no faster than 4."""

    attempts: int = 8
    """Tries per request group for transient errors (throttling, 5xx, timeouts), first included.
    Eight tries with the delays below ride out about a minute of throttling; s3fs retries some
    errors itself underneath, but not InternalError/500."""

    backoff_base: float = 0.5
    """First retry delay; doubles each attempt (full jitter, AWS architecture blog 2015)."""

    backoff_max: float = 20.0
    """Ceiling of one retry delay."""


def open_fs(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """Return ``(filesystem, root_path)`` for ``url`` with kresume's backend defaults.

    Parameters
    ----------
    url : str
        Any fsspec URL (``s3://b/p``, ``gs://``, ``az://``, ``abfs://``, ``file://``, ``memory://``
        or a plain local path).
    storage_options : mapping, optional
        Passed to the filesystem constructor; wins over defaults.

    Raises
    ------
    StoreError
        Unknown protocol or missing backend package (names the ``kresume[extra]`` to install).
    """
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    opts = dict(BACKEND_DEFAULTS.get(protocol, {}))
    opts.update(storage_options or {})
    try:
        fs, path = fsspec.url_to_fs(url, **opts)
    except ImportError as exc:
        extra = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}
        hint = f"pip install 'kresume[{extra[protocol]}]'" if protocol in extra else "install the fsspec backend"
        raise errors.StoreError(url, f"no filesystem for protocol {protocol!r}", fix=hint) from exc
    except TypeError as exc:
        raise errors.StoreError(url, f"invalid storage option: {exc}",
                                fix="check the -o / storageOptions keys against the backend's documentation") from exc
    except ValueError as exc:
        translated = errors.translate(exc, url)
        if isinstance(translated, errors.NoCredentials):
            raise translated from exc
        if "://" in url and not any(url.startswith(p + "://") for p in fsspec.available_protocols()):
            raise errors.StoreError(url, f"unknown protocol {protocol!r}",
                                    fix="use s3://, gs://, az://, abfs://, file:// or memory://") from exc
        raise errors.StoreError(url, str(exc)) from exc
    return fs, path.rstrip("/")


def retrying(fn: Callable[[], T], *, url: str, settings: TransferSettings,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn`` until it succeeds, retrying transient errors with capped exponential backoff.

    Delays use "full jitter" (uniform in ``[0, min(cap, base * 2**attempt)]``), the scheme AWS
    recommends for throttled clients. Non-transient errors are raised at once, translated.

    Raises
    ------
    StoreError
        The translated last error (``StoreUnreachable`` when transient errors exhausted the tries).
    """
    for attempt in range(settings.attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - every backend error passes through here
            if isinstance(exc, errors.StoreError) and not isinstance(exc, errors.StoreUnreachable):
                raise
            if not errors.is_transient(exc) or attempt == settings.attempts - 1:
                raise errors.translate(exc, url) from exc
            delay = random.uniform(0, min(settings.backoff_max, settings.backoff_base * 2**attempt))
            logger.warning("%s: transient %s (%s); retry %d/%d in %.1f s", url, type(exc).__name__,
                           str(exc).splitlines()[0][:200] if str(exc) else "", attempt + 1,
                           settings.attempts - 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
