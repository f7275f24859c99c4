"""Time budgets for store requests: a :class:`Deadline`, a filesystem whose requests end at it, a watchdog.

Three budgets use it (README "The command line", sidecar/README "Signals and exit", ``resume_from``):

- the sidecar's shutdown: after SIGTERM every store request must end by the grace period's end
  (issue 11 item 8; measured before: a frozen S3 server kept uploads blocked for > 10 minutes);
- a CLI command: it fails when the store has not answered for ``--timeout`` seconds (an *idle*
  budget, renewed by every answer, so a long restore of a live store is never cut);
- ``resume_from()``: a short fixed budget for reading the run's latest checkpoint.

:class:`BoundedFS` wraps an fsspec filesystem. For an async backend (s3fs, gcsfs, adlfs: fsspec's
``AsyncFileSystem``) every sync-wrapped call (``ls``, ``cat_file``, ``pipe_file``, ``call_s3`` …) and
every coroutine (``_call_s3``) runs on the backend's event loop under :meth:`BoundedFS.bounded`,
which cancels the request — with the backend's own retries inside it — when the deadline passes,
including a request that started before the deadline was set. Calls the backend implements
synchronously (``open``'s file objects, local and memory filesystems) are not bounded here; for those
the process-level :func:`watch` is the guarantee.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any



class Deadline:
    """A limit for store requests in monotonic seconds, unset, fixed, or idle (renewed by answers).

    ``what`` names the budget in error messages (``"the shutdown deadline (--grace-seconds)"``).
    ``idle``: seconds; the limit is then ``idle`` seconds after the last :meth:`touch` (or creation).
    Thread-safe; listeners (:meth:`subscribe`) are called whenever the limit moves earlier.
    """

    def __init__(self, what: str, *, idle: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.idle = idle
        self._clock = clock
        self._lock = threading.Lock()
        self._at: float | None = clock() + idle if idle is not None else None
        self._listeners: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()

    def set(self, at: float) -> None:
        """Limit requests to end by monotonic time ``at`` (never later than an earlier limit)."""
        with self._lock:
            self._at = at if self._at is None else min(self._at, at)
            listeners = list(self._listeners.values())
        for fn in listeners:
            fn()

    def touch(self) -> None:
        """The store answered: an idle budget starts again (no effect on a fixed one)."""
        if self.idle is None:
            return
        with self._lock:
            self._at = max(self._at or 0.0, self._clock() + self.idle)

    def clear(self) -> None:
        """Remove a fixed limit (requests are unbounded again); an idle budget is not affected. For a flush that
        was started and then called off (a legacy-mode sidecar whose trainer took its lock again)."""
        if self.idle is None:
            with self._lock:
                self._at = None

    def remaining(self) -> float | None:
        """Seconds left (≤ 0 when passed), or ``None`` when no limit is set."""
        with self._lock:
            at = self._at
        return None if at is None else at - self._clock()

    def expired(self) -> bool:
        """True once the limit has passed."""
        left = self.remaining()
        return left is not None and left <= 0

    def subscribe(self, fn: Callable[[], None]) -> int:
        """Call ``fn()`` (from the thread moving it) whenever the limit is set; returns a token."""
        with self._lock:
            token = next(self._ids)
            self._listeners[token] = fn
        return token

    def unsubscribe(self, token: int) -> None:
        """Stop calling the listener of ``token``."""
        with self._lock:
            self._listeners.pop(token, None)


class DeadlineExceeded(TimeoutError):
    """A store request was cancelled because its :class:`Deadline` passed (transient: the retry
    layer, :func:`kresume.store.storage.retrying`, then reports the budget as ``StoreUnreachable``)."""


class BoundedFS:
    """An fsspec filesystem whose async requests end when ``deadline`` passes (see the module docstring).

    Every attribute is the wrapped filesystem's (``protocol``, ``loop``, ``split_path`` …); only
    calls that run on the backend's event loop are wrapped. A successful request touches the
    deadline (an idle budget restarts).
    """

    def __init__(self, fs: Any, deadline: Deadline) -> None:
        self.__dict__["fs"] = fs
        self.__dict__["deadline"] = deadline

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.fs, name)
        if not callable(attr) or not getattr(self.fs, "async_impl", False):
            return attr
        if name.startswith("_"):
            if inspect.iscoroutinefunction(attr):
                async def bounded_coroutine(*args: Any, **kwargs: Any) -> Any:
                    return await self.bounded(attr, *args, **kwargs)
                return bounded_coroutine
            return attr
        coro = getattr(self.fs, "_" + name, None)
        if getattr(attr, "__wrapped__", None) is None or not inspect.iscoroutinefunction(coro):
            return attr  # implemented synchronously by the backend (open, invalidate_cache …)

        def bounded_call(*args: Any, **kwargs: Any) -> Any:
            from fsspec.asyn import sync  # only async fsspec backends get here (the native client does not)

            return sync(self.fs.loop, self.bounded, coro, *args, **kwargs)
        return bounded_call

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.fs, name, value)

    def __repr__(self) -> str:
        return f"BoundedFS({self.fs!r})"

    async def bounded(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Await ``fn(*args, **kwargs)`` on the running loop; cancel it and raise
        :class:`DeadlineExceeded` when the deadline passes (re-checked whenever it is set)."""
        import asyncio

        deadline = self.deadline
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(fn(*args, **kwargs))
        moved = asyncio.Event()
        token = deadline.subscribe(lambda: loop.call_soon_threadsafe(moved.set))
        try:
            while True:
                left = deadline.remaining()
                if left is not None and left <= 0:
                    task.cancel()
                    raise DeadlineExceeded(f"no answer before {deadline.what}")
                waiter = asyncio.ensure_future(moved.wait())
                try:
                    done, _ = await asyncio.wait({task, waiter}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if task in done:
                    result = task.result()
                    deadline.touch()
                    return result
                moved.clear()
        finally:
            deadline.unsubscribe(token)
            if not task.done():
                task.cancel()


def watch(deadline: Deadline, on_expiry: Callable[[], None], *, after: float = 0.0,
          now: threading.Event | None = None, cancel: threading.Event | None = None,
          name: str = "kresume-deadline") -> threading.Thread:
    """Start a daemon thread that calls ``on_expiry()`` once ``deadline`` has been passed for
    ``after`` seconds (or at once when ``now`` is set); setting ``cancel`` ends the thread without
    calling it (the work finished in time). ``on_expiry`` is expected to end the process
    (``os._exit``): it is the guarantee for calls :class:`BoundedFS` cannot bound."""
    now = now or threading.Event()
    cancel = cancel or threading.Event()

    def run() -> None:
        while not now.is_set():
            if cancel.is_set():
                return
            left = deadline.remaining()
            wait = 1.0 if left is None else left + after
            if left is not None and wait <= 0:
                break
            now.wait(min(max(wait, 0.01), 0.25))
        if not cancel.is_set():
            on_expiry()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def exit_now(code: int) -> None:
    """End the process at once with ``code`` after flushing logs and output (``os._exit``: threads
    blocked in a store call, and the interpreter's teardown that would join them, cannot delay it)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`kresume ls | head`): nothing more to say
            pass
    os._exit(code)
