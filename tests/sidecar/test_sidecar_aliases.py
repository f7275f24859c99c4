"""Issue 17 item 2 target, against a real sidecar process, a real Lightning trainer and moto S3: with
``ModelCheckpoint(save_last=True)`` every checkpoint's bytes are uploaded and stored once; ``last.ckpt``
(or the step file, whichever commits second) is an alias (docs/store-protocol.md "Aliases")."""

from __future__ import annotations

import re
import time

import torch

from kresume import contract


def _stored_bytes(store) -> int:
    """Sum of the sizes of every object under the run's ``checkpoints/`` (what the store holds)."""
    root = store._path(contract.CHECKPOINTS_DIR)
    store.fs.invalidate_cache(root)
    return sum(int(m["size"]) for m in store.fs.find(root, detail=True).values() if m.get("type") != "directory")


def test_save_last_uploads_each_checkpoints_bytes_once(tmp_path, moto_run, start_sidecar, run_writer, wait_committed):
    watch = tmp_path / "ckpt"
    watch.mkdir()
    store = moto_run[3]
    sc = start_sidecar(watch, moto_run)
    sc.wait_log(lambda r: r.get("msg", "").startswith("watching"))
    saves = 5
    report = run_writer("lightning-last", str(watch), str(saves))
    steps = {n for n in report["saved"] if n != "last.ckpt"}
    assert len(steps) == saves and report["saved"].count("last.ckpt") == saves, report
    by = wait_committed(store, steps | {"last.ckpt"}, timeout=90)
    # the last save's last.ckpt may still be committing: wait for every save's pair (or its alias) to land
    deadline = time.monotonic() + 60
    while True:
        manifests = store.list()
        newest_step = max(m.step for m in manifests if m.step is not None)
        if any(m.name == "last.ckpt" and m.step == newest_step for m in manifests) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    rc, out = sc.stop()
    assert rc == 0, sc.tail()
    manifests = store.list()
    files = [f for m in manifests for f in m.files]
    distinct = {(f.size, f.crc32c) for f in files}
    stored = _stored_bytes(store)
    logical = sum(m.total_bytes for m in manifests)
    aliased = [m for m in manifests if m.aliases]
    # each distinct content is stored exactly once; only save 1's pair differs (last_model_path)
    assert stored == sum(size for size, _ in distinct), (stored, distinct)
    assert len(aliased) >= saves - 1, [(m.name, m.step, m.aliases) for m in manifests]
    assert stored <= logical - (saves - 1) * min(f.size for f in files)
    uploaded = int(re.search(r"bytes=(\d+)", out).group(1))
    assert uploaded == stored, (uploaded, stored, out)  # the sidecar sent each byte once (no retries here)
    assert store.verify(checksums=True) == []
    # an alias restores byte-identical to its target, and loads
    alias = aliased[-1]
    (entry,) = alias.files
    target = next(m for m in manifests if m.object_key(m.files[0]) == entry.alias)
    a = store.restore(tmp_path / "a", alias.id).read_bytes()
    b = store.restore(tmp_path / "b", target.id).read_bytes()
    assert a == b and len(a) == entry.size
    assert torch.load(tmp_path / "a" / alias.name, weights_only=False)["global_step"] == alias.step
    assert by  # every name was committed


def test_an_upload_that_may_alias_waits_for_a_running_one_of_its_size():
    """Pure scheduling rule: Lightning's pair appears milliseconds apart; the second waits for the first to commit
    (then it is an alias), while uploads of other sizes, and parts (which never alias), start at once."""
    from kresume.sidecar.scheduling import Candidate, pick_next

    size = 3 << 20
    pending = [Candidate("last", 30, size, alias=True), Candidate("other", 20, size + 1, alias=True),
               Candidate("part", 10, size, alias=False)]
    kw = dict(inflight_count=1, inflight_bytes=size, concurrency=3, max_inflight_bytes=10 * size, now=0.0)
    assert pick_next(pending, inflight_alias_sizes={size}, **kw).key == "other"
    assert pick_next([pending[0], pending[2]], inflight_alias_sizes={size}, **kw).key == "part"
    assert pick_next(pending, inflight_alias_sizes=set(), **kw).key == "last"
