"""Pins, the verified fallback and unmark-bad on every backend the suite runs (issue 11 item 1;
docs/store-protocol.md "Pins, verified fallbacks and retention")."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from kresume.store import errors
from kresume.store.runstore import RunStore


@pytest.fixture
def run(store_base):
    return RunStore.open(store_base.join("ns", f"pins-{uuid.uuid4().hex[:8]}"), store_base.options)


def _ckpt(tmp_path: Path, step: int) -> Path:
    path = tmp_path / f"s{step}" / f"model-step{step}.data"
    path.parent.mkdir(parents=True)
    path.write_bytes(f"weights at step {step}".encode() * 20)
    return path


def test_a_pod_resumed_from_a_keeps_a_and_the_run_falls_back_to_it(run, tmp_path):
    """The issue's case: keepLast 1; a pod injected A pins it; its sidecar commits B and prunes; B then
    turns out not to load and is marked bad: the next pod resumes from A."""
    a = run.commit(_ckpt(tmp_path, 100))
    resume_url = run.checkpoint_url(a)  # what KRESUME_RESUME_FROM holds
    run.pin("trainer-0", resume_url, ttl_seconds=600, namespace="ns")
    b = run.commit(_ckpt(tmp_path, 200), resumed_from=resume_url)
    assert b.source["resumed_from"] == a.id
    plan = run.prune(keep_last=1)
    assert plan.delete == [] and set(plan.keep) == {a.id, b.id}
    assert "pinned by trainer-0" in plan.reasons[a.id] and "verified" in plan.reasons[a.id]
    [pin] = run.pins()
    assert (pin.holder, pin.checkpoint, pin.live) == ("trainer-0", a.id, True) and pin.age_seconds < 600
    assert run.mark_bad(b.id, "data.pkl is garbage") == a.id  # the pointer left B
    assert run.latest().checkpoint_id == a.id
    assert run.unmark_bad(b.id) == b.id and run.latest().checkpoint_id == b.id  # reversible
    with pytest.raises(errors.NoCheckpoint, match="not marked bad"):
        run.unmark_bad(b.id)
    run.unpin("trainer-0")
    assert run.pins() == []


def test_a_stale_pin_stops_protecting(run, tmp_path):
    a, b, c = (run.commit(_ckpt(tmp_path, s)) for s in (100, 200, 300))
    run.pin("trainer-1", a.id, ttl_seconds=2)
    plan = run.prune(keep_last=1, dry_run=True)
    assert plan.delete == [] and "pinned by trainer-1" in plan.reasons[a.id]
    assert "fallback" in plan.reasons[b.id] and "none is verified" in plan.reasons[b.id]
    deadline = time.monotonic() + 60
    while run.pins()[0].live:  # by the store's clock, not ours
        assert time.monotonic() < deadline, "the pin never went stale by the store's clock"
        time.sleep(0.5)
    plan = run.prune(keep_last=1)
    assert plan.delete == [a.id] and set(plan.keep) == {b.id, c.id}
    assert run.read_manifest(a.id) is None and run.pins()[0].checkpoint == a.id  # the stale pin itself stays


def test_pins_refuse_what_is_not_a_checkpoint(run):
    with pytest.raises(errors.UsageError, match="names no checkpoint id"):
        run.pin("trainer-0", "s3://bucket/somewhere/model.ckpt")
    with pytest.raises(errors.UsageError, match="holder"):
        run.pin("../escape", "0000000001-20260101T000000000000Z-000001")
