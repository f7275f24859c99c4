"""The clock-free orphan rule on every backend the suite runs (issue 11 item 5; docs/store-protocol.md
"Store clock"): an orphan's age is the store's now minus the newest LastModified of its objects and
parts, never the time embedded in its id against the local clock."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from kresume.store import clock, layout, transfer
from kresume.store.runstore import RunStore


@pytest.fixture
def run(store_base):
    return RunStore.open(store_base.join("ns", f"orph-{uuid.uuid4().hex[:8]}"), store_base.options)


def _orphan(run: RunStore, started: datetime, *, part: bool = False) -> str:
    """Data (and optionally a part record) of a commit that never finished, its id stamped ``started``."""
    cid = layout.new_checkpoint_id(7, started)
    transfer.write_small(run.fs, run._path(layout.data_key(cid, "model.data", None)), b"half an upload")
    if part:
        transfer.write_small(run.fs, run._path(layout.part_key(cid, 1)), b"{}")
    return cid


def _committed(run: RunStore, tmp_path) -> str:
    path = tmp_path / "model-step5.data"
    path.write_bytes(b"weights" * 10)
    return run.commit(path).id


def test_an_orphan_with_an_old_id_but_fresh_objects_is_kept(run, tmp_path):
    """A skewed uploader (or an upload that started an hour ago): its id says an hour ago, its
    objects were just written, so it is still being written and must survive."""
    keep = _committed(run, tmp_path)
    cid = _orphan(run, datetime.now(UTC) - timedelta(hours=1), part=True)
    plan = run.prune(keep_last=1, orphans_older_than=60)
    assert cid not in plan.delete and run._object_sizes(cid) != {}
    assert run.manifest_ids() == [keep]


def test_an_id_time_in_the_future_does_not_protect_an_old_orphan(run, tmp_path):
    _committed(run, tmp_path)
    cid = _orphan(run, datetime.now(UTC) + timedelta(days=1), part=True)
    older_than = 2.0
    newest = max(clock.modified_at(i) for i in run.fs.find(run._path(layout.data_prefix(cid)), detail=True).values())
    deadline = time.monotonic() + 60
    while (run.store_now() - newest).total_seconds() <= older_than:  # wait by the store's clock
        assert time.monotonic() < deadline, "the store's clock did not advance past the threshold"
        time.sleep(0.5)
    plan = run.prune(keep_last=1, dry_run=True, orphans_older_than=older_than)
    assert plan.delete == [cid] and plan.reasons[cid] == "orphan" and run._object_sizes(cid) != {}
    run.prune(keep_last=1, orphans_older_than=older_than)
    assert run._object_sizes(cid) == {}
    # Its part went too (SeaweedFS may keep an empty "folder" entry).
    assert layout.ranks_from_part_names(run._ls_names(layout.parts_prefix(cid))) == []
