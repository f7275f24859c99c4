"""Pure upload-scheduling decisions: which checkpoint next, what fits in the grace period.

Retry delays come from :func:`kresume.store.storage.backoff` (the one backoff).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """A complete checkpoint waiting to upload. ``priority``: larger = newer (newest file mtime,
    ns); ``size``: bytes; ``not_before``: monotonic seconds before which it must not start (backoff)."""

    key: object
    priority: int
    size: int
    not_before: float = 0.0
    alias: bool = False
    """Whether its commit may alias committed objects (a single-rank commit of at least
    :data:`kresume.store.aliases.ALIAS_MIN_BYTES`)."""


def pick_next(pending: Sequence[Candidate], *, inflight_count: int, inflight_bytes: int, concurrency: int,
              max_inflight_bytes: int, now: float, inflight_alias_sizes: Collection[int] = ()) -> Candidate | None:
    """The newest candidate that may start now, or ``None``.

    Rules: at most ``concurrency`` uploads; the bytes of running uploads plus the candidate stay
    ≤ ``max_inflight_bytes``, except that one checkpoint always may run alone (a checkpoint larger
    than the budget must still upload); candidates in backoff wait; a candidate that may alias and has
    the size of a running upload that may alias (``inflight_alias_sizes``, bytes) waits for it, and
    older ones may start meanwhile: it may be a copy of it (Lightning's ``last.ckpt`` beside the step
    file, written milliseconds apart), which becomes an alias once that one is committed instead of a
    second upload of the same bytes (docs/store-protocol.md "Aliases").
    """
    if inflight_count >= concurrency:
        return None
    for c in sorted(pending, key=lambda c: c.priority, reverse=True):
        if c.not_before > now:
            continue
        if c.alias and c.size in inflight_alias_sizes:
            continue
        if inflight_count == 0 or inflight_bytes + c.size <= max_inflight_bytes:
            return c
        return None  # the newest waits for room rather than letting older ones overtake it
    return None


def superseded(candidates: Sequence[Candidate], newest_priority: int) -> list[Candidate]:
    """Candidates older than ``newest_priority`` (dropped under ``--skip-superseded``)."""
    return [c for c in candidates if c.priority < newest_priority]


def fits(bytes_left: int, bandwidth: float | None, seconds_left: float, margin: float = 1.2) -> bool:
    """Can ``bytes_left`` upload within ``seconds_left`` at ``bandwidth`` bytes/s (with a safety
    ``margin`` factor)? Unknown bandwidth (nothing measured yet) → True: try, the deadline still
    cancels it before anything partial is committed."""
    if seconds_left <= 0:
        return False
    if not bandwidth or bandwidth <= 0:
        return True
    return bytes_left * margin / bandwidth <= seconds_left


class Bandwidth:
    """Exponentially weighted upload throughput in bytes/s, from (bytes, seconds) samples."""

    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = alpha
        self.value: float | None = None

    def add(self, nbytes: int, seconds: float) -> None:
        """Record one upload of ``nbytes`` that took ``seconds`` (ignored when too small to measure)."""
        if seconds <= 0.05 or nbytes <= 0:
            return
        sample = nbytes / seconds
        self.value = sample if self.value is None else self.alpha * sample + (1 - self.alpha) * self.value
