"""Background tasks that do not keep the watch event that started them alive.

An asyncio task runs in a copy of the context it was created in (PEP 567). A task created inside a kopf handler
therefore holds kopf's ``cause_var``/``handler_var`` — the handler's cause, with the event's whole ``Body``
(~17 KB for an injected pod) — for as long as the task lives, although the task never reads them. The
status writer's per-run tasks wait their turn behind a semaphore: at an operator restart with 2,000 runs
thousands of them held a pod body each (gc referrers: Body ← WatchingCause ← contextvars ← Task;
bench/RESULTS.md "Operator at cluster scale"). :func:`create_task` starts a task in a copy of the context
with those variables cleared; every other variable (kopf's event queue for ``kopf.event``, the API
credentials) stays.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any

try:  # kopf's per-handler variables (1.45); absent names are simply not cleared
    from kopf._core.actions import execution as _execution

    _CLEARED: tuple[contextvars.ContextVar[Any], ...] = tuple(
        v for v in (getattr(_execution, name, None) for name in ("cause_var", "handler_var", "subrefs_var"))
        if isinstance(v, contextvars.ContextVar))
except ImportError:  # pragma: no cover - kopf moved it: tasks keep the cause (more memory, still correct)
    _CLEARED = ()


def _clear() -> None:
    for var in _CLEARED:
        var.set(None)


def create_task(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """``loop.create_task(coro)`` in a copy of the current context without kopf's handler cause (see the module)."""
    ctx = contextvars.copy_context()
    ctx.run(_clear)
    return asyncio.get_running_loop().create_task(coro, context=ctx)
