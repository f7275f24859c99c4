"""Retention with bad-marked checkpoints: only valid checkpoints count toward keep-last/keep-every,
and a prune never leaves a run without the checkpoint `latest` resolves to (a first-time user's
`prune --keep-last 1` after `mark-bad` of the newest checkpoint deleted every valid one)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kresume.store import layout, retention
from kresume.store.runstore import RunStore


def _id(step: int, sec: int = 1) -> str:
    return layout.new_checkpoint_id(step, datetime(2026, 1, 1, 0, 0, sec, tzinfo=UTC), "aaaaaa")


def test_bad_newest_does_not_count_toward_keep_last():
    by_step = {s: _id(s) for s in (200, 400, 450, 500)}
    plan = retention.plan_prune({i: s for s, i in by_step.items()}, keep_last=1, pointer_id=by_step[500],
                                bad=[by_step[500]], latest_id=by_step[450])
    assert plan.keep == [by_step[500], by_step[450], by_step[400]]
    assert plan.delete == [by_step[200]]
    assert plan.reasons[by_step[500]] == "marked bad, the pointer's target"
    assert plan.reasons[by_step[450]] == "one of the 1 newest valid"
    assert plan.reasons[by_step[400]].startswith("the fallback: newest valid checkpoint older than latest")


def test_bad_checkpoints_are_never_deleted_and_do_not_count_for_keep_every():
    by_step = {s: _id(s) for s in (100, 200, 300, 400, 500, 600)}
    steps = {i: s for s, i in by_step.items()}
    plan = retention.plan_prune(steps, keep_last=2, keep_every=200, bad=[by_step[600], by_step[200], by_step[100]])
    assert set(plan.keep) == {by_step[600], by_step[500], by_step[400], by_step[200], by_step[100]}
    assert plan.delete == [by_step[300]]
    assert all(plan.reasons[by_step[s]] == retention.MARKED_BAD for s in (600, 200, 100))
    assert plan.reasons[by_step[400]] == "one of the 2 newest valid"


def test_latest_is_kept_even_when_newer_valid_ids_fill_keep_last():
    # The newest unmarked id can be unresolvable (objects lost): `latest` then answers an older one.
    by_step = {s: _id(s) for s in (100, 200, 300, 400)}
    plan = retention.plan_prune({i: s for s, i in by_step.items()}, keep_last=1, latest_id=by_step[300])
    assert plan.keep == [by_step[400], by_step[300], by_step[200]] and plan.delete == [by_step[100]]
    assert "latest" in plan.reasons[by_step[300]] and "fallback" in plan.reasons[by_step[200]]


def test_all_bad_keeps_everything():
    ids = {_id(s): s for s in (1, 2, 3)}
    plan = retention.plan_prune(ids, keep_last=1, bad=list(ids))
    assert plan.delete == [] and len(plan.keep) == 3


@pytest.fixture
def run(store_base):
    return RunStore.open(store_base.join("ns", f"run-{uuid.uuid4().hex[:8]}"), store_base.options)


def _ckpt(tmp_path: Path, step: int) -> Path:
    path = tmp_path / f"s{step}" / f"epoch=0-step={step}.ckpt"
    path.parent.mkdir(parents=True)
    path.write_bytes(step.to_bytes(4, "big") * 500)
    return path


def test_mark_bad_moves_the_pointer_and_prune_keeps_the_newest_valid(run, tmp_path):
    ids = {s: run.commit(_ckpt(tmp_path, s)).id for s in (200, 400, 450, 500)}
    assert run.mark_bad(ids[500], "fails to load") == ids[450]
    assert run.read_pointer().checkpoint == ids[450]  # moved off the bad checkpoint
    plan = run.prune(keep_last=1)
    assert plan.keep == [ids[500], ids[450], ids[400]] and plan.delete == [ids[200]]  # 400: the fallback
    assert run.manifest_ids() == [ids[500], ids[450], ids[400]]
    assert run.latest().checkpoint_id == ids[450]
    assert run.verify() == []


def test_prune_keeps_what_latest_resolves_to_when_the_newest_lost_objects(run, tmp_path):
    ids = {s: run.commit(_ckpt(tmp_path, s)).id for s in (50, 100, 200, 300)}
    m300 = run.read_manifest(ids[300])
    run.fs.rm(run._path(layout.data_key(m300.id, m300.name, None)))
    assert run.latest().checkpoint_id == ids[200]
    plan = run.prune(keep_last=1)
    assert plan.delete == [ids[50]] and "fallback" in plan.reasons[ids[100]]
    assert run.latest().checkpoint_id == ids[200]
