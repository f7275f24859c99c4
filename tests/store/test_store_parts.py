"""Multi-rank checkpoints committed from parts, on every backend the suite runs (docs/store-protocol.md
"Part record", "Commit of a multi-rank checkpoint"; DESIGN.md invariant 4).

Synthetic ranks here (each rank's own folder holding ``rank_R.data`` plus an identical
``config.json``); a real DCP save by two gloo processes is in ``test_store_parts_dcp.py``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from kresume.store import errors, layout, parts, transfer
from kresume.store.runstore import RunStore


@pytest.fixture
def run(store_base):
    return RunStore.open(store_base.join("ns", f"mr-{uuid.uuid4().hex[:8]}"), store_base.options)


def _rank_folder(tmp_path: Path, rank: int, name: str = "step_100", payload: bytes | None = None) -> Path:
    folder = tmp_path / f"rank{rank}" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank_{rank}.data").write_bytes(payload if payload is not None else f"shard of rank {rank}".encode() * 50)
    (folder / "config.json").write_text(json.dumps({"layers": 2}))
    return folder


@pytest.mark.parametrize("world", [2, 8])
def test_step_commits_once_every_rank_recorded_its_part(run, tmp_path, world):
    epoch = layout.new_epoch_token()
    folders = [_rank_folder(tmp_path, r) for r in range(world)]
    cid = None
    for r in range(world - 1):
        out = run.commit_part(folders[r], rank=r, world_size=world, epoch=epoch, expect=parts.Expects(ranks=world))
        assert not out.committed and out.waiting.missing_ranks == tuple(range(r + 1, world))
        cid = out.checkpoint_id
    assert run.latest() is None and run.manifest_ids() == []  # never committed with a rank missing
    [pending] = run.pending()
    assert (pending.checkpoint_id, pending.ranks, pending.missing_ranks) == (cid, tuple(range(world - 1)), (world - 1,))
    last = run.commit_part(folders[-1], rank=world - 1, world_size=world, epoch=epoch,
                           expect=parts.Expects(ranks=world))
    assert last.committed and last.created and last.checkpoint_id == cid
    m = last.manifest
    assert (m.step, m.name, m.kind) == (100, "step_100", "dir")
    assert [f.path for f in m.files] == ["config.json"] + sorted(f"rank_{r}.data" for r in range(world))
    assert [r["rank"] for r in m.source["ranks"]] == list(range(world)) and m.source["world_size"] == world
    assert run.manifest_ids() == [cid] and run.pending() == []
    assert run.latest().checkpoint_id == cid and run.read_pointer().checkpoint == cid
    assert not run.verify(cid)
    # The earlier ranks' next tick finds it committed (and writes nothing).
    again = run.try_commit(cid, world_size=world)
    assert again.committed and not again.created and again.manifest == m
    # Restore: the whole folder by default, or one rank's files plus the files no rank rule claims.
    whole = run.restore(tmp_path / "restored-all")
    assert sorted(p.name for p in whole.iterdir()) == sorted(["config.json"] + [f"rank_{r}.data" for r in range(world)])
    one = run.restore(tmp_path / "restored-1", rank=1)
    assert sorted(p.name for p in one.iterdir()) == ["config.json", "rank_1.data"]
    assert (one / "rank_1.data").read_bytes() == (folders[1] / "rank_1.data").read_bytes()


def test_a_conflicting_union_is_never_committed(run, tmp_path):
    epoch = layout.new_epoch_token()
    a = _rank_folder(tmp_path, 0)
    b = _rank_folder(tmp_path, 1)
    (b / "config.json").write_text(json.dumps({"layers": 3}))  # the same path, other bytes
    run.commit_part(a, rank=0, world_size=2, epoch=epoch, expect=parts.Expects(ranks=2))
    with pytest.raises(errors.CommitConflict, match="config.json.*differs between ranks 0 and 1"):
        run.commit_part(b, rank=1, world_size=2, epoch=epoch, expect=parts.Expects(ranks=2))
    assert run.manifest_ids() == [] and run.latest() is None
    [pending] = run.pending()
    assert pending.conflict and "differs" in pending.reason


def test_parts_that_expect_nothing_never_commit(run, tmp_path):
    epoch = layout.new_epoch_token()
    for r in range(2):
        out = run.commit_part(_rank_folder(tmp_path, r), rank=r, world_size=None, epoch=epoch)
        assert not out.committed
    assert "no part says what the whole checkpoint holds" in out.waiting.reason
    assert run.manifest_ids() == []


def test_a_unit_rewritten_in_place_within_one_epoch_is_refused(run, tmp_path):
    epoch = layout.new_epoch_token()
    folders = [_rank_folder(tmp_path, r) for r in range(2)]
    for r in range(2):
        out = run.commit_part(folders[r], rank=r, world_size=2, epoch=epoch, expect=parts.Expects(ranks=2))
    assert out.committed
    committed = {p: run.fs.cat_file(run._path(layout.data_key(out.checkpoint_id, "step_100", p)))
                 for p in ("rank_0.data", "rank_1.data")}
    (folders[0] / "rank_0.data").write_bytes(b"re-saved, other size")
    with pytest.raises(errors.CommitConflict, match="rewritten in place"):
        run.commit_part(folders[0], rank=0, world_size=2, epoch=epoch, expect=parts.Expects(ranks=2))
    for p, data in committed.items():  # committed bytes untouched (invariant 3)
        assert run.fs.cat_file(run._path(layout.data_key(out.checkpoint_id, "step_100", p))) == data
    # The same step in a new epoch (after a restart) is a new checkpoint.
    fresh = run.commit_part(folders[0], rank=0, world_size=2, epoch=layout.new_epoch_token(),
                            expect=parts.Expects(ranks=2))
    assert fresh.checkpoint_id != out.checkpoint_id and not fresh.committed


def test_a_restarted_rank_re_offering_its_recorded_part_uploads_nothing(run, store_base, tmp_path):
    epoch = layout.new_epoch_token()
    folder = _rank_folder(tmp_path, 0)
    first = run.commit_part(folder, rank=0, world_size=2, epoch=epoch, expect=parts.Expects(ranks=2))
    # A marker behind the protocol's back: a re-upload would replace it with the local bytes.
    key = run._path(layout.data_key(first.checkpoint_id, "step_100", "rank_0.data"))
    marker = b"X" * run.fs.size(key)
    transfer.write_small(run.fs, key, marker)
    again = RunStore.open(run.url, store_base.options)  # a restarted sidecar: nothing cached
    second = again.commit_part(folder, rank=0, world_size=2, epoch=epoch, expect=parts.Expects(ranks=2))
    assert second.checkpoint_id == first.checkpoint_id and not second.committed
    assert second.waiting.missing_ranks == (1,)
    run.fs.invalidate_cache()
    assert run.fs.cat_file(key) == marker


def test_pure_plan_reports_missing_files_and_builds_identical_manifests():
    cid = layout.multi_rank_checkpoint_id("step_7", 7, "20260101T000000000000Z-00000a")

    def rec(rank, files, expect=parts.Expects(), recorded="2026-01-01T00:00:0%d+00:00"):
        return parts.PartRecord(checkpoint=cid, rank=rank, world_size=None, epoch="20260101T000000000000Z-00000a",
                                name="step_7", kind="dir", format="dcp", step=7,
                                files=tuple(parts.FileEntry(p, s, "0000000%d" % rank) for p, s in files),
                                expects=expect, source={"pod": f"p{rank}", "mtime_ns": rank},
                                recorded_at=recorded % rank)

    meta = parts.Expects({".metadata": 10, "__0_0.distcp": 100, "__1_0.distcp": 100})
    r0 = rec(0, [(".metadata", 10), ("__0_0.distcp", 100)], meta)
    plan = parts.plan_commit(cid, {0: r0})
    assert isinstance(plan, parts.Waiting) and list(plan.missing_files) == ["__1_0.distcp"]
    short = rec(1, [("__1_0.distcp", 99)])
    assert "99 B, ≥ 100 B" in parts.plan_commit(cid, {0: r0, 1: short}).missing_files["__1_0.distcp"]
    r1 = rec(1, [("__1_0.distcp", 100)])
    a, b = parts.plan_commit(cid, {0: r0, 1: r1}), parts.plan_commit(cid, {1: r1, 0: r0})
    assert isinstance(a, parts.Ready) and a.manifest.to_json() == b.manifest.to_json()
    assert a.manifest.committed_at == r1.recorded_at and a.manifest.source["mtime_ns"] == 1
    assert parts.rank_of_file(".metadata") is None and parts.rank_of_file("__1_0.distcp") == 1
    assert parts.rank_of_file("global_step5/zero_pp_rank_3_mp_rank_00_optim_states.pt") == 3
    assert parts.rank_of_file("global_step5/mp_rank_00_model_states.pt") is None
    assert parts.tick_delay(0) == 10 and parts.tick_delay(1) == 20 and parts.tick_delay(9) == 60


def test_multi_rank_ids_order_and_parse():
    epoch = "20260101T000000000000Z-00000a"
    a = layout.multi_rank_checkpoint_id("step_100", 100, epoch)
    b = layout.multi_rank_checkpoint_id("step_200", 200, epoch)
    assert layout.parse_checkpoint_id(a).multi_rank and layout.sort_newest_first([a, b]) == [b, a]
    assert a.endswith("-" + layout.name_tag("step_100")) and a.startswith("0000000100-20260101T000000000000Z-00000a-")
    with pytest.raises(ValueError, match="KRESUME_EPOCH"):
        layout.multi_rank_checkpoint_id("step_1", 1, "yesterday")
    assert layout.ranks_from_part_names(["p/0.json", "p/12.json", "p/01.json", "p/x.json"]) == [0, 12]
