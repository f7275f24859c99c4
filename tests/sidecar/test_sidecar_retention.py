"""The sidecar's retention (``--keep-last``) with bad-marked checkpoints, as a real process on moto S3.

A run rolled back after its two newest checkpoints were marked bad trains on from an older step;
its new commits sort below the bad ones. Retention must count only valid checkpoints, so the new
commits survive (before the fix, each new commit was deleted right after it landed).
"""

from __future__ import annotations

import time

import torch


def _save(path, step):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "w": torch.full((200,), float(step))}, path)
    return path


def test_keep_last_two_with_two_bad_newest_keeps_two_valid(tmp_path, moto_run, start_sidecar):
    store = moto_run[3]
    old = {s: store.commit(_save(tmp_path / "old" / f"epoch=0-step={s}.ckpt", s)).id for s in (100, 200, 300, 400)}
    store.mark_bad(old[300], "loss diverged")
    store.mark_bad(old[400], "loss diverged")
    watch = tmp_path / "watch"
    watch.mkdir()
    sc = start_sidecar(watch, moto_run, "--keep-last", "2")
    new = {}
    for step in (250, 260, 270):  # the run resumed from step 200 and trains on
        name = f"epoch=0-step={step}.ckpt"
        _save(watch / name, step)
        new[step] = sc.wait_log(lambda r, n=name: r.get("unit") == n and "id" in r, 60)["id"]
    expected = {old[400], old[300], new[270], new[260]}
    end = time.monotonic() + 30
    while set(store.manifest_ids()) != expected and time.monotonic() < end:
        time.sleep(0.25)
    assert set(store.manifest_ids()) == expected, sc.tail()
    assert store.bad_ids() == {old[300], old[400]}
    assert store.latest().checkpoint_id == new[270]
    assert store.verify(checksums=True) == []
    assert sc.stop()[0] == 0
