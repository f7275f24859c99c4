"""When kopf's initial listing of a resource has been handled: the readiness of kresume's views.

kresume's views (:mod:`kresume.operator.views`) are fed by kopf's event handlers instead of kopf's indexes, so
kopf's own readiness signal (its index gate) no longer applies. :func:`apply` adds two small hooks to kopf (1.45)
that give the same guarantee without holding any body:

* around ``kopf._cogs.clients.watching.infinite_watch`` (one per watched resource and namespace): every object
  event yielded before the stream's first ``Bookmark.LISTED`` (the end of the initial listing, or of the initial
  event stream) is *pending*; ``LISTED`` marks that watch listed;
  The listing waits while :data:`IN_FLIGHT` of its events are pending (:func:`_room`): back-pressure, so the
  bodies of a large listing are not all alive at once;
* around ``kopf._core.reactor.processing.process_resource_event`` (kopf's per-object processor): once it has
  returned for a pending event (its handlers ran, or kopf skipped them), that event is no longer pending.

:func:`ready` (``plural``) is true once every watch of the resource has listed and none of its listed events is
pending — the moment kopf's gate opened for an indexed resource — and stays true (latched, as kopf's gate:
a later re-listing after a lost watch does not make the views unready). Events are tracked by ``id()`` while
they are alive (a pending event is referenced by kopf's per-object queue until processed).

When kopf's internals are not the expected ones, :func:`apply` returns False (logged): nothing is ever ready,
so admission reads every run the view lacks from the API and the background refresh (and TTL expiry) does not
run — slower, never wrong.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class Watch:
    """One kopf watch stream (resource plural, namespace or None for cluster-wide)."""

    plural: str
    namespace: str | None
    listed: bool = False
    pending: set[int] = field(default_factory=set)
    """``id()`` of the listed events not processed yet."""
    progress: asyncio.Event | None = None
    """Set when a pending event is processed while the listing waits for room (:func:`_room`)."""
    unbounded: bool = False
    """Back-pressure given up for this watch (no event processed for :data:`STALL_SECONDS`)."""


class Listings:
    """Book of kopf's watch streams and their listed-but-unprocessed events (event loop only)."""

    def __init__(self) -> None:
        self._watches: list[Watch] = []
        self._pending: dict[int, Watch] = {}
        self._ready: set[str] = set()

    def watch(self, plural: str, namespace: str | None) -> Watch:
        """A new watch stream of ``plural`` has started."""
        w = Watch(plural, namespace)
        self._watches.append(w)
        return w

    def listed_event(self, w: Watch, event: Any) -> None:
        """``event`` came from ``w``'s initial listing: pending until :meth:`processed`."""
        w.pending.add(id(event))
        self._pending[id(event)] = w

    def end_of_listing(self, w: Watch) -> None:
        w.listed = True
        self._check(w.plural)

    def processed(self, event: Any) -> None:
        """kopf's processor has returned for ``event`` (any event; only pending ones count)."""
        w = self._pending.pop(id(event), None)
        if w is not None:
            w.pending.discard(id(event))
            if w.progress is not None:
                w.progress.set()
            self._check(w.plural)

    def stopped(self, w: Watch) -> None:
        """The watch stream ended (operator stopping, or kopf restarts it: a new :meth:`watch` follows)."""
        for eid in w.pending:
            self._pending.pop(eid, None)
        if w in self._watches:
            self._watches.remove(w)

    def _check(self, plural: str) -> None:
        if plural in self._ready:
            return
        mine = [w for w in self._watches if w.plural == plural]
        if mine and all(w.listed and not w.pending for w in mine):
            self._ready.add(plural)
            logger.info("initial listing of %s handled: kresume's view of them is complete", plural)

    def ready(self, plural: str) -> bool:
        """True once every watch of ``plural`` has listed and every listed object's event has been processed."""
        return plural in self._ready


#: The process's book (kopf's watch streams are process-wide too).
LISTINGS = Listings()

#: Listed events of one watch queued in kopf but not processed yet, at most (one page: ``runner.LIST_CHUNK``).
IN_FLIGHT = 500
#: Seconds the listing waits for kopf to process one of them before it stops waiting for this watch (logged): a
#: processor that cannot proceed until the listing ends (a kopf index added later: kopf's gate) must not hang it.
STALL_SECONDS = 10.0


async def _room(w: Watch, limit: int, stall: float) -> None:
    """Wait until fewer than ``limit`` of ``w``'s listed events are pending: the back-pressure kopf's watcher lacks.

    kopf (1.45) queues every listed object in its per-object queues as fast as the pages arrive, whatever the
    processing keeps up with; at 10,000 pods + 10,000 runs most bodies of the listing were alive at once (~17 KB
    each). Holding the next listed event here holds kopf's watcher, which then reads no further page."""
    while not w.unbounded and len(w.pending) >= limit:
        w.progress = asyncio.Event()
        try:
            await asyncio.wait_for(w.progress.wait(), timeout=stall)
        except TimeoutError:
            w.unbounded = True
            logger.warning("kopf processed none of %d listed %s in %g s: listing the rest without waiting",
                           len(w.pending), w.plural, stall)
        finally:
            w.progress = None

_APPLIED = False


def apply() -> bool:
    """Install the two hooks (once per process). False (logged) when kopf's internals are not the expected ones."""
    global _APPLIED
    if _APPLIED:
        return True
    try:
        from kopf._cogs.clients import watching
        from kopf._core.reactor import processing
    except ImportError:
        logger.warning("kopf's watching/processing modules not found: kresume's views never report ready "
                       "(admissions read unknown runs from the API; background refresh and TTL expiry are off)")
        return False
    original_watch = getattr(watching, "infinite_watch", None)
    original_process = getattr(processing, "process_resource_event", None)
    if original_watch is None or original_process is None or not hasattr(watching, "Bookmark") \
            or not hasattr(watching.Bookmark, "LISTED"):
        logger.warning("kopf's watch stream changed: kresume's views never report ready "
                       "(admissions read unknown runs from the API; background refresh and TTL expiry are off)")
        return False

    @functools.wraps(original_watch)
    async def infinite_watch(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        resource, namespace = kwargs.get("resource"), kwargs.get("namespace")
        w = LISTINGS.watch(str(getattr(resource, "plural", "")), namespace)
        try:
            async for event in original_watch(*args, **kwargs):
                if event is watching.Bookmark.LISTED:
                    LISTINGS.end_of_listing(w)
                elif not w.listed and isinstance(event, dict) and event.get("type") != "BOOKMARK":
                    await _room(w, IN_FLIGHT, STALL_SECONDS)
                    LISTINGS.listed_event(w, event)
                yield event
        finally:
            LISTINGS.stopped(w)

    @functools.wraps(original_process)
    async def process_resource_event(*args: Any, **kwargs: Any) -> Any:
        try:
            return await original_process(*args, **kwargs)
        finally:
            LISTINGS.processed(kwargs.get("raw_event"))

    watching.infinite_watch = infinite_watch  # type: ignore[assignment]
    processing.process_resource_event = process_resource_event  # type: ignore[assignment]
    _APPLIED = True
    return True


def ready(plural: str) -> bool:
    """:meth:`Listings.ready` of the process's book."""
    return LISTINGS.ready(plural)
