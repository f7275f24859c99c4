"""Opening a run's filesystem, backend defaults that keep memory bounded, and retries.

This is the only module that calls :func:`fsspec.url_to_fs`. s3:// and az:// runs open kresume's
native client first (:mod:`kresume.store.native`, an fsspec filesystem over obstore) unless the
storage option ``kresume_client`` or ``KRESUME_STORE_CLIENT`` says ``fsspec`` or an option has no
exact native equivalent. Storage options come, in order of precedence, from the caller, then
fsspec's own config (``FSSPEC_<PROTOCOL>_<KEY>`` environment variables and
``~/.config/fsspec/*.json``; fsspec applies those in its filesystem metaclass, the native client
reads the same ``fsspec.config.conf``), then :data:`BACKEND_DEFAULTS` (fsspec backends only).
The URL rule itself is :func:`kresume.store.urls.check_url`; fsspec backends get their defaults
through :func:`backend_options`.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kresume.store import errors
from kresume.store.deadline import BoundedFS, Deadline
from kresume.store.urls import check_endpoints, check_url

# gcsfs >= 2026.x probes zonal/HNS buckets through gRPC first; against anything but real GCS that
# stalls 50-110 s per call (measured, shared/objstores/README.md). Must be set before import.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from kresume.store import native  # noqa: E402

T = TypeVar("T")
logger = logging.getLogger("kresume.store")

#: Per-protocol defaults applied unless the caller or fsspec config sets the key (a dict-valued
#: default such as s3fs's ``config_kwargs`` is merged key by key: :func:`backend_options`).
#:
#: Memory: adlfs resolves ``max_concurrency`` to thousands by default and then holds a whole blob in
#: memory (measured: 1 GiB put peaks the client at 1.1-1.4 GiB); 4 keeps it near 100 MiB. s3fs's
#: ``get_file`` with its default ``max_concurrency=10`` downloads 10 ranges of 50 MiB at once:
#: measured on SeaweedFS (400 MB, bench/RESULTS.md) 52-83 MB/s at 711-751 MiB peak RSS, against
#: 70-121 MB/s at 80 MiB with one stream (``max_concurrency=1``). kresume's own uploads and restores
#: do not use it; it bounds anything else calling get_file/put_file.
#:
#: Timeouts (issue 12 item 3; seconds): every request gets a connect and a read timeout, so a store
#: that accepts connections and never answers fails instead of hanging (measured before: ``kresume
#: ls`` > 15 min, from s3fs's 5 tries x botocore's 5 attempts x the read timeout x kresume's tries).
#: S3: botocore ``connect_timeout`` 5, ``read_timeout`` 15 (s3fs's own values, made explicit) and 3
#: attempts per request instead of 5 (kresume's :func:`retrying` is the retry layer above it).
#: GCS: gcsfs passes ``requests_timeout`` to aiohttp, whose default (total=None from gcsfs) has no
#: connect or read timeout at all: 5 s to connect, 30 s between reads. Azure: adlfs
#: ``connection_timeout`` 5, ``read_timeout`` 30 (azure-core's defaults are 300 s each).
#: Per command the CLI adds a budget (``--timeout``), ``resume_from`` its own, the sidecar its
#: shutdown deadline (:mod:`kresume.store.deadline`).
BACKEND_DEFAULTS: dict[str, dict[str, Any]] = {
    "s3": {"max_concurrency": 1,
           "config_kwargs": {"connect_timeout": 5, "read_timeout": 15, "retries": {"total_max_attempts": 3}}},
    "gs": {"requests_timeout": "aiohttp:5:30"},
    "az": {"max_concurrency": 4, "connection_timeout": 5, "read_timeout": 30},
}
for _alias, _base in (("s3a", "s3"), ("gcs", "gs"), ("abfs", "az"), ("abfss", "az")):
    BACKEND_DEFAULTS[_alias] = BACKEND_DEFAULTS[_base]


def _materialise(value: Any) -> Any:
    """``"aiohttp:<connect>:<read>"`` → ``aiohttp.ClientTimeout`` (kept a string in the table so
    importing this module does not import aiohttp)."""
    if isinstance(value, str) and value.startswith("aiohttp:"):
        import aiohttp

        connect, read = (float(x) for x in value.split(":")[1:])
        return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
    return value


def backend_options(protocol: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments kresume passes to the ``protocol`` filesystem: the caller's options,
    then fsspec's config for the protocol, then :data:`BACKEND_DEFAULTS`, merged one level deep
    for dict values (a caller's ``config_kwargs={"region_name": …}`` keeps the default timeouts)."""
    from fsspec.config import conf

    caller = dict(storage_options or {})
    configured = conf.get(protocol, {})
    out = dict(caller)
    for key, default in BACKEND_DEFAULTS.get(protocol, {}).items():
        if isinstance(default, dict):  # copied: botocore adds keys to the dicts it is given
            out[key] = copy.deepcopy({**default, **(configured.get(key) or {}), **(caller.get(key) or {})})
        elif key not in caller and key not in configured:
            out[key] = _materialise(default)
    return out


