"""The wall clock, read in one place, and the time stamps the store writes into its documents.

Every wall-clock reading of the store and the sidecar goes through :func:`time_ns` / :func:`now`:
checkpoint ids (:func:`kresume.store.layout.new_checkpoint_id`), the stamps in manifests, the
pointer and bad marks, the settle rule of the sidecar's scanner, the orphan age of ``prune`` and the
commit-lag metric. So a step of the node's clock (NTP, a VM resumed from a snapshot) is one thing to
reason about, and the fault campaign (tests/faults, docs/reliability.md) steps this clock by ±1 h in
a real sidecar process with :func:`set_source`.

The readings are the *local* clock's: for humans and ordering hints. No rule that deletes or
protects data should compare them with another machine's clock (docs/store-protocol.md "Store
clock"). Monotonic durations (deadlines, backoff, bandwidth) use ``time.monotonic`` and never come
here: a wall-clock step does not move them.

The *store's* clock is :class:`StoreClock`: it rewrites the tiny object ``.kresume-clock`` and takes
its LastModified. Every rule that decides by age — a pin is live, an orphan may be deleted —
compares that with other objects' LastModified, both stamped by the same server (issue 11 item 5:
clock skew or a long upload must not delete data still being written).
"""

from __future__ import annotations

import logging
import os
import time as _time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from kresume import contract

if TYPE_CHECKING:
    from kresume.store.runstore import RunStore

logger = logging.getLogger("kresume.store")

_source: Callable[[], int] = _time.time_ns
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_source(source: Callable[[], int] | None) -> None:
    """Replace this process's wall clock by ``source`` (nanoseconds since the Unix epoch, like
    ``time.time_ns``); ``None`` restores ``time.time_ns``. For fault tests and simulations (a clock
    stepped by an hour); the product never calls it."""
    global _source
    _source = source or _time.time_ns


def time_ns() -> int:
    """The wall clock in nanoseconds since the Unix epoch (``time.time_ns`` unless :func:`set_source`)."""
    return _source()


def time() -> float:
    """The wall clock in seconds since the Unix epoch (float)."""
    return _source() / 1e9


def now() -> datetime:
    """The wall clock as an aware UTC ``datetime`` (microsecond resolution)."""
    return _EPOCH + timedelta(microseconds=_source() // 1000)


def now_iso() -> str:
    """The wall clock as ISO-8601 with microseconds and offset (``2026-11-29T10:30:00.123456+00:00``)."""
    return now().isoformat()


def modified_at(info: dict[str, Any]) -> datetime | None:
    """The LastModified of an fsspec ``info``/``ls(detail=True)`` entry as an aware UTC datetime.

    Keys by backend (checked on each local server): s3fs ``LastModified`` (datetime; whole seconds
    on moto and SeaweedFS), adlfs ``last_modified`` (datetime), gcsfs ``updated`` (RFC 3339 string),
    local ``mtime`` (POSIX seconds), memory ``created`` (datetime from ``info``, seconds from ``ls``).
    ``None`` when the entry has none of them (the age rules then treat the object as young).
    """
    for key in ("LastModified", "last_modified", "updated", "mtime", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, datetime):
            return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


class StoreClock:
    """The store's clock for one run (``<run>/.kresume-clock``).

    :meth:`now` costs two requests (a PUT and a HEAD); callers read it once per decision (one
    prune) rather than per object.
    """

    def __init__(self, store: RunStore) -> None:
        self.store = store

    def now(self) -> datetime | None:
        """The store's time right now: the LastModified of ``.kresume-clock`` just after rewriting it.

        ``None`` when the backend reports no LastModified, or the credentials may not write (read-only
        credentials running ``kresume ls`` or ``prune --dry-run``; logged): every age rule then errs on
        the safe side (pins protect, orphans stay). Raises ``StoreError`` on other store failures.
        """
        from kresume.store import errors, transfer  # the wall clock above stays import-light

        key = contract.STORE_CLOCK_NAME
        path = self.store._path(key)
        stamp = f"{now_iso()} {os.getpid()} {os.urandom(4).hex()}\n".encode()

        def tick() -> datetime | None:
            transfer.write_small(self.store.fs, path, stamp)
            self.store.fs.invalidate_cache(path)
            return modified_at(self.store.fs.info(path))

        try:
            return self.store._retry(tick, key)
        except errors.PermissionDenied as exc:
            logger.warning("%s: cannot read the store's clock (%s); ages unknown: pins protect, orphans stay",
                           self.store.url, exc)
            return None
