"""Coalesced ``CheckpointRun`` status writes: one read-modify-write per run carries every pending change
(issue 17 item 5).

The pod watch changes a run's status on pod events: ``history`` at admission, ``restarts``/``lastPreemption``
on a disruption, ``worldSize``, ``restores``, the crash-loop count; the refresher writes ``latest``. Written
one by one, a burst of N pods of one run costs N or more GET + PUT pairs, which conflict with one another
(HTTP 409, read again) and with the resume epoch's compare-and-swap that multi-rank admissions make.

:class:`StatusWriter` queues the changes per run. One task per run waits ``delay`` seconds after the first
change (so the changes of a burst gather), then applies every pending change, in the order they came, to one
read of the status and writes the result once (:meth:`Kube.update_run_status`: on a conflict it reads again
and applies them all again). A change is what it was before: a pure function ``status -> new status | None``
(None: nothing to change), so the status ends exactly as one write per change would leave it. Bounds: a batch
holds at most ``max_batch`` changes (a full batch is written without waiting), at most ``concurrency`` runs
are written at once, and a failed write is tried once more after ``retry_delay`` seconds (every change of
the operator is idempotent: applying it to a status that has it already changes nothing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kresume.operator import detached

logger = logging.getLogger(__name__)

Change = Callable[[dict[str, Any] | None], dict[str, Any] | None]


@dataclass
class _Pending:
    change: Change
    spec: dict[str, Any] | None
    future: asyncio.Future[dict[str, Any] | None] | None


class StatusWriter:
    """Per-run queues of status changes, each drained by one task (module docstring).

    Parameters
    ----------
    api : Kube-like
        Has ``async update_run_status(namespace, name, change, *, spec=None) -> dict | None``.
    delay : float
        Seconds a run's first pending change waits for others before the write (default 0.25).
    max_batch : int
        Most changes carried by one write; a run with that many pending is written at once.
    concurrency : int
        Runs written at the same time (each write is a GET and a PUT in the API's bookkeeping lane).
    retry_delay : float
        Seconds before the one retry of a failed write.

    Event loop only (not thread-safe).
    """

    def __init__(self, api: Any, *, delay: float = 0.25, max_batch: int = 200, concurrency: int = 2,
                 retry_delay: float = 0.5) -> None:
        self._api = api
        self.delay = delay
        self.max_batch = max(1, max_batch)
        self.retry_delay = retry_delay
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self._pending: dict[tuple[str, str], list[_Pending]] = {}
        self._full: dict[tuple[str, str], asyncio.Event] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.writes = 0
        """Status writes made (successful read-modify-write calls that wrote; tests and metrics)."""
        self.changes = 0
        """Changes submitted."""

    def post(self, namespace: str, name: str, change: Change, *, spec: dict[str, Any] | None = None) -> None:
        """Queue ``change`` of run ``namespace/name`` without waiting (failures are logged by the writer)."""
        self._queue(namespace, name, _Pending(change, spec, None))

    async def update(self, namespace: str, name: str, change: Change, *,
                     spec: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Queue ``change`` and wait for its write. Same contract as :meth:`Kube.update_run_status`: ``spec``
        creates a missing run; returns the written object when ``change`` changed the status (None when it
        changed nothing, or the run is missing and no pending change carried a ``spec``); raises what the
        write raised."""
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._queue(namespace, name, _Pending(change, spec, future))
        return await future

    def _queue(self, namespace: str, name: str, item: _Pending) -> None:
        key = (namespace, name)
        pending = self._pending.setdefault(key, [])
        pending.append(item)
        self.changes += 1
        if key not in self._tasks:
            self._full[key] = asyncio.Event()
            self._tasks[key] = detached.create_task(self._drain(key))
        elif len(pending) >= self.max_batch:
            self._full[key].set()

    async def flush(self) -> None:
        """Wait until every queued change has been written (or failed)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def _drain(self, key: tuple[str, str]) -> None:
        full = self._full[key]
        batch: list[_Pending] = []
        try:
            while self._pending.get(key):
                if len(self._pending[key]) < self.max_batch:
                    try:
                        await asyncio.wait_for(full.wait(), timeout=self.delay)
                    except asyncio.TimeoutError:
                        pass
                full.clear()
                batch = self._pending[key][: self.max_batch]
                del self._pending[key][: len(batch)]
                async with self._sem:
                    await self._write(key, batch)
        except BaseException as exc:  # cancelled (shutdown): no waiter is left hanging
            for item in [*batch, *self._pending.get(key, [])]:
                if item.future is not None and not item.future.done():
                    item.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("shut down"))
            raise
        finally:
            self._tasks.pop(key, None)
            self._full.pop(key, None)
            self._pending.pop(key, None)

    async def _write(self, key: tuple[str, str], batch: list[_Pending]) -> None:
        applied = [False] * len(batch)

        def combined(status: dict[str, Any] | None) -> dict[str, Any] | None:
            current, changed = status, False
            for i, item in enumerate(batch):
                new = item.change(current)
                applied[i] = new is not None
                if new is not None:
                    current, changed = new, True
            return current if changed else None

        spec = next((item.spec for item in batch if item.spec is not None), None)
        error: Exception | None = None
        written: dict[str, Any] | None = None
        for attempt in range(2):
            try:
                written = await self._api.update_run_status(key[0], key[1], combined, spec=spec)
                error = None
                break
            except Exception as exc:  # noqa: BLE001 - handed to the waiters, logged for the others
                error = exc
                if attempt == 0:
                    await asyncio.sleep(self.retry_delay)
        if written is not None:
            self.writes += 1
        if error is not None:
            logger.warning("CheckpointRun %s/%s: writing %d status change(s) failed: %s", key[0], key[1],
                           len(batch), error)
        for i, item in enumerate(batch):
            if item.future is None or item.future.done():
                continue
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(written if applied[i] else None)


async def update(state: Any, namespace: str, name: str, change: Change, *,
                 spec: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """:meth:`StatusWriter.update` through ``state.writer``; without one (unit tests' states), the API's
    ``update_run_status`` at once."""
    writer: StatusWriter | None = getattr(state, "writer", None)
    if writer is None:
        return await state.api.update_run_status(namespace, name, change, spec=spec)  # type: ignore[no-any-return]
    return await writer.update(namespace, name, change, spec=spec)


async def post(state: Any, namespace: str, name: str, change: Change, *, spec: dict[str, Any] | None = None) -> None:
    """:meth:`StatusWriter.post` through ``state.writer`` (returns at once); without one, the API's
    ``update_run_status``, awaited."""
    writer: StatusWriter | None = getattr(state, "writer", None)
    if writer is None:
        await state.api.update_run_status(namespace, name, change, spec=spec)
    else:
        writer.post(namespace, name, change, spec=spec)
