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


def test_transfer_settings_come_from_the_environment_with_units() -> None:
    import pytest

    from kresume.store import errors
    from kresume.store.storage import TransferSettings, transfer_settings

    got = transfer_settings({"KRESUME_PART_SIZE_MIB": "16", "KRESUME_PARTS_IN_FLIGHT": "6",
                             "KRESUME_TRANSFER_WORKERS": "2"}, attempts=3)
    assert (got.part_size, got.parts_in_flight, got.max_workers, got.attempts) == (16 * 2**20, 6, 2, 3)
    assert transfer_settings({}) == TransferSettings()
    with pytest.raises(errors.BadOption, match="KRESUME_PART_SIZE_MIB"):
        transfer_settings({"KRESUME_PART_SIZE_MIB": "1"})  # S3 parts are at least 5 MiB
    with pytest.raises(errors.BadOption, match="KRESUME_PARTS_IN_FLIGHT"):
        transfer_settings({"KRESUME_PARTS_IN_FLIGHT": "many"})
