"""The store protocol against every backend: file, memory and real S3, GCS and Azure servers.

One suite, parametrised by the ``store_base`` fixture (fsspec's abstract-suite style): every
backend must keep the same invariants (DESIGN.md "Store protocol" 1-3).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
import os
import uuid
from pathlib import Path

import pytest

from kresume.store import errors, layout, transfer
from kresume.store.local import snapshot
from kresume.store.runstore import RunStore


@pytest.fixture
def run(store_base):
    """A fresh run store on the backend under test."""
    return RunStore.open(store_base.join("ns", f"run-{uuid.uuid4().hex[:8]}"), store_base.options)


def _write(path: Path, size: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(str(seed).encode()).digest() * 4096  # 128 KiB of seed-dependent bytes
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
    return path


def _put(run, path: str, data: bytes) -> None:
    """Write an object behind the protocol's back (creating local parent folders)."""
    transfer.write_small(run.fs, path, data)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_empty_run_has_no_latest(run):
    assert run.latest() is None
    assert run.list() == []


def test_commit_latest_restore_round_trip_of_a_file(run, tmp_path):
    src = _write(tmp_path / "src" / "epoch=3-step=400.ckpt", 300_000, seed=1)
    manifest = run.commit(src)
    assert (manifest.step, manifest.epoch, manifest.kind) == (400, 3, "file")
    found = run.latest()
    assert found.checkpoint_id == manifest.id
    assert found.url.endswith("/epoch=3-step=400.ckpt") and found.url.startswith(run.url)
    assert found.fallback_reason is None
    assert run.verify(checksums=True) == []
    restored = run.restore(tmp_path / "dest")
    assert restored == tmp_path / "dest" / "epoch=3-step=400.ckpt"
    assert _digest(restored) == _digest(src)
    assert not any(p.name.startswith(".kresume") for p in (tmp_path / "dest").iterdir())


def test_folder_of_50_files_with_awkward_names(run, tmp_path):
    folder = tmp_path / "src" / "checkpoint-7"
    names = [f"shard {i} ü=λ/part={i}.bin" if i % 2 else f"__{i}_0.distcp" for i in range(50)]
    for i, n in enumerate(names):
        _write(folder / n, 1000 + i * 37, seed=i)
    manifest = run.commit(folder)
    assert len(manifest.files) == 50 and manifest.step == 7
    assert run.verify(checksums=True) == []
    restored = run.restore(tmp_path / "dest")
    for n in names:
        assert _digest(restored / n) == _digest(folder / n), n


def test_large_file_takes_the_multipart_path(run, tmp_path, store_base):
    src = _write(tmp_path / "big.ckpt", 200 * 10**6, seed=3)
    manifest = run.commit(src)
    assert manifest.total_bytes == 200 * 10**6
    restored = run.restore(tmp_path / "dest")
    assert _digest(restored) == _digest(src)


def test_interrupted_commit_is_never_latest(run, tmp_path):
    good = run.commit(_write(tmp_path / "a" / "epoch=0-step=10.ckpt", 5000, seed=1))
    # A sidecar killed after uploading data but before writing the manifest:
    newer_id = layout.new_checkpoint_id(20)
    _put(run, run._path(layout.data_key(newer_id, "epoch=0-step=20.ckpt", None)), b"x" * 5000)
    found = run.latest()
    assert found.checkpoint_id == good.id
    assert newer_id not in run.manifest_ids()


def test_pointer_to_deleted_checkpoint_falls_back(run, tmp_path):
    older = run.commit(_write(tmp_path / "a" / "epoch=0-step=10.ckpt", 5000, seed=1))
    newer = run.commit(_write(tmp_path / "b" / "epoch=0-step=20.ckpt", 5000, seed=2))
    assert run.read_pointer().checkpoint == newer.id
    run.fs.rm(run._path(layout.data_key(newer.id, newer.name, None)))
    found = run.latest()
    assert found.checkpoint_id == older.id
    assert "incomplete" in found.fallback_reason