@dataclass(frozen=True)
class TransferSettings:
    """How data moves between local disk and the store.

    All sizes are bytes; all times seconds.
    """

    part_size: int = 8 * 2**20
    """Bytes per part of a multipart upload (raised for objects over 10,000 parts), per block of
    remote writes on fsspec backends (gcsfs: a multiple of 256 KiB), and per sequential read when
    restoring through an fsspec backend. It is also the unit of :attr:`parts_in_flight`."""

    max_workers: int = 4
    """Files transferred in parallel within one checkpoint (native restores start
    ``max(max_workers, 2 * ranges_in_flight)`` files; their ranges share ``ranges_in_flight``).
    Upload workers only start reading once the :attr:`parts_in_flight` budget grants their buffers."""

    parts_in_flight: int = 4
    """Upload buffers of ``part_size`` bytes held at once across the whole process
    (:mod:`kresume.store.inflight`), counting the part being read: the bound on upload memory,
    ``parts_in_flight * part_size`` bytes, for one big file, many big files and many small files
    alike. A native multipart upload granted ``g`` buffers keeps ``g - 1`` parts in flight; a file
    of at most two parts (one PUT) holds that many; an fsspec-backend upload holds two. Measured
    in-process peak RSS on SeaweedFS (native, 8 MiB parts): 2 → 54 MiB, 3 → 62, 4 → 78, 6 → 94,
    8 → 110 for a 400 MB file; 55 MiB at 2 for 8 x 100 MB files. Speed did not change measurably
    with it on this 2-core machine (the server is the bound); 4 keeps the sidecar far under its
    192 MiB memory request (chart ``operator.sidecarResources``)."""

    range_size: int = 32 * 2**20
    """Bytes per ranged GET of native restores (an object's last range is shorter). Bodies are
    streamed, so this does not bound memory; larger ranges mean fewer requests. Measured
    in-process on SeaweedFS, 1 GB file, 2 shared cores (bench/RESULTS.md): 16-64 MiB ranges
    within the machine's noise of each other, 8 MiB clearly slower. fsspec backends read
    sequentially in ``part_size`` pieces (:mod:`kresume.store.download`)."""

    ranges_in_flight: int = 4
    """Ranged GETs of native restores running at once, across all files of the process (one
    pool of this many threads per distinct value). Memory: the HTTP client's read buffer per range
    (pieces are written as received; measured from SeaweedFS on loopback, 256 MiB in 872 pieces:
    median 256 KiB, largest 496 KiB)."""

    attempts: int = 8
    """Tries per request group for transient errors (throttling, 5xx, timeouts), first included.
    Eight tries with the delays below ride out about a minute of throttling; s3fs retries some
    errors itself underneath, but not InternalError/500."""

    backoff_base: float = 0.5
    """First retry delay; doubles each attempt (full jitter, AWS architecture blog 2015)."""

    backoff_max: float = 20.0
    """Ceiling of one retry delay."""

    deadline: Deadline | None = field(default=None, compare=False, repr=False)
    """When store requests must end (:mod:`kresume.store.deadline`): no try starts and no retry
    waits past it, and a store opened with it cancels async requests still running at it. ``None``:
    only the backend's own timeouts apply."""


#: Environment variables that override :class:`TransferSettings` defaults (sidecar, CLI, operator
#: alike): variable → (field, unit multiplier). Sizes in MiB, counts as integers ≥ 1.
TRANSFER_ENV: dict[str, tuple[str, int]] = {
    "KRESUME_PART_SIZE_MIB": ("part_size", 2**20),
    "KRESUME_PARTS_IN_FLIGHT": ("parts_in_flight", 1),
    "KRESUME_TRANSFER_WORKERS": ("max_workers", 1),
    "KRESUME_RANGE_SIZE_MIB": ("range_size", 2**20),
    "KRESUME_RANGES_IN_FLIGHT": ("ranges_in_flight", 1),
}


