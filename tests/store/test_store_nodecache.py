"""The node-local tier (kresume.store.nodecache): a commit kept on the node from its open files, a restore taken from
it when id, sizes and CRC-32C match, a corrupted entry detected and downloaded instead, size-capped eviction.
Real commits and restores through RunStore on a file:// store; the cache on this disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kresume.store.local import snapshot
from kresume.store.nodecache import Entry, NodeCache, plan_eviction, run_key
from kresume.store.runstore import RunStore


def _commit(store: RunStore, folder: Path, name: str, nbytes: int, cache: NodeCache | None):
    path = folder / name
    path.write_bytes(os.urandom(nbytes))
    with snapshot(path, root=folder) as snap:
        m = store.commit(snap)
        res = cache.put(store.url, m, snap.files) if cache else None
    return m, res


@pytest.fixture
def run(tmp_path):
    store = RunStore.open(f"file://{tmp_path / 'store'}/ns/run/")
    work = tmp_path / "ckpt"
    work.mkdir()
    return store, work, NodeCache(tmp_path / "cache", max_bytes=10 * 2**20)


def test_a_committed_checkpoint_is_kept_and_restored_from_the_cache(run, tmp_path):
    store, work, cache = run
    m, res = _commit(store, work, "step-10.pt", 3 * 2**20 + 5, cache)
    assert res is not None and res.method in ("clone", "link", "copy") and res.bytes == m.total_bytes
    entry = cache.entry_dir(store.url, m.id)
    assert (entry / "manifest.json").exists() and (entry / "data" / "step-10.pt").stat().st_size == m.files[0].size
    out: dict = {}
    path = store.restore(tmp_path / "dest", m.id, cache=cache, outcome=out)
    assert out == {"source": "cache", "checkpoint": m.id, "bytes": m.total_bytes}
    assert path.read_bytes() == (work / "step-10.pt").read_bytes()
    other: dict = {}
    store.restore(tmp_path / "dest2", m.id, cache=NodeCache(tmp_path / "other-node", 2**30), outcome=other)
    assert other["source"] == "store"  # another node: nothing cached there


def test_a_cache_entry_corrupted_by_hand_is_detected_by_crc_and_downloaded_instead(run, tmp_path):
    store, work, cache = run
    m, _ = _commit(store, work, "step-20.pt", 2**20, cache)
    data = cache.entry_dir(store.url, m.id) / "data" / "step-20.pt"
    os.unlink(data)  # a hard link shares the trainer's inode: give the entry its own bytes, then flip one
    data.write_bytes((work / "step-20.pt").read_bytes())
    with open(data, "r+b") as f:
        f.seek(1234)
        byte = f.read(1)
        f.seek(1234)
        f.write(bytes([byte[0] ^ 0xFF]))
    out: dict = {}
    path = store.restore(tmp_path / "dest", m.id, cache=cache, outcome=out)
    assert out["source"] == "store"
    assert path.read_bytes() == (work / "step-20.pt").read_bytes()
    assert not cache.entry_dir(store.url, m.id).exists()  # the bad entry is gone


def test_a_deleted_source_is_still_cached_by_copy_and_changed_sources_are_not(run, tmp_path):
    store, work, cache = run
    path = work / "step-30.pt"
    path.write_bytes(os.urandom(2**20))
    with snapshot(path, root=work) as snap:
        m = store.commit(snap)
        os.unlink(path)  # Lightning deletes the previous checkpoint right after the next: link(2) is impossible
        res = cache.put(store.url, m, snap.files)
    assert res is not None and res.method in ("clone", "copy", "rw")
    assert cache.lookup(store.url, m) is not None
    path2 = work / "step-40.pt"
    path2.write_bytes(os.urandom(2**20))
    with snapshot(path2, root=work) as snap:
        m2 = store.commit(snap)
        with open(path2, "r+b") as f:
            f.write(b"rewritten in place")
        assert cache.put(store.url, m2, snap.files) is None
    assert not cache.entry_dir(store.url, m2.id).exists()


def test_the_cap_evicts_oldest_first_and_never_the_newest_of_a_run(run):
    store, work, cache = run
    ids = [_commit(store, work, f"step-{i}.pt", 3 * 2**20, cache)[0].id for i in (1, 2, 3, 4)]
    kept = {e.checkpoint for e in cache.entries()}
    assert kept == set(ids[-3:])  # 4 x 3 MiB > 10 MiB: the oldest went
    big, res = _commit(store, work, "huge.pt", 11 * 2**20, cache)
    assert res is None and big.id not in {e.checkpoint for e in cache.entries()}  # larger than the cap: not cached


def test_plan_eviction_is_oldest_first_per_cap_and_spares_each_runs_newest():
    e = [Entry(Path(f"/c/{r}/{i}"), r, i, 4, t) for r, i, t in
         [("a", "01", 1.0), ("a", "02", 2.0), ("b", "01", 0.5), ("a", "03", 3.0)]]
    assert [(x.run, x.checkpoint) for x in plan_eviction(e, 12)] == [("a", "01")]
    assert [(x.run, x.checkpoint) for x in plan_eviction(e, 8)] == [("a", "01"), ("a", "02")]
    assert plan_eviction(e, 100) == []
    assert {(x.run, x.checkpoint) for x in plan_eviction(e, 0)} == {("a", "01"), ("a", "02")}
    assert run_key("s3://b/p/ns/run/") == run_key("s3://b/p/ns/run")
