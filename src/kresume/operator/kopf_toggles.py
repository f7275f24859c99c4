"""kopf's index-readiness gate, made linear in the number of watched objects.

kopf (1.45) holds every resource handler back until all index handlers have seen every listed object: each
object of an indexed resource gets a toggle in one ``ToggleSet(all)`` (``operator_indexed``), dropped once that
object is indexed, and every object's first event waits on the set (``processing.py``:
``await operator_indexed.wait_for(True)``). ``ToggleSet.make_toggle`` and ``drop_toggle`` call
``notify_all()`` on the set's ``asyncio.Condition`` every time, although the set's state (all toggles off
until the last is dropped) does not change: each of N drops wakes all N waiting objects, and each must take
the condition's lock in turn before it can go back to sleep, with the watcher's next ``make_toggle`` queued
behind them. N² lock hand-offs: measured, 2,000 CheckpointRuns + 2,000 pods took 110 s to settle (200 + 200:
5 s), the main thread in ``make_toggle``/``wait_for``/``_call_soon`` (py-spy; bench/RESULTS.md "Operator at
cluster scale"), and 10,000 + 10,000 would take tens of minutes, during which no pod event is handled.

:func:`apply` replaces those three methods with ones that notify only when the set's state changes. Waiters
of the set wait for its state (``wait_for``); waiters of one toggle wait for that toggle's state, which adding
or dropping another toggle never changes; so no waiter that could proceed is left asleep. Toggles turning
on/off (``Toggle.turn_to``, peering) notify as before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger(__name__)

_APPLIED = False


def apply() -> bool:
    """Patch ``kopf._cogs.aiokits.aiotoggles.ToggleSet`` (once per process); False (logged) when kopf's
    internals are not the expected ones (then kopf runs unchanged: correct, only slow with many objects)."""
    global _APPLIED
    if _APPLIED:
        return True
    try:
        from kopf._cogs.aiokits.aiotoggles import Toggle, ToggleSet
    except ImportError:
        logger.warning("kopf's ToggleSet not found: the index-readiness gate stays quadratic in watched objects")
        return False
    probe = ToggleSet(all)
    if not all(hasattr(probe, a) for a in ("_condition", "_toggles", "_fn", "make_toggle", "drop_toggle",
                                           "drop_toggles", "is_on")):
        logger.warning("kopf's ToggleSet changed: the index-readiness gate stays quadratic in watched objects")
        return False

    async def make_toggle(self: Any, __val: bool = False, *, name: str | None = None) -> Any:
        toggle = Toggle(__val, name=name, condition=self._condition)
        async with self._condition:
            before = self.is_on()
            self._toggles.add(toggle)
            if self.is_on() != before:
                self._condition.notify_all()
        return toggle

    async def drop_toggles(self: Any, toggles: Iterable[Any]) -> None:
        async with self._condition:
            before = self.is_on()
            self._toggles.difference_update(toggles)
            if self.is_on() != before:
                self._condition.notify_all()

    async def drop_toggle(self: Any, toggle: Any) -> None:
        await drop_toggles(self, (toggle,))

    ToggleSet.make_toggle = make_toggle  # type: ignore[method-assign]
    ToggleSet.drop_toggle = drop_toggle  # type: ignore[method-assign]
    ToggleSet.drop_toggles = drop_toggles  # type: ignore[method-assign]
    _APPLIED = True
    return True