def transfer_settings(env: Mapping[str, str] = os.environ, **overrides: Any) -> TransferSettings:
    """:class:`TransferSettings` defaults with :data:`TRANSFER_ENV` applied, then ``overrides``.

    Raises ``BadOption`` naming the variable when a value is not a whole number ≥ 1 (S3 also needs
    parts ≥ 5 MiB: ``KRESUME_PART_SIZE_MIB`` below 5 is refused).
    """
    values: dict[str, Any] = {}
    for name, (fld, unit) in TRANSFER_ENV.items():
        raw = env.get(name, "").strip()
        if not raw:
            continue
        minimum = 5 if name == "KRESUME_PART_SIZE_MIB" else 1
        try:
            number = int(raw)
        except ValueError:
            number = 0
        if number < minimum:
            raise errors.BadOption(f"env {name}", f"{raw!r} is not a whole number ≥ {minimum}",
                                   fix=f"set {name} to an integer ≥ {minimum}"
                                       + (" (MiB)" if unit > 1 else "") + ", or unset it for the default")
        values[fld] = number * unit
    values.update(overrides)
    return TransferSettings(**values)


#: Protocols whose first path component is a bucket or container, and the kresume extra that
#: installs each one's fsspec backend (``pyproject.toml``).
BUCKET_PROTOCOLS: dict[str, tuple[str, str]] = {
    "s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"), "abfss": ("adlfs", "azure"),
}
#: The URL schemes kresume documents (README "The command line").
DOCUMENTED_PROTOCOLS = ("s3", "gs", "az", "abfs", "file", "memory")


