"""Bookkeeping under a burst (issue 17 item 5): the coalescing status writer — pending changes of a run share
one read-modify-write, in the order they came, and each waiter learns whether its own change was written —
and the Event budget. The API here is an in-memory
CheckpointRun store with Kube.update_run_status's contract (conflict retries included); the real API server
is in tests/operator/test_operator_burst_cluster.py."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from kresume.operator.statuswriter import StatusWriter


class Runs:
    """``update_run_status`` over dicts; ``conflicts`` first writes fail as a 409 would (read and apply again)."""

    def __init__(self, conflicts: int = 0, fail: int = 0) -> None:
        self.objs: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes = 0
        self.calls = 0
        self.conflicts = conflicts
        self.fail = fail

    async def update_run_status(self, ns: str, name: str, change: Any, *, spec: Any = None) -> Any:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.fail:
            self.fail -= 1
            raise OSError("connection reset")
        for _ in range(8):
            obj = self.objs.get((ns, name))
            if obj is None:
                if spec is None:
                    return None
                obj = self.objs[(ns, name)] = {"spec": spec, "status": {}}
            new = change(copy.deepcopy(obj.get("status")))
            if new is None:
                return None
            if self.conflicts:
                self.conflicts -= 1
                continue
            obj["status"] = new
            self.writes += 1
            return copy.deepcopy(obj)
        raise RuntimeError("kept conflicting")


def append(pod: str):
    def change(status: dict[str, Any] | None) -> dict[str, Any] | None:
        status = dict(status or {})
        history = list(status.get("history") or [])
        if pod in history:
            return None
        status["history"] = history + [pod]
        return status
    return change


def test_a_burst_of_changes_of_one_run_is_one_write_in_order():
    api = Runs()

    async def main() -> list[Any]:
        writer = StatusWriter(api, delay=0.05)
        waits = [writer.update("ns", "run", append(f"p{i}"), spec={"run": "run"}) for i in range(30)]
        return await asyncio.gather(*waits)

    written = asyncio.run(main())
    assert api.writes == 1 and api.calls == 1
    assert api.objs[("ns", "run")]["status"]["history"] == [f"p{i}" for i in range(30)]
    assert all(w is not None and w["status"]["history"][-1] == "p29" for w in written)


def test_each_waiter_learns_whether_its_own_change_was_written_and_runs_are_apart():
    api = Runs()

    async def main() -> tuple[Any, Any, Any]:
        writer = StatusWriter(api, delay=0.05)
        first = writer.update("ns", "a", append("p1"), spec={})
        again = writer.update("ns", "a", append("p1"))  # already recorded by the change before it: nothing
        other = writer.update("ns", "b", append("q1"))  # run b does not exist and nobody gives its spec
        return await asyncio.gather(first, again, other)

    first, again, other = asyncio.run(main())
    assert first is not None and again is None and other is None
    assert api.objs[("ns", "a")]["status"]["history"] == ["p1"] and ("ns", "b") not in api.objs


def test_conflicts_apply_every_change_again_and_a_failed_write_is_retried_once():
    api = Runs(conflicts=3, fail=1)

    async def main() -> None:
        writer = StatusWriter(api, delay=0.02, retry_delay=0.01)
        for i in range(5):
            writer.post("ns", "run", append(f"p{i}"), spec={})
        await writer.flush()
        assert writer.writes == 1

    asyncio.run(main())
    assert api.objs[("ns", "run")]["status"]["history"] == [f"p{i}" for i in range(5)]


def test_a_full_batch_is_written_at_once_and_the_rest_follows():
    api = Runs()

    async def main() -> None:
        writer = StatusWriter(api, delay=30.0, max_batch=4)  # only a full batch can end the wait
        waits = [writer.update("ns", "run", append(f"p{i}"), spec={}) for i in range(4)]
        await asyncio.wait_for(asyncio.gather(*waits), timeout=10)

    asyncio.run(main())
    assert api.writes == 1 and len(api.objs[("ns", "run")]["status"]["history"]) == 4


def test_a_write_that_keeps_failing_reaches_its_waiters():
    api = Runs(fail=2)

    async def main() -> None:
        writer = StatusWriter(api, delay=0.01, retry_delay=0.01)
        with pytest.raises(OSError):
            await writer.update("ns", "run", append("p0"), spec={})

    asyncio.run(main())


def test_the_event_budget_posts_a_burst_then_its_rate_and_counts_the_rest():
    from kresume.operator.podevents import EventBudget

    now = [0.0]
    budget = EventBudget(rate=5.0, burst=3, clock=lambda: now[0])
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
    assert budget.dropped == 2
    now[0] = 0.2  # one token back (5/s)
    assert [budget.take(), budget.take()] == [True, False]
    now[0] = 100.0  # refilled to the burst, not beyond
    assert sum(budget.take() for _ in range(10)) == 3
    assert all(EventBudget(rate=0, burst=1).take() for _ in range(100))  # 0: no limit
