"""One store round trip per lookup once a checkpoint is known (issue 17 item 3), counted at a real
S3 server (moto behind a counting proxy): manifests are immutable, so a handle validates each
checkpoint once; the pointer and both listings are read fresh, together, every time."""

from __future__ import annotations

import uuid

import torch

from kresume.store.runstore import RunStore


def _ckpt(path, step: int) -> None:
    torch.save({"w": torch.zeros(256), "global_step": step}, path)


def _requests(proxy) -> int:
    return sum(proxy.stats.requests.values())


def test_a_known_checkpoint_costs_only_the_pointer_and_the_listings(moto_s3, fault_proxy, tmp_path):
    proxy = fault_proxy(moto_s3.endpoint)
    opts = proxy.storage_options(moto_s3.storage_options)
    url = moto_s3.url("kresume-test", f"known-{uuid.uuid4().hex[:8]}/ns/run/")
    writer = RunStore.open(url, opts)
    for step in (10, 20):
        _ckpt(tmp_path / f"step={step}.ckpt", step)
        newest = writer.commit(tmp_path / f"step={step}.ckpt")
    reader = RunStore.open(url, opts)
    n0 = _requests(proxy)
    assert reader.latest().checkpoint_id == newest.id
    n1 = _requests(proxy)
    assert n1 - n0 == 5  # pointer, manifests/, bad/ — then the newest manifest and its objects' listing
    assert reader.latest().checkpoint_id == newest.id
    n2 = _requests(proxy)
    assert n2 - n1 == 3  # only pointer, manifests/ and bad/: the manifest is known
    writer.mark_bad(newest.id, "test")  # another handle (process): seen at once through bad/
    older = reader.latest()
    assert older is not None and older.checkpoint_id != newest.id and older.step == 10


def test_a_pruned_checkpoint_is_never_taken_from_memory(moto_s3, tmp_path):
    url = moto_s3.url("kresume-test", f"known-{uuid.uuid4().hex[:8]}/ns/run/")
    writer = RunStore.open(url, moto_s3.storage_options)
    _ckpt(tmp_path / "a.ckpt", 1)
    first = writer.commit(tmp_path / "a.ckpt")
    reader = RunStore.open(url, moto_s3.storage_options)
    assert reader.latest().checkpoint_id == first.id and reader.known.get(first.id) is not None
    writer._rm(f"manifests/{first.id}.json")  # what retention deletes first, by another process
    assert reader.latest() is None  # the id is gone from the fresh listing
