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
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

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