def test_truncated_object_is_skipped_and_flagged(run, tmp_path):
    older = run.commit(_write(tmp_path / "a" / "epoch=0-step=10.ckpt", 5000, seed=1))
    newer = run.commit(_write(tmp_path / "b" / "epoch=0-step=20.ckpt", 5000, seed=2))
    _put(run, run._path(layout.data_key(newer.id, newer.name, None)), b"y" * 4000)
    assert run.latest().checkpoint_id == older.id
    assert any("4000 B" in p.message for p in run.verify())


def test_missing_pointer_resolves_newest_manifest(run, tmp_path):
    run.commit(_write(tmp_path / "a" / "epoch=0-step=10.ckpt", 5000, seed=1))
    newer = run.commit(_write(tmp_path / "b" / "epoch=0-step=20.ckpt", 5000, seed=2), move_pointer=False)
    found = run.latest()
    assert found.checkpoint_id == newer.id
    assert "older" in found.fallback_reason
    run.fs.rm(run._path("latest.json"))
    assert run.latest().checkpoint_id == newer.id


def test_corrupted_same_size_object_is_caught_by_checksums(run, tmp_path):
    m = run.commit(_write(tmp_path / "a" / "epoch=0-step=10.ckpt", 5000, seed=1))
    key = run._path(layout.data_key(m.id, m.name, None))
    data = bytearray(run.fs.cat_file(key))
    data[100] ^= 0xFF
    _put(run, key, bytes(data))
    assert run.verify() == []  # sizes alone cannot see it
    problems = run.verify(checksums=True)
    assert len(problems) == 1 and "crc32c" in problems[0].message
    with pytest.raises(errors.CorruptCheckpoint):
        run.restore(tmp_path / "dest")
    assert not (tmp_path / "dest" / m.name).exists()


def test_rewritten_local_name_gets_new_keys_and_old_bytes_stay(run, tmp_path):
    p = _write(tmp_path / "src" / "last.ckpt", 4000, seed=1)
    first = run.commit(p)
    first_bytes = run.fs.cat_file(run._path(layout.data_key(first.id, "last.ckpt", None)))
    _write(p, 4000, seed=2)
    second = run.commit(p)
    assert second.id != first.id
    assert run.fs.cat_file(run._path(layout.data_key(first.id, "last.ckpt", None))) == first_bytes
    assert run.verify(checksums=True) == []


def test_pointer_never_moves_backwards(run, tmp_path):
    newer = run.commit(_write(tmp_path / "b" / "epoch=0-step=20.ckpt", 5000, seed=2))
    run.commit(_write(tmp_path / "a" / "epoch=0-step=10.ckpt", 5000, seed=1))
    assert run.read_pointer().checkpoint == newer.id


def test_source_changed_during_upload_commits_nothing(run, tmp_path):
    p = _write(tmp_path / "src" / "epoch=0-step=5.ckpt", 3 * 2**20, seed=1)
    calls = []

    def rewrite_once(n):
        if not calls:
            with open(p, "ab") as f:  # the trainer appends / rewrites while we upload
                f.write(b"more")
        calls.append(n)

    with snapshot(p) as cap, pytest.raises(errors.SourceChanged):
        run.commit(cap, progress=rewrite_once)
    assert run.latest() is None and run.manifest_ids() == []


def test_deleted_after_capture_still_commits_whole(run, tmp_path):
    p = _write(tmp_path / "src" / "epoch=0-step=5.ckpt", 2 * 2**20, seed=4)
    digest = _digest(p)
    with snapshot(p) as cap:
        os.unlink(p)  # Lightning deletes the previous checkpoint milliseconds after the next save
        m = run.commit(cap)
    restored = run.restore(tmp_path / "dest", m.id)
    assert _digest(restored) == digest


def test_prune_deletes_manifest_then_data_and_keeps_pointer_target(run, tmp_path):
    ids = [run.commit(_write(tmp_path / f"s{i}" / f"epoch=0-step={i * 10}.ckpt", 1000, seed=i)).id for i in range(1, 6)]
    run.write_pointer(run.read_manifest(ids[0]))  # an operator-pinned older target
    plan = run.prune(keep_last=2, keep_every=30)
    assert set(plan.keep) == {ids[4], ids[3], ids[0], ids[2]}
    assert set(plan.delete) == {ids[1]}
    assert set(run.manifest_ids()) == set(plan.keep)
    assert run._object_sizes(ids[1]) == {}
    assert run.verify() == []


