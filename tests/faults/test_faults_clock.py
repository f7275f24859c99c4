"""The one wall clock of the store and the sidecar (kresume.store.clock) can be stepped, and every reading
follows: checkpoint ids, stamps, the orphan cutoff. What the campaign's clock jumps rely on."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from kresume.store import clock, layout

HOUR_NS = 3600 * 10**9


def test_a_stepped_source_moves_every_reading_and_ids():
    real = time.time_ns()
    clock.set_source(lambda: time.time_ns() + HOUR_NS)
    try:
        assert clock.time_ns() - real >= HOUR_NS
        assert abs(clock.time() - (real + HOUR_NS) / 1e9) < 60
        assert clock.now() - datetime.now(UTC) > timedelta(minutes=59)
        started = layout.id_started_at(layout.new_checkpoint_id(5))
        assert started is not None and started - datetime.now(UTC) > timedelta(minutes=59)
    finally:
        clock.set_source(None)
    assert abs(clock.time_ns() - time.time_ns()) < 60 * 10**9


def test_now_is_exact_to_the_microsecond():
    clock.set_source(lambda: 1_796_000_000_123_456_789)
    try:
        assert clock.now() == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=1_796_000_000_123_456)
        assert clock.now_iso().endswith(".123456+00:00")
    finally:
        clock.set_source(None)


def test_ids_never_go_back_when_the_clock_does(monkeypatch):
    """A clock stepped back an hour: new ids still sort after the ones issued before, and after ids the
    process observed (the sidecar observes the run's committed ids when it starts)."""
    monkeypatch.setattr(layout, "_floor", None)  # the process's floor is put back afterwards
    real = time.time_ns()
    offset = [0]
    clock.set_source(lambda: time.time_ns() + offset[0])
    try:
        first = layout.new_checkpoint_id(None)
        offset[0] = -HOUR_NS
        second = layout.new_checkpoint_id(None)
        assert layout.parse_checkpoint_id(second) > layout.parse_checkpoint_id(first)
        ahead = layout.new_checkpoint_id(None, now=datetime.fromtimestamp(real / 1e9 + 7200, UTC))
        layout.observe_checkpoint_ids([ahead, "not-an-id"])
        third = layout.new_checkpoint_id(None)
        assert layout.parse_checkpoint_id(third) > layout.parse_checkpoint_id(ahead)
    finally:
        clock.set_source(None)
