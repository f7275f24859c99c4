"""Two sidecar processes of one 2-rank run, each watching its own pod's folder, commit a real DCP checkpoint
written by two gloo processes as ONE checkpoint (issue 14 items 2-3, sidecar side), on real S3 (moto,
SeaweedFS) and GCS (fake-gcs-server):

- rank 1's part lands seconds after rank 0's: nothing is resumable before, one manifest after, restored into
  one folder and read back by ``dcp.load``; neither sidecar calls the step corrupt or waits for a
  ``.metadata`` it can never see;
- a sidecar SIGKILLed between its part and the commit: the other rank's reconcile tick commits, and a
  restarted sidecar (same epoch) as well as a new epoch's sidecar finish what it left;
- both sidecars writing their part, then the manifest, within the same millisecond, round after round:
  one manifest per step, the pointer only forward;
- a unit rewritten in place within one epoch is refused (log line, metric), never committed.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from kresume.store import layout
from sidecar.multirank_support import (HERE, copy_ranks, load_dcp, msg_starts, no_misleading_verdicts, part_record,
                                       pending, rank_run, store_run, write_dcp)

LAUNCHER = (sys.executable, str(HERE / "rank_sidecar.py"))


@pytest.fixture(scope="module")
def dcp_step100(tmp_path_factory) -> Path:
    """``root`` with ``r0/step_100`` (``.metadata`` + ``__0_0.distcp``) and ``r1/step_100`` (``__1_0.distcp``)."""
    root = tmp_path_factory.mktemp("dcp100")
    reports = write_dcp(root, [100])
    assert reports[0]["files"]["100"] == [".metadata", "__0_0.distcp"]
    assert reports[1]["files"]["100"] == ["__1_0.distcp"]  # rank 1 never sees .metadata
    return root


@pytest.mark.parametrize("backend", ["s3-moto", "s3-seaweedfs", "gcs"])
@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_dcp_across_two_pods_commits_once_when_the_last_rank_lands(backend, objstore_pool, tmp_path, dcp_step100,
                                                                   start_sidecar):
    run = store_run(backend, objstore_pool, tmp_path)
    store = run[3]
    epoch = layout.new_epoch_token()
    w0, w1 = copy_ranks(dcp_step100, tmp_path / "pods")
    s0 = start_sidecar(w0, rank_run(run, 0, epoch))
    s0.wait_log(msg_starts("recorded rank 0's part of step_100"), 90)
    assert store.manifest_ids() == [] and store.latest() is None  # never half-committed
    time.sleep(2)  # rank 1's part lands seconds after rank 0's
    s1 = start_sidecar(w1, rank_run(run, 1, epoch))
    s1.wait_log(msg_starts("committed step_100"), 90)
    (m,) = store.list()
    assert (m.name, m.format, m.step) == ("step_100", "dcp", 100)
    assert [f.path for f in m.files] == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert [r["rank"] for r in m.source["ranks"]] == [0, 1] and m.source["world_size"] == 2
    p0, p1 = part_record(store, m.id, 0), part_record(store, m.id, 1)
    assert p0.expects.files.keys() == {".metadata", "__0_0.distcp", "__1_0.distcp"} and p1.expects.files == {}
    gap = datetime.fromisoformat(p1.recorded_at) - datetime.fromisoformat(p0.recorded_at)
    assert gap.total_seconds() >= 2, gap
    assert store.read_pointer().checkpoint == m.id
    s0.wait_log(lambda r: "committed by another rank's sidecar" in str(r.get("msg")), 60)  # rank 0's next tick
    no_misleading_verdicts(s0, s1)
    restored = store.restore(tmp_path / "restore")
    assert sorted(p.name for p in restored.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    load_dcp(restored, 100)
    for sc in (s0, s1):
        rc, out = sc.stop()
        assert rc == 0 and "committed=1 " in out, out
    assert store.manifest_ids() == [m.id]


def test_a_sidecar_killed_between_its_part_and_the_commit(objstore_pool, tmp_path, start_sidecar):
    """Live: the ranks save steps 10 and 20 while the sidecars watch. Rank 1's sidecar settles slower, so its part
    completes step 10 — and it is SIGKILLed right after writing it. Rank 0's reconcile tick commits step 10; a
    restarted rank-1 sidecar (same pod, same epoch) commits step 20 and finds step 10 done."""
    run = store_run("s3-moto", objstore_pool, tmp_path)
    store = run[3]
    epoch = layout.new_epoch_token()
    w0, w1 = tmp_path / "pods" / "r0", tmp_path / "pods" / "r1"
    w0.mkdir(parents=True)
    w1.mkdir(parents=True)
    s0 = start_sidecar(w0, rank_run(run, 0, epoch), "--settle-seconds", "1")
    doomed = start_sidecar(w1, rank_run(run, 1, epoch), "--settle-seconds", "4",
                           launcher=(*LAUNCHER, "--die-at-commit", "--"))
    s0.wait_log(msg_starts("watching"), 60)
    doomed.wait_log(msg_starts("watching"), 60)
    write_dcp(tmp_path / "pods", [10])
    s0.wait_log(msg_starts("recorded rank 0's part of step_10"), 90)
    assert doomed.proc.wait(90) == -9
    (cid,) = pending(store)
    assert layout.ranks_from_part_names(store._ls_names(layout.parts_prefix(cid))) == [0, 1]
    assert store.manifest_ids() == []  # both parts durable, no commit yet: not resumable
    s0.wait_log(lambda r: "committed by this sidecar's reconcile tick" in str(r.get("msg")), 60)
    assert store.manifest_ids() == [cid] and store.read_pointer().checkpoint == cid
    s1 = start_sidecar(w1, rank_run(run, 1, epoch), "--settle-seconds", "1")  # the container restarted
    s1.wait_log(msg_starts("watching"), 60)
    write_dcp(tmp_path / "pods", [20])
    s1.wait_log(msg_starts("committed step_20"), 90)
    s0.wait_log(msg_starts("committed step_20"), 90)
    ids = store.manifest_ids()
    assert len(ids) == 2 and store.latest().step == 20 and store.verify(checksums=True) == []
    no_misleading_verdicts(s0, s1)
    rc, out = s1.stop()
    assert rc == 0 and "committed=2 " in out, out  # step_10 found committed, step_20 committed
    s0.stop()


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_a_new_epoch_finishes_a_step_whose_committers_both_died(objstore_pool, tmp_path, dcp_step100, start_sidecar):
    """Rank 0 records its part and is stopped before its tick; rank 1 records the last part and is SIGKILLed: the
    step is whole and uncommitted. The next epoch's rank-0 sidecar (new token, an empty emptyDir) commits it at
    start, at once: the newest step every rank wrote is resumable again."""
    run = store_run("s3-moto", objstore_pool, tmp_path)
    store = run[3]
    epoch = layout.new_epoch_token()
    w0, w1 = copy_ranks(dcp_step100, tmp_path / "pods")
    s0 = start_sidecar(w0, rank_run(run, 0, epoch))
    s0.wait_log(msg_starts("recorded rank 0's part"), 90)
    rc, _ = s0.stop()
    assert rc == 0
    doomed = start_sidecar(w1, rank_run(run, 1, epoch), launcher=(*LAUNCHER, "--die-at-commit", "--"))
    assert doomed.proc.wait(90) == -9
    assert store.manifest_ids() == [] and len(pending(store)) == 1
    fresh = tmp_path / "next" / "r0"
    fresh.mkdir(parents=True)
    t0 = time.monotonic()
    nxt = start_sidecar(fresh, rank_run(run, 0, layout.new_epoch_token()))
    rec = nxt.wait_log(lambda r: "committed by this sidecar's reconcile tick" in str(r.get("msg")), 60)
    assert nxt.wait_log(msg_starts("rank 0 of 2"), 5)["adopted"] == 1
    assert time.monotonic() - t0 < 30, rec  # at start, not after ticks
    (m,) = store.list()
    assert m.step == 100 and [f.path for f in m.files] == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert store.read_pointer().checkpoint == m.id
    nxt.stop()


RACE_STEPS = list(range(1, 13))
"""Steps both ranks release at the same instant (12 rounds: each round's part writes and manifest writes leave
within microseconds of each other on both sidecars)."""


@pytest.mark.parametrize("backend", ["s3-seaweedfs", "s3-moto"])
def test_two_sidecars_finishing_in_the_same_millisecond(backend, objstore_pool, tmp_path, start_sidecar):
    run = store_run(backend, objstore_pool, tmp_path)
    store = run[3]
    epoch = layout.new_epoch_token()
    pods = tmp_path / "pods"
    write_dcp(pods, RACE_STEPS)
    gate = tmp_path / "barrier"
    gate.mkdir()
    procs = [start_sidecar(pods / f"r{r}", rank_run(run, r, epoch), "--settle-seconds", "0.5",
                           launcher=(*LAUNCHER, "--barrier", str(gate), "--rank", str(r), "--world", "2", "--"))
             for r in (0, 1)]
    end = time.monotonic() + 240
    while len(store.manifest_ids()) < len(RACE_STEPS):
        assert time.monotonic() < end, procs[0].tail() + procs[1].tail()
        time.sleep(0.5)
    ids = store.manifest_ids()
    assert len(ids) == len(set(ids)) == len(RACE_STEPS)
    steps = sorted(m.step for m in store.list())
    assert steps == RACE_STEPS and store.verify(checksums=True) == []
    assert layout.parse_checkpoint_id(store.read_pointer().checkpoint).step == max(RACE_STEPS)  # only forward
    released = {}
    for f in gate.iterdir():
        cid, what, rank = f.name.rsplit(".", 2)
        if f.read_text():
            released.setdefault((cid, what), {})[int(rank)] = int(f.read_text())
    same_ms = [k for k, v in released.items() if len(v) == 2 and abs(v[0] - v[1]) < 1_000_000]
    both_parts = [k for k in same_ms if k[1] == "part"]
    raced = [k for k in same_ms if k[1] == "manifest"]
    print(f"{backend}: {len(both_parts)}/{len(RACE_STEPS)} rounds with both parts written within 1 ms, "
          f"{len(raced)} with both manifest writes within 1 ms")
    assert both_parts and raced, f"no round where both sidecars wrote within 1 ms: {released}"
    for sc in procs:  # a rank that listed one part learns of the commit on its next tick
        end = time.monotonic() + 90
        while sum(str(r.get("msg", "")).startswith("committed step_") for r in sc.logs()) < len(RACE_STEPS):
            assert time.monotonic() < end, sc.tail()
            time.sleep(0.5)
        rc, out = sc.stop()
        assert rc == 0 and f"committed={len(RACE_STEPS)} " in out, out


def test_a_multi_rank_unit_rewritten_in_place_is_refused(objstore_pool, tmp_path, start_sidecar):
    run = store_run("s3-moto", objstore_pool, tmp_path)
    store = run[3]
    epoch = layout.new_epoch_token()
    watch = tmp_path / "r1"
    step = watch / "step_5"
    step.mkdir(parents=True)
    (step / "__1_0.distcp").write_bytes(os.urandom(2048))
    sc = start_sidecar(watch, rank_run(run, 1, epoch), "--settle-seconds", "0.5")
    sc.wait_log(msg_starts("recorded rank 1's part of step_5"), 60)
    (step / "__1_0.distcp").write_bytes(os.urandom(4096))  # re-saved into the same folder, same epoch
    rec = sc.wait_log(msg_starts("refusing step_5"), 60)
    assert rec["level"] == "error" and "rewritten in place" in rec["msg"] and "step in the folder name" in rec["msg"]
    status, body = sc.get("/metrics")
    assert status == 200 and 'kresume_sidecar_failures_total{reason="rewritten"} 1.0' in body
    assert "kresume_sidecar_parts_waiting 1.0" in body
    (cid,) = pending(store)
    assert [f.size for f in part_record(store, cid, 1).files] == [2048]  # the recorded part is untouched
    assert store.manifest_ids() == []
    sc.stop()
