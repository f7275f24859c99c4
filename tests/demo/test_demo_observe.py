"""The demo's store poller on a real S3 server (SeaweedFS): what it records of a commit outlives the commit."""

from __future__ import annotations

import os
from pathlib import Path

from kresume.devtools.demo.observe import StorePoller
from kresume.store.local import snapshot
from kresume.store.prune import prune
from kresume.store.runstore import RunStore


def test_a_checkpoints_size_is_kept_from_its_first_listing_after_retention_deleted_it(seaweedfs_s3, tmp_path: Path):
    # The demo's time line sizes the checkpoint each restart resumed from at the demo's end; with the demo's
    # retention (keepLast 5) the early ones are gone by then (seen: a 21-preemption campaign lost every size).
    url = seaweedfs_s3.url("kresume-test", f"observe-{os.getpid()}-{tmp_path.name}") + "/ns/run/"
    store = RunStore.open(url, seaweedfs_s3.storage_options)
    ids = []
    for step, size in ((10, 1000), (20, 2000), (30, 3000)):
        f = tmp_path / f"epoch=0-step={step}.ckpt"
        f.write_bytes(os.urandom(size))
        with snapshot(f, root=tmp_path) as snap:
            ids.append(store.commit(snap).id)
    poller = StorePoller(url, seaweedfs_s3.storage_options)
    poller.poll_once()
    prune(store, keep_last=1)
    poller.poll_once()
    assert poller.store.read_manifest(ids[0]) is None, "retention should have deleted the oldest"
    assert [poller.seen[i].total_bytes for i in ids] == [1000, 2000, 3000]


def test_the_last_step_counts_the_final_save_after_the_last_progress_line(tmp_path: Path):
    """A save at SIGTERM can come after the trainer's last progress line (Lightning at step 62 after progress 61):
    the resume from it is 0 lost steps, not "resumed 1 step after the last step reported" (new-user trial)."""
    from kresume.devtools.demo.observe import TrainerLog

    log = tmp_path / "trainer.log"
    log.write_text('{"event": "progress", "global_step": 61}\nnot json\n'
                   '{"event": "preempted", "step": 62, "checkpoint": "preempted-step=62.ckpt", "state": "saved"}\n')
    reader = TrainerLog(log)
    reader.read()
    assert reader.last_step() == 62
    log.write_text('{"event": "progress", "global_step": 70}\n{"event": "preempted", "step": null}\n')
    fresh = TrainerLog(log)
    fresh.read()
    assert fresh.last_step() == 70  # a final save without a step does not count
