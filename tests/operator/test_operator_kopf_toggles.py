"""kopf's index-readiness gate with :mod:`kresume.operator.kopf_toggles` applied, on kopf's own ``ToggleSet``: the
same wake-ups for every waiter that can proceed, and a constant number of notifications for N indexed objects
(was one per object, each waking every waiting object)."""

from __future__ import annotations

import asyncio

from kopf._cogs.aiokits.aiotoggles import ToggleSet

from kresume.operator import kopf_toggles


def _counting(ts: ToggleSet) -> list[int]:
    calls = [0]
    notify = ts._condition.notify_all

    def counted() -> None:
        calls[0] += 1
        notify()

    ts._condition.notify_all = counted  # type: ignore[method-assign]
    return calls


def test_objects_wait_until_the_last_is_indexed_with_one_notification():
    assert kopf_toggles.apply()

    async def scenario() -> None:
        ts = ToggleSet(all)
        calls = _counting(ts)
        toggles = [await ts.make_toggle(name=str(i)) for i in range(500)]  # one per listed object, all off
        waiters = [asyncio.create_task(ts.wait_for(True)) for _ in range(500)]
        await asyncio.sleep(0)
        for t in toggles[:-1]:
            await ts.drop_toggle(t)
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)  # one object is not indexed yet: every other one waits
        await ts.drop_toggle(toggles[-1])
        await asyncio.wait_for(asyncio.gather(*waiters), timeout=30)
        # The set turned off (first toggle) and on (last drop): 2 notifications; unpatched, 1,000 (500 makes + 500
        # drops), each waking every waiter.
        assert calls[0] == 2

    asyncio.run(scenario())


def test_a_new_toggle_wakes_waiters_for_off_and_turning_one_on_still_notifies():
    assert kopf_toggles.apply()

    async def scenario() -> None:
        ts = ToggleSet(all)
        assert ts.is_on()  # empty: on
        off = asyncio.create_task(ts.wait_for(False))
        await asyncio.sleep(0)
        toggle = await ts.make_toggle(name="new object")  # the set turns off
        await asyncio.wait_for(off, timeout=30)
        on = asyncio.create_task(ts.wait_for(True))
        single = asyncio.create_task(toggle.wait_for(True))
        await asyncio.sleep(0)
        await toggle.turn_to(True)  # kopf's own path (peering, pausing): unchanged
        await asyncio.wait_for(asyncio.gather(on, single), timeout=30)
        await ts.drop_toggles([toggle])
        assert ts.is_on() and len(ts) == 0

    asyncio.run(scenario())


def test_an_any_set_of_peering_toggles_behaves_as_before():
    assert kopf_toggles.apply()

    async def scenario() -> None:
        ts = ToggleSet(any)  # kopf's operator_paused: off while empty
        paused = asyncio.create_task(ts.wait_for(True))
        await asyncio.sleep(0)
        await ts.make_toggle(True, name="peering")  # the set turns on: the waiter wakes
        await asyncio.wait_for(paused, timeout=30)
        resumed = asyncio.create_task(ts.wait_for(False))
        await asyncio.sleep(0)
        await ts.drop_toggles(list(ts))
        await asyncio.wait_for(resumed, timeout=30)

    asyncio.run(scenario())
