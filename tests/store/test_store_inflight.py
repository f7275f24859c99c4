"""The process-wide budget of upload buffers: FIFO grants, never more than the total held."""

from __future__ import annotations

import threading
import time

from kresume.store.inflight import Budget


def test_grants_never_exceed_the_total_and_come_in_arrival_order() -> None:
    budget = Budget(4)
    order: list[str] = []
    held = budget.acquire(3)
    assert held == 3

    def want(name: str, n: int, started: threading.Event) -> None:
        started.set()
        with budget.hold(n):
            order.append(name)
            time.sleep(0.01)

    big_started, small_started = threading.Event(), threading.Event()
    big = threading.Thread(target=want, args=("big", 4, big_started))
    big.start()
    big_started.wait(10)
    deadline = time.monotonic() + 10
    while not budget._queue and time.monotonic() < deadline:  # the big request is queued
        time.sleep(0.001)
    small = threading.Thread(target=want, args=("small", 1, small_started))
    small.start()
    small_started.wait(10)
    time.sleep(0.05)
    assert order == []  # one slot is free, but the small request waits behind the big one
    budget.release(held)
    big.join(10)
    small.join(10)
    assert order == ["big", "small"]
    assert budget.peak_held == 4


def test_a_request_larger_than_the_total_is_granted_the_total() -> None:
    budget = Budget(2)
    with budget.hold(5) as granted:
        assert granted == 2