def test_prune_dry_run_deletes_nothing_and_young_orphans_stay(run, tmp_path):
    """Orphans are judged by the store's clock (tests/store/test_store_orphans.py): one written just now
    stays, whatever time its id carries."""
    ids = [run.commit(_write(tmp_path / f"s{i}" / f"epoch=0-step={i}.ckpt", 1000, seed=i)).id for i in range(1, 4)]
    orphan = layout.new_checkpoint_id(99, datetime(2020, 1, 1, tzinfo=UTC))
    _put(run, run._path(layout.data_key(orphan, "x.ckpt", None)), b"z" * 10)
    plan = run.prune(keep_last=1, dry_run=True, orphans_older_than=3600)
    assert plan.delete == [ids[0]] and set(run.manifest_ids()) == set(ids)
    run.prune(keep_last=1, orphans_older_than=3600)
    assert run._object_sizes(orphan) != {}
    assert run.manifest_ids() == [ids[2], ids[1]]  # ids[1]: the fallback older than latest


def test_bad_checkpoint_is_skipped(run, tmp_path):
    older = run.commit(_write(tmp_path / "a" / "epoch=0-step=10.ckpt", 1000, seed=1))
    newer = run.commit(_write(tmp_path / "b" / "epoch=0-step=20.ckpt", 1000, seed=2))
    run.mark_bad(newer.id, "fails to load")
    assert run.latest().checkpoint_id == older.id


def test_malformed_manifest_is_not_resolved(run, tmp_path):
    older = run.commit(_write(tmp_path / "a" / "epoch=0-step=10.ckpt", 1000, seed=1))
    newer = run.commit(_write(tmp_path / "b" / "epoch=0-step=20.ckpt", 1000, seed=2))
    _put(run, run._path(layout.manifest_key(newer.id)), b'{"version": 1, "id": "tru')
    assert run.latest().checkpoint_id == older.id


def test_stale_pointer_is_repaired(run, tmp_path):
    """A committer killed between manifest and pointer: the next start moves the pointer forward."""
    older = run.commit(_write(tmp_path / "a" / "epoch=0-step=10.ckpt", 1000, seed=1))
    newer = run.commit(_write(tmp_path / "b" / "epoch=0-step=20.ckpt", 1000, seed=2), move_pointer=False)
    assert run.read_pointer().checkpoint == older.id
    assert run.repair_pointer() == newer.id
    assert run.read_pointer().checkpoint == newer.id
    assert run.repair_pointer() is None


def test_restored_copy_keeps_the_original_mtime(run, tmp_path):
    """The restore init step writes into the watched folder; the copy must look already committed."""
    src = _write(tmp_path / "src" / "epoch=0-step=10.ckpt", 1000, seed=1)
    os.utime(src, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    run.commit(src)
    restored = run.restore(tmp_path / "dest")
    assert restored.stat().st_mtime_ns == 1_700_000_000_123_456_789


def test_truncated_torch_zip_is_refused_and_nothing_commits(run, tmp_path):
    import torch

    good = tmp_path / "src" / "epoch=0-step=5.ckpt"
    good.parent.mkdir(parents=True)
    torch.save({"global_step": 5, "w": torch.ones(1000)}, good)
    cut = tmp_path / "src" / "epoch=0-step=6.ckpt"
    cut.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(errors.SourceIncomplete, match="end-of-central-directory"):
        run.commit(cut)
    assert run.manifest_ids() == []


def test_restore_into_a_file_fails_with_one_line(run, tmp_path):
    run.commit(_write(tmp_path / "src" / "epoch=0-step=5.ckpt", 100, seed=1))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(errors.DestinationError, match="afile"):
        run.restore(tmp_path / "afile")
