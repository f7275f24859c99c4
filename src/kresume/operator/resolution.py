"""Time-budgeted resolution of a run's resume checkpoint, with a result cache (issue 4, item 4).

An admission asks the store (``RunStore.latest``) in a worker thread and waits at most its budget
(default 2 s). On time, the answer is used and cached. Otherwise — timeout or any error — the pod
gets the last known value: this cache's entry, else ``CheckpointRun.status.latest`` passed in by
the caller, else none; :attr:`Outcome.error` says why, for the ``kresume.dev/resolve-error``
annotation and the ``ResolveFailed`` event. A lookup that outlived its budget still fills the cache
when it finishes, so the next admission of the run has a fresh fallback.

The background refresher (``handlers.py``) calls :meth:`Resolver.refresh` for live runs, keeping
both the cache and the fsspec filesystem instances (and their connection pools) warm.

Answers from memory: while a run is *quiet* (:mod:`kresume.operator.activity`: no pod of it may be
committing), a cached answer whose lookup started after the run became quiet is still the store's
answer, so an admission takes it without a store round trip (source ``memory``), as long as it is at
most :attr:`ResolutionSettings.quiet_max_age` seconds old. The handlers refresh a run the moment it
becomes quiet, so the replacement pod of a preempted run usually finds such an answer.

One store round trip per admission (issue 17 item 3): each run's store handle keeps the manifests it has
validated (:mod:`kresume.store.known`), so a lookup reads the pointer and both listings concurrently and
validates only a checkpoint it has not seen (a second round trip, once per checkpoint); concurrent
admissions of one run share one lookup (:meth:`Resolver._shared_lookup`). An admission that joined a lookup
begun before it then reads the bad mark of the answer (one GET begun after it, shared by every such joiner):
that lookup may have listed ``bad/`` before a ``mark-bad`` that returned before this admission began.

Bad marks are seen at once (issue 11 item 3): ``kresume mark-bad`` works without any pod, so a quiet run's
answer may name a checkpoint marked bad since. Before answering from memory the resolver reads the bad mark
of the one checkpoint it is about to inject (one GET of ``bad/<id>.json``, within the admission's budget); a
mark found — or no answer in time — sends the admission to the store, whose lookup skips bad marks. Store
answers are read after the admission started, so they see every mark made before it. Ids this process knows
to be bad (found so, or marked by the operator itself: :meth:`Resolver.note_bad`) are never injected from the
fallbacks either (cache, ``status.latest``), which are used only when the store cannot answer.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kresume.injection import Resume
from kresume.operator.activity import Activity
from kresume.operator.settings import ResolutionSettings
from kresume.store.runstore import RunStore

#: Outcome sources.
SOURCE_STORE, SOURCE_MEMORY, SOURCE_CACHE, SOURCE_STATUS, SOURCE_NONE = "store", "memory", "cache", "status", "none"
#: A rank that joined its run's resume epoch: the epoch's checkpoint (:mod:`kresume.operator.epochbook`).
SOURCE_EPOCH = "epoch"


@dataclass(frozen=True)
class Entry:
    """A cached store answer: ``resume`` (None = the run has no checkpoint), when it was fetched
    (``time.monotonic()`` seconds), the manifest's ``committedAt``, the checkpoint count (None
    when not counted) and when the lookup started (monotonic seconds; None when unknown)."""

    resume: Resume | None
    fetched_at: float
    committed_at: str | None = None
    checkpoints: int | None = None
    started_at: float | None = None


@dataclass(frozen=True)
class Outcome:
    """What an admission injects.

    resume : Resume or None — the checkpoint to resume from (None: fresh start).
    source : str — ``store`` (answered in budget), ``memory`` (exact answer of a quiet run, no store
        call), ``cache``, ``status`` or ``none`` (fallbacks).
    error : str or None — why the store's answer was not used (None when it was).
    seconds : float — wall time spent waiting.
    """

    resume: Resume | None
    source: str
    error: str | None
    seconds: float


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


class Resolver:
    """Resolves runs with a budget; owns the cache, the store handles and the worker threads.

    ``open_store(url, options)`` defaults to :meth:`RunStore.open`; tests may pass a function that
    returns a slow or failing store. ``activity`` (fed by the handlers) enables answers from memory
    for quiet runs; None (e.g. several peered replicas, whose pod watch may be paused) always asks
    the store. One instance per operator process; :meth:`resolve` and :attr:`activity` belong to the
    event loop, lookups run in worker threads.
    """

    def __init__(
        self,
        settings: ResolutionSettings | None = None,
        *,
        open_store: Callable[[str, Mapping[str, Any]], Any] = RunStore.open,
        clock: Callable[[], float] = time.monotonic,
        activity: Activity | None = None,
    ) -> None:
        self.settings = settings or ResolutionSettings()
        self._open_store = open_store
        self._clock = clock
        self.activity = activity
        self._cache: dict[str, Entry] = {}
        self._bad: dict[str, set[str]] = {}
        self._stores: dict[tuple[str, str], Any] = {}
        self._inflight: dict[tuple[str, str], tuple[float, asyncio.Future[Entry]]] = {}
        self._marks: dict[tuple[str, str, str], tuple[float, asyncio.Future[bool]]] = {}
        self._lock = threading.Lock()
        # Two lanes: admissions' lookups and bad-mark reads never queue behind background work (refreshes of
        # live runs, the crash-loop fallback's reads and marks), which has threads of its own.
        self._pool = ThreadPoolExecutor(max_workers=self.settings.workers, thread_name_prefix="kresume-resolve")
        self._background = ThreadPoolExecutor(max_workers=max(2, self.settings.workers // 2),
                                              thread_name_prefix="kresume-refresh")

    def close(self) -> None:
        """Stop accepting work; running lookups finish in their threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._background.shutdown(wait=False, cancel_futures=True)

    # --- cache ------------------------------------------------------------------------------------
    def cached(self, url: str) -> Entry | None:
        """The cached entry of a run URL, if any."""
        with self._lock:
            return self._cache.get(url)

    def note_bad(self, url: str, checkpoint: str) -> None:
        """Checkpoint ``checkpoint`` of run ``url`` is marked bad (the operator marked it, or a check found the
        mark): drop a cached answer naming it and never inject it from a fallback."""
        with self._lock:
            self._bad.setdefault(url, set()).add(checkpoint)
            entry = self._cache.get(url)
            if entry is not None and entry.resume is not None and entry.resume.checkpoint == checkpoint:
                del self._cache[url]

    def known_bad(self, url: str, checkpoint: str) -> bool:
        """True when this process knows ``checkpoint`` of run ``url`` to be marked bad."""
        with self._lock:
            return checkpoint in self._bad.get(url, ())

    def forget(self, url: str) -> None:
        """Drop a run's cache entry and store handles (its CheckpointRun was deleted)."""
        with self._lock:
            self._cache.pop(url, None)
            self._bad.pop(url, None)
            for key in [k for k in self._stores if k[0] == url]:
                del self._stores[key]
        if self.activity is not None:
            self.activity.forget(url)

    def exact(self, url: str, entry: Entry, now: float) -> bool:
        """True when ``entry`` is still the store's answer: the run is quiet, the entry's lookup
        started after it became quiet, and the entry is at most ``quiet_max_age`` seconds old."""
        max_age = self.settings.quiet_max_age
        if self.activity is None or max_age <= 0 or entry.started_at is None or now - entry.fetched_at > max_age:
            return False
        since = self.activity.quiet_since(url)
        return since is not None and entry.started_at >= since

    def _store(self, url: str, options: Mapping[str, Any]) -> Any:
        key = (url, _options_key(options))
        with self._lock:
            store = self._stores.get(key)
        if store is None:
            store = self._open_store(url, options)
            with self._lock:
                self._stores[key] = store
        return store

    def _lookup(self, url: str, options: Mapping[str, Any], deadline: float | None, count: bool,
                started: float) -> Entry:
        """Blocking: ask the store, cache and return the answer (runs in a worker thread).

        ``started`` is the clock time the caller decided to look up (taken on the event loop, before
        any store read); of two answers the one whose lookup started later is kept."""
        store = self._store(url, options)
        resolved = store.latest(deadline=deadline)
        checkpoints = len(store.manifest_ids()) if count else None
        entry = Entry(
            resume=Resume.from_resolved(resolved) if resolved is not None else None,
            fetched_at=self._clock(),
            committed_at=getattr(resolved.manifest, "committed_at", None) if resolved is not None else None,
            checkpoints=checkpoints,
            started_at=started,
        )
        with self._lock:
            if entry.resume is not None:  # the store says it is not bad (now): e.g. `kresume unmark-bad`
                self._bad.get(url, set()).discard(entry.resume.checkpoint)
            old = self._cache.get(url)
            if old is None or (old.started_at or 0.0) <= started:
                self._cache[url] = entry if checkpoints is not None or old is None else _keep_count(entry, old)
        return entry

    # --- admission --------------------------------------------------------------------------------
    async def resolve(
        self,
        url: str,
        options: Mapping[str, Any],
        *,
        budget: float | None = None,
        fallback: Resume | None = None,
    ) -> Outcome:
        """The checkpoint a new pod of run ``url`` resumes from, within ``budget`` seconds.

        Parameters
        ----------
        url : str
            The run URL ``<policy.storage>/<namespace>/<run>/``.
        options : mapping
            fsspec storage options (policy + credentials).
        budget : float, optional
            Seconds to wait for the store (default :attr:`ResolutionSettings.timeout`).
        fallback : Resume, optional
            The last value known outside this process (``CheckpointRun.status.latest``).

        Never raises (except ``asyncio.CancelledError``): every failure becomes a fallback outcome.
        """
        budget = self.settings.timeout if budget is None else budget
        start = self._clock()
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        entry = self.cached(url)
        if entry is not None and self.exact(url, entry, start):
            if entry.resume is None or await self.bad_mark(url, options, entry.resume.checkpoint, budget) is False:
                return Outcome(entry.resume, SOURCE_MEMORY, None, self._clock() - start)
            budget = max(0.05, budget - (time.monotonic() - t0))
        deadline = time.monotonic() + budget
        try:
            began, future = self._shared_lookup(loop, url, options, deadline)
            entry = await asyncio.wait_for(asyncio.shield(future), timeout=budget)
            if began < start and entry.resume is not None:  # joined: re-read the answer's bad mark (module doc)
                left = max(0.05, deadline - time.monotonic())
                bad = await self.bad_mark(url, options, entry.resume.checkpoint, left, not_before=start)
                if bad is not False:
                    return await self._own_lookup(loop, url, options, deadline, fallback, start, bad)
            return Outcome(entry.resume, SOURCE_STORE, None, self._clock() - start)
        except asyncio.TimeoutError:
            error = f"timeout: the store did not answer within {budget:g} s"
            future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)  # no "never retrieved"
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - the webhook must never fail on resolution
            error = _describe(exc)
        return self._fallback(url, fallback, error, start)

    async def _own_lookup(self, loop: asyncio.AbstractEventLoop, url: str, options: Mapping[str, Any],
                          deadline: float, fallback: Resume | None, start: float, bad: bool | None) -> Outcome:
        """A lookup of this admission's own (begun now, so it sees every mark made before it), after the shared
        one's answer turned out marked bad (``bad`` True) or its mark could not be read (None)."""
        budget = deadline - time.monotonic()
        error = "timeout: the bad mark of the shared lookup's answer was not read in time"
        if budget > 0.01:
            future = loop.run_in_executor(self._pool, self._lookup, url, dict(options), deadline, False, self._clock())
            try:
                entry = await asyncio.wait_for(asyncio.shield(future), timeout=budget)
                return Outcome(entry.resume, SOURCE_STORE, None, self._clock() - start)
            except asyncio.TimeoutError:
                future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
                error = f"timeout: the store did not answer within {budget:g} s"
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - the webhook must never fail on resolution
                error = _describe(exc)
        return self._fallback(url, fallback, error, start)

    async def bad_mark(self, url: str, options: Mapping[str, Any], checkpoint: str, budget: float, *,
                       not_before: float | None = None) -> bool | None:
        """Whether ``checkpoint`` of run ``url`` carries a bad mark: one store read within ``budget`` seconds (none
        when this process knows it is bad). True (it is then :meth:`note_bad`-ed), False, or None when the store
        did not say in time. With ``not_before`` (clock seconds), a read of the same mark begun at or after it and
        still under way is shared instead of making another."""
        if self.known_bad(url, checkpoint):
            return True
        key = (url, _options_key(options), checkpoint)
        running = self._marks.get(key) if not_before is not None else None
        if running is not None and running[0] >= not_before and not running[1].done():  # type: ignore[operator]
            future = running[1]
        else:
            future = asyncio.get_running_loop().run_in_executor(
                self._pool, lambda: self._store(url, dict(options)).is_bad(checkpoint))
            if not_before is not None:
                entry = (self._clock(), future)
                self._marks[key] = entry
                future.add_done_callback(lambda f: self._marks.pop(key, None) if self._marks.get(key) is entry
                                         else None)
        try:
            bad = bool(await asyncio.wait_for(asyncio.shield(future), timeout=budget))
        except asyncio.CancelledError:
            raise
        except BaseException:  # noqa: BLE001 - unknown
            future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
            return None
        if bad:
            self.note_bad(url, checkpoint)
        return bad

    def _shared_lookup(self, loop: asyncio.AbstractEventLoop, url: str, options: Mapping[str, Any],
                       deadline: float) -> tuple[float, asyncio.Future[Entry]]:
        """The admission lookup of run ``url`` under way, else a new one (event loop only), with the clock time it
        began.

        Concurrent admissions of one run (the N pods of a gang created at once after a preemption)
        share one lookup instead of each reading the store. One that joins gets the answer of a
        lookup that started at most one lookup's duration (≤ the webhook budget) before it: a
        checkpoint committed in that window is missed exactly as by an admission racing the commit; a bad mark
        made in it is not (:meth:`resolve` re-reads the answer's mark for a joiner).
        """
        key = (url, _options_key(options))
        running = self._inflight.get(key)
        if running is not None and not running[1].done():
            return running
        began = self._clock()
        future = loop.run_in_executor(self._pool, self._lookup, url, dict(options), deadline, False, began)
        entry = (began, future)
        self._inflight[key] = entry
        future.add_done_callback(lambda f: self._inflight.pop(key, None) if self._inflight.get(key) is entry else None)
        return entry

    def _fallback(self, url: str, fallback: Resume | None, error: str, start: float) -> Outcome:
        """The last known value that is not known to be bad: this cache's, else ``status.latest``, else none."""
        entry = self.cached(url)
        if entry is not None and (entry.resume is None or not self.known_bad(url, entry.resume.checkpoint)):
            return Outcome(entry.resume, SOURCE_CACHE, error, self._clock() - start)
        if fallback is not None and not self.known_bad(url, fallback.checkpoint):
            return Outcome(fallback, SOURCE_STATUS, error, self._clock() - start)
        return Outcome(None, SOURCE_NONE, error, self._clock() - start)

    # --- background -------------------------------------------------------------------------------
    async def call(self, url: str, options: Mapping[str, Any], fn: Callable[[Any], Any], *,
                   timeout: float | None = None) -> Any:
        """``fn(store)`` on the run's store in a worker thread, within ``timeout`` seconds (default
        :attr:`ResolutionSettings.refresh_timeout`): the operator's other store operations (the crash-loop
        fallback's reads and its bad mark) share the resolver's store handles and threads.

        Raises whatever ``fn`` raises, or ``TimeoutError``.
        """
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._background, lambda: fn(self._store(url, dict(options))))
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=timeout or self.settings.refresh_timeout)
        except asyncio.TimeoutError:
            future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
            raise

    async def warm(self, base: str, options: Mapping[str, Any]) -> None:
        """Create (and cache) the filesystem of a policy's storage base and make one cheap call, so the
        first admission of a run does not pay for client setup (s3fs/aiobotocore: ~1 s on a busy node).

        Raises whatever the store raises (callers log it); bounded by ``refresh_timeout``.
        """
        from kresume.store.storage import open_fs

        def touch() -> None:
            fs, root = open_fs(base, dict(options))
            fs.exists(root)

        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.run_in_executor(self._background, touch), timeout=self.settings.refresh_timeout)

    async def refresh(self, url: str, options: Mapping[str, Any]) -> Entry:
        """Ask the store now (budget :attr:`ResolutionSettings.refresh_timeout`) and count checkpoints.

        Raises
        ------
        StoreError, TimeoutError
            The store failed or was too slow; the cache keeps its previous entry.
        """
        loop = asyncio.get_running_loop()
        budget = self.settings.refresh_timeout
        future = loop.run_in_executor(self._background, self._lookup, url, dict(options), time.monotonic() + budget,
                                      True, self._clock())
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=budget)
        except asyncio.TimeoutError:
            future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
            raise


def _options_key(options: Mapping[str, Any]) -> str:
    """A stable key of storage options (store handles and shared lookups are per run and options)."""
    return json.dumps(options, sort_keys=True, default=str)


def _keep_count(entry: Entry, old: Entry) -> Entry:
    """An admission lookup does not count checkpoints; keep the refresher's count."""
    return Entry(entry.resume, entry.fetched_at, entry.committed_at, old.checkpoints, entry.started_at)
