"""Ctrl-C (SIGINT) and SIGTERM for the demo: a request that cannot be lost.

Python delivers SIGINT as a ``KeyboardInterrupt`` raised wherever the main thread is; when that is inside a
finalizer or a weakref callback, the interpreter prints "Exception ignored in …" and carries on (measured in a
new-user trial: the demo then ran to its end and failed its checks). :func:`install` records every request in
:data:`REQUESTED` and raises ``KeyboardInterrupt``; the demo's loops call :func:`check` on every tick, which
raises it again while a request is pending, so a swallowed one is re-raised within a tick.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

REQUESTED = threading.Event()
"""Set by the first SIGINT/SIGTERM; never cleared in the process."""


def _handler(signum: int, _frame: Any) -> None:
    if not REQUESTED.is_set():
        REQUESTED.set()
        sys.stderr.write(f"\n{signal.Signals(signum).name}: stopping everything the demo started "
                         "(containers, nodes, servers; up to a minute)…\n")
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT and SIGTERM to :func:`_handler` (main thread only, as :func:`signal.signal` requires)."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def check() -> None:
    """Raise ``KeyboardInterrupt`` when a stop was requested (a loop's tick)."""
    if REQUESTED.is_set():
        raise KeyboardInterrupt