def _installed(protocol: str) -> bool:
    """Whether the backend package of ``protocol`` is importable (looked up, not imported)."""
    module = BUCKET_PROTOCOLS.get(protocol, ("fsspec", ""))[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def _unknown_protocol(url: str, protocol: str) -> errors.BadURL:
    installed = [p for p in DOCUMENTED_PROTOCOLS if _installed(p)]
    missing = [p for p in DOCUMENTED_PROTOCOLS if p not in installed]
    close = difflib.get_close_matches(protocol.lower(), DOCUMENTED_PROTOCOLS, n=1, cutoff=0.5)
    detail = f"unknown protocol {protocol!r}" + (f"; did you mean {close[0]}://?" if close else "")
    fix = "installed here: " + ", ".join(f"{p}://" for p in installed)
    fix += "".join(f"; for {p}:// pip install 'kresume[{BUCKET_PROTOCOLS[p][1]}]'" for p in missing)
    fix += "; other fsspec protocols work once their package is installed"
    return errors.BadURL(url, detail, fix=fix)


def open_fs(url: str, storage_options: Mapping[str, Any] | None = None, *,
            deadline: Deadline | None = None) -> tuple[Any, str]:
    """Return ``(filesystem, root_path)`` for ``url`` with kresume's backend defaults.

    Parameters
    ----------
    url : str
        Any fsspec URL (``s3://b/p``, ``gs://``, ``az://``, ``abfs://``, ``file://``, ``memory://``
        or a plain local path).
    storage_options : mapping, optional
        Passed to the filesystem constructor; wins over defaults.
    deadline : Deadline, optional
        When given, the filesystem is a :class:`~kresume.store.deadline.BoundedFS`: its async
        requests are cancelled when the deadline passes.

    Raises
    ------
    BadURL
        Not allowed by the URL rule (:func:`kresume.store.urls.check_url`: empty, no scheme, one
        slash, no bucket …), unknown protocol (names the close match and the
        installed ones) or a backend package that is not installed (names the ``kresume[extra]``).
    BadOption
        An endpoint that is not an http(s) URL (:func:`~kresume.store.urls.check_endpoints`), or the backend's
        constructor refused a storage option (s3fs refuses only at the first request;
        :func:`kresume.store.errors.translate` maps that one the same way).
    StoreError
        Other construction failures (``NoCredentials`` for Azure without an account).
    """
    protocol = check_url(url)
    check_endpoints(url, storage_options or {}, os.environ)
    try:
        opened = native.open_native(url, storage_options or {}, deadline=deadline)
    except ValueError as exc:  # an unknown client name
        raise errors.BadOption(url, str(exc), fix=f"set {native.OPTION} (storage option) or {native.ENV} to "
                                                  "native or fsspec") from exc
    if opened is not None:
        return opened
    import fsspec  # the fsspec backends only: a native-client run never imports fsspec (its start-up cost)

    opts = backend_options(protocol, {k: v for k, v in (storage_options or {}).items() if k != native.OPTION})
    try:
        fs, path = fsspec.url_to_fs(url, **opts)
    except ImportError as exc:
        extra = BUCKET_PROTOCOLS.get(protocol, ("", ""))[1]
        hint = f"pip install 'kresume[{extra}]'" if extra else "install the fsspec backend for it"
        raise errors.BadURL(url, f"no filesystem for protocol {protocol!r} is installed", fix=hint) from exc
    except TypeError as exc:
        option = errors.bad_option(exc, url)
        if option is not None:
            raise option from exc
        raise errors.BadOption(url, f"invalid storage option: {exc}",
                               fix="check the -o / storageOptions keys against the backend's documentation") from exc
    except ValueError as exc:
        translated = errors.translate(exc, url)
        if isinstance(translated, errors.NoCredentials):
            raise translated from exc
        if "://" in url and protocol not in fsspec.available_protocols():
            raise _unknown_protocol(url, protocol) from exc
        raise errors.StoreError(url, str(exc)) from exc
    return (BoundedFS(fs, deadline) if deadline is not None else fs), path.rstrip("/")


def missing_bucket(fs: Any, root: str) -> str | None:
    """The bucket/container of ``root`` when the store says it does not exist, else ``None``.

    For an error message only (one request): callers ask when a run turned out empty, because
    listing a missing bucket looks exactly like listing an empty prefix (s3fs, gcsfs and adlfs all
    raise ``FileNotFoundError``, which a listing treats as "no objects"). ``fs.info(bucket)`` is S3
    HeadBucket, GCS buckets.get or Azure container properties; each raises ``FileNotFoundError`` for
    a missing bucket (checked on moto, fake-gcs-server and Azurite). Local and memory filesystems
    have no buckets. Any other failure says nothing about existence (GCS credentials may list
    objects without reading bucket metadata) and gives ``None``.
    """
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    bucket = root.strip("/").split("/", 1)[0]
    if not bucket or not any(p in BUCKET_PROTOCOLS for p in protocols):
        return None
    try:
        fs.invalidate_cache(bucket)
        fs.info(bucket)
    except FileNotFoundError:
        return bucket
    except Exception as exc:  # noqa: BLE001 - existence unknown; the caller reports what it saw
        logger.debug("bucket check of %s failed: %s", bucket, exc)
    return None


def backoff(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Full-jitter delay in seconds before retry number ``attempt + 1`` (``attempt`` ≥ 0): uniform in ``[0, min(cap, base * 2**attempt)]`` (AWS Architecture Blog,
    "Exponential Backoff and Jitter", 2015). The one backoff of kresume: store requests
    (:func:`retrying`) and the sidecar's whole-commit retries use it."""
    return rand() * min(cap, base * 2 ** max(0, attempt))


def retrying(fn: Callable[[], T], *, url: str, settings: TransferSettings,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn`` until it succeeds, retrying transient errors with capped exponential backoff.

    Delays come from :func:`backoff` ("full jitter"), the scheme AWS recommends for throttled
    clients. Non-transient errors are raised at once, translated. With ``settings.deadline`` no try
    starts after it and no delay runs past it; an answer renews an idle deadline.

    Raises
    ------
    StoreError
        The translated last error (``StoreUnreachable`` when transient errors exhausted the tries
        or the deadline passed).
    """
    deadline = settings.deadline
    for attempt in range(settings.attempts):
        if deadline is not None and deadline.expired():
            raise _past(url, deadline, None)
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - every backend error passes through here
            if isinstance(exc, errors.StoreError) and not isinstance(exc, errors.StoreUnreachable):
                raise
            transient = errors.is_transient(exc)
            if not transient or attempt == settings.attempts - 1:
                if transient and deadline is not None and deadline.expired():
                    raise _past(url, deadline, exc) from exc
                raise errors.translate(exc, url) from exc
            delay = backoff(attempt, settings.backoff_base, settings.backoff_max)
            left = deadline.remaining() if deadline is not None else None
            if left is not None and left <= delay:
                raise _past(url, deadline, exc) from exc  # type: ignore[arg-type]
            logger.warning("%s: transient %s (%s); retry %d/%d in %.1f s", url, type(exc).__name__,
                           str(exc).splitlines()[0][:200] if str(exc) else "", attempt + 1,
                           settings.attempts - 1, delay)
            sleep(delay)
        else:
            if deadline is not None:
                deadline.touch()
            return result
    raise AssertionError("unreachable")  # pragma: no cover


def _past(url: str, deadline: Deadline, exc: BaseException | None) -> errors.StoreUnreachable:
    """The error for a request group stopped by its deadline (names the budget and the last error)."""
    last = f" (last error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})" \
        if exc is not None and not isinstance(exc, TimeoutError) else ""
    return errors.StoreUnreachable(url, f"no answer before {deadline.what}{last}",
                                   fix="check the endpoint and network")
