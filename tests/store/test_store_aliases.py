"""Aliases (issue 17 item 2; docs/store-protocol.md "Aliases") on every backend the suite runs: a file whose
size and CRC-32C equal an object already committed in the run is recorded as an alias of it, not uploaded
again; restore, verify, resolution and retention follow the alias to the target's bytes."""

from __future__ import annotations

import json
import os
import shutil
import uuid

import pytest

from kresume import contract
from kresume.store import aliases, errors, layout
from kresume.store.manifest import FileEntry, Manifest, ManifestInvalid
from kresume.store.parts import Expects
from kresume.store.runstore import RunStore

MIB = 2**20

two_backends = pytest.mark.parametrize("store_base", ["file", "s3-seaweedfs"], indirect=True)
"""For rules the store's backend does not change (the round trip, restore and prune run on every backend)."""


@pytest.fixture
def run(store_base):
    return RunStore.open(store_base.join("ns", f"alias-{uuid.uuid4().hex[:8]}"), store_base.options)


def _stored(run: RunStore) -> dict[str, int]:
    """Data key → size of every object under the run's ``checkpoints/`` (what the store holds)."""
    root = run._path(contract.CHECKPOINTS_DIR)
    run.fs.invalidate_cache(root)
    try:
        found = run.fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    strip = len(run.fs._strip_protocol(run.root).rstrip("/")) + 1
    return {run.fs._strip_protocol(p)[strip:]: int(m["size"]) for p, m in found.items()
            if m.get("type", "file") != "directory"}


def _file(path, size: int, seed: int) -> bytes:
    data = (seed.to_bytes(4, "big") + os.urandom(60)) * (size // 64) + b"x" * (size % 64)
    path.write_bytes(data)
    return data


def test_a_copy_is_committed_as_an_alias_and_restores_byte_identical(run, tmp_path):
    step = tmp_path / "epoch=0-step=10.ckpt"
    data = _file(step, 2 * MIB + 17, 1)
    first = run.commit(step)
    last = tmp_path / "last-step=10.ckpt"
    shutil.copyfile(step, last)
    second = run.commit(last)
    (entry,) = second.files
    assert entry.alias == layout.data_key(first.id, first.name, None)
    assert (entry.size, entry.crc32c) == (first.files[0].size, first.files[0].crc32c)
    assert json.loads(run._read(layout.manifest_key(second.id)))["version"] == contract.MANIFEST_VERSION_ALIASES
    assert json.loads(run._read(layout.manifest_key(first.id)))["version"] == contract.MANIFEST_VERSION
    assert sum(_stored(run).values()) == len(data)  # the bytes are stored once
    assert second.stored_bytes == 0 and second.total_bytes == len(data)
    found = run.latest()
    assert found is not None and found.checkpoint_id == second.id
    assert run.verify(checksums=True) == []
    out = run.restore(tmp_path / "restored", second.id)
    assert out.name == "last-step=10.ckpt" and out.read_bytes() == data


@two_backends
def test_a_new_handle_learns_the_targets_from_the_listing(run, store_base, tmp_path):
    """A restarted sidecar lists the run (``RunStore.list``) and aliases to what an earlier process committed."""
    step = tmp_path / "model-step3.ckpt"
    data = _file(step, MIB, 2)
    first = run.commit(step)
    again = RunStore.open(run.url, store_base.options)
    again.list()
    other = tmp_path / "copy"
    other.mkdir()
    shutil.copyfile(step, other / "model-step3.ckpt")
    second = again.commit(other / "model-step3.ckpt")
    assert second.files[0].alias == layout.data_key(first.id, first.name, None)
    assert sum(_stored(run).values()) == len(data)


@two_backends
def test_same_size_other_bytes_and_small_files_are_uploaded(run, tmp_path):
    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    _file(a, 2 * MIB, 3)
    _file(b, 2 * MIB, 4)  # same size, other bytes: its CRC-32C differs
    run.commit(a)
    assert not run.commit(b).aliases
    small = tmp_path / "small.pt"
    small.write_bytes(b"s" * (aliases.ALIAS_MIN_BYTES - 1))
    run.commit(small)
    shutil.copyfile(small, tmp_path / "small2.pt")
    assert not run.commit(tmp_path / "small2.pt").aliases  # below ALIAS_MIN_BYTES: always uploaded


@two_backends
def test_identical_files_of_one_folder_are_stored_once(run, tmp_path):
    folder = tmp_path / "checkpoint-5"
    folder.mkdir()
    data = _file(folder / "weights.bin", MIB + 5, 5)
    (folder / "sub").mkdir()
    shutil.copyfile(folder / "weights.bin", folder / "sub" / "copy.bin")
    (folder / "trainer_state.json").write_text('{"global_step": 5}')
    m = run.commit(folder)
    by = {f.path: f for f in m.files}
    pair = ("sub/copy.bin", "weights.bin")
    aliased = [p for p in pair if by[p].alias]
    assert len(aliased) == 1, m.files  # the first of the two in capture order is stored, the other names it
    (stored,) = set(pair) - set(aliased)
    assert by[aliased[0]].alias == layout.data_key(m.id, m.name, stored) and not by["trainer_state.json"].alias
    assert sum(_stored(run).values()) == len(data) + len('{"global_step": 5}')
    assert run.verify(checksums=True) == []
    out = run.restore(tmp_path / "r", m.id)
    assert (out / "sub" / "copy.bin").read_bytes() == data == (out / "weights.bin").read_bytes()


def test_prune_keeps_the_target_of_a_kept_alias_and_explains_it(run, tmp_path):
    step = tmp_path / "epoch=0-step=10.ckpt"
    _file(step, MIB, 6)
    target = run.commit(step)
    shutil.copyfile(step, tmp_path / "last-step=10.ckpt")
    alias = run.commit(tmp_path / "last-step=10.ckpt")
    newer = tmp_path / "epoch=0-step=5.ckpt"  # a lower step: sorts older than both
    _file(newer, MIB, 7)
    old = run.commit(newer)
    plan = run.prune(keep_last=1, dry_run=True)
    assert alias.id in plan.keep and target.id in plan.keep and old.id in plan.delete, plan
    assert f"holds the bytes of {alias.id}'s alias" in plan.reasons[target.id]
    plan = run.prune(keep_last=1)
    assert old.id in plan.delete and target.id in plan.keep
    assert run.verify(checksums=True) == []
    assert run.restore(tmp_path / "r", alias.id).read_bytes() == step.read_bytes()
    # once nothing kept aliases it, the target goes like any other checkpoint
    for n, step_no in enumerate((20, 30)):  # the first becomes latest (the alias is the fallback), the second too
        later = tmp_path / f"epoch=1-step={step_no}.ckpt"
        _file(later, MIB, 20 + n)
        run.commit(later)
    plan = run.prune(keep_last=1)
    assert {alias.id, target.id} <= set(plan.delete), plan
    assert run.verify(checksums=True) == [] and len(run.manifest_ids()) == 2


@two_backends
def test_orphan_cleanup_never_deletes_a_target_whose_manifest_is_gone(run, tmp_path):
    step = tmp_path / "epoch=0-step=10.ckpt"
    data = _file(step, MIB, 9)
    target = run.commit(step)
    shutil.copyfile(step, tmp_path / "last-step=10.ckpt")
    alias = run.commit(tmp_path / "last-step=10.ckpt")
    run._rm(layout.manifest_key(target.id))  # an older kresume's prune, or a human: the target is no commit now
    run.prune(keep_last=5, orphans_older_than=0)
    assert run.restore(tmp_path / "r", alias.id).read_bytes() == data


@two_backends
def test_a_target_pruned_during_the_commit_fails_it_and_leaves_no_manifest(run, tmp_path):
    """commit.check_alias_targets: the target's manifest is read again after the alias's manifest is written."""
    step = tmp_path / "epoch=0-step=10.ckpt"
    _file(step, MIB, 10)
    target = run.commit(step)
    run._rm(layout.manifest_key(target.id))  # a prune's first phase (manifests); its data is still there
    shutil.copyfile(step, tmp_path / "last-step=10.ckpt")
    with pytest.raises(errors.CorruptCheckpoint, match="pruned while it was committed"):
        run.commit(tmp_path / "last-step=10.ckpt")
    assert run.manifest_ids() == []
    retried = run.commit(tmp_path / "last-step=10.ckpt")  # the sidecar's retry: the target is forgotten, so it uploads
    assert not retried.aliases and run.verify(checksums=True) == []


@two_backends
def test_a_bad_mark_on_the_target_does_not_make_the_alias_unusable(run, tmp_path):
    step = tmp_path / "epoch=0-step=10.ckpt"
    data = _file(step, MIB, 11)
    target = run.commit(step)
    shutil.copyfile(step, tmp_path / "last-step=10.ckpt")
    alias = run.commit(tmp_path / "last-step=10.ckpt")
    run.mark_bad(target.id, "test")
    found = run.latest()
    assert found is not None and found.checkpoint_id == alias.id  # bad marks name checkpoints, not bytes
    assert target.id in run.prune(keep_last=1).keep  # marked bad: kept, and so are the alias's bytes
    assert run.restore(tmp_path / "r", alias.id).read_bytes() == data


@two_backends
def test_a_missing_target_makes_the_alias_invalid_and_verify_names_it(run, tmp_path):
    step = tmp_path / "epoch=0-step=10.ckpt"
    _file(step, MIB, 12)
    target = run.commit(step)
    shutil.copyfile(step, tmp_path / "last-step=10.ckpt")
    alias = run.commit(tmp_path / "last-step=10.ckpt")
    run._rm(layout.data_prefix(target.id), recursive=True)
    assert run.latest() is None  # never a hole: the alias's bytes are gone, so it is not resumable
    problems = [p.message for p in run.verify() if p.checkpoint_id == alias.id]
    assert problems and "alias of" in problems[0], problems
    with pytest.raises(errors.CorruptCheckpoint):
        run.restore(tmp_path / "r", alias.id)
    assert not (tmp_path / "r" / "last-step=10.ckpt").exists()


def test_two_ranks_parts_never_alias_and_a_single_writer_file_may_alias_a_committed_step(run, store_base, tmp_path):
    """Multi-rank: each rank's part is self-contained (its own objects, even when two ranks write identical
    bytes); a single-writer commit of the run (rank 0's Lightning file) may alias a committed step's object."""
    epoch = layout.new_epoch_token()
    stores = [run, RunStore.open(run.url, store_base.options)]
    same = os.urandom(MIB)
    outcomes = []
    for rank in (0, 1):
        folder = tmp_path / f"r{rank}" / "step_1"
        folder.mkdir(parents=True)
        (folder / f"rank_{rank}.pt").write_bytes(same)  # identical bytes on both ranks
        outcomes.append(stores[rank].commit_part(folder, rank=rank, world_size=2, epoch=epoch,
                                                 expect=Expects(ranks=2)))
    manifest = outcomes[-1].manifest
    assert manifest is not None and not manifest.aliases
    assert sum(_stored(run).values()) == 2 * MIB
    (tmp_path / "single.pt").write_bytes(same)
    single = stores[1].commit(tmp_path / "single.pt")  # rank 1's handle learned the step when it committed it
    assert single.files[0].alias.startswith(layout.data_prefix(manifest.id) + "/")
    plan = run.prune(keep_last=1)
    assert manifest.id in plan.keep, plan
    assert run.restore(tmp_path / "out", single.id).read_bytes() == same
    assert run.verify(checksums=True) == []


def test_manifest_versions_and_alias_validation():
    cid = "0000000010-20261129T103000123456Z-9f2c1a"
    other = "0000000010-20261129T103000123456Z-aaaaaa"
    plain = Manifest(cid, "a.ckpt", "file", "torch", 10, None, (FileEntry("", 5, "00000001"),))
    doc = json.loads(plain.to_json())
    assert doc["version"] == 1 and "alias" not in doc["files"][0]  # what readers without aliases write and read
    aliased = Manifest(cid, "a.ckpt", "file", "torch", 10, None,
                       (FileEntry("", 5, "00000001", f"checkpoints/{other}/b.ckpt"),))
    doc = json.loads(aliased.to_json())
    assert doc["version"] == 2 and Manifest.from_json(aliased.to_json()) == Manifest(**{**aliased.__dict__, "version": 2})
    doc["version"] = 1  # an alias in a version-1 manifest would be read as a hole by an older reader
    with pytest.raises(ManifestInvalid, match="alias"):
        Manifest.from_json(json.dumps(doc))
    for bad in ("latest.json", "checkpoints/not-an-id/x", "checkpoints/../x/y", f"checkpoints/{other}",
                f"manifests/{other}.json", f"checkpoints/{cid}/a.ckpt"):
        doc["version"] = 2
        doc["files"][0]["alias"] = bad
        with pytest.raises(ManifestInvalid, match=r"files\[0\]\.alias"):
            Manifest.from_json(json.dumps(doc))


def _forge_crc32c(data: bytes, want: int, at: int) -> bytes:
    """``data`` with the 4 bytes at ``at`` replaced so that its CRC-32C is ``want`` (CRC is affine over GF(2):
    solve for the 32 bits by Gaussian elimination)."""
    import google_crc32c

    base = bytearray(data)
    base[at:at + 4] = b"\0\0\0\0"
    c0 = google_crc32c.value(bytes(base))
    zeros = google_crc32c.value(bytes(len(data)))
    cols = []
    for bit in range(32):
        probe = bytearray(len(data))
        probe[at + bit // 8] = 1 << (bit % 8)
        cols.append(google_crc32c.value(bytes(probe)) ^ zeros)  # the linear contribution of one bit
    rows = [(cols[i], 1 << i) for i in range(32)]
    target, basis = c0 ^ want, []
    for vec, mask in rows:  # reduce to an echelon basis of (contribution, which bits)
        for bvec, bmask in basis:
            if vec ^ bvec < vec:
                vec, mask = vec ^ bvec, mask ^ bmask
        if vec:
            basis.append((vec, mask))
            basis.sort(reverse=True)
    bits = 0
    for bvec, bmask in basis:
        if target ^ bvec < target:
            target, bits = target ^ bvec, bits ^ bmask
    assert target == 0
    base[at:at + 4] = bits.to_bytes(4, "little")
    return bytes(base)


@two_backends
def test_same_size_and_crc32c_but_other_bytes_is_uploaded(run, tmp_path):
    """A forged CRC-32C collision between two same-size torch files (the zip's central directory, in the tail
    compared before aliasing, holds each record's own CRC-32) is not taken for a copy."""
    import google_crc32c
    import torch

    torch.save({"w": torch.arange(300_000, dtype=torch.float32)}, tmp_path / "a.pt")
    torch.save({"w": torch.arange(300_000, dtype=torch.float32) + 1}, tmp_path / "b.pt")
    a, b = (tmp_path / "a.pt").read_bytes(), (tmp_path / "b.pt").read_bytes()
    assert len(a) == len(b) >= aliases.ALIAS_MIN_BYTES
    forged = _forge_crc32c(b, google_crc32c.value(a), len(b) // 2)
    assert forged != a and google_crc32c.value(forged) == google_crc32c.value(a)
    (tmp_path / "b.pt").write_bytes(forged)
    run.commit(tmp_path / "a.pt")
    m = run.commit(tmp_path / "b.pt")
    assert not m.aliases  # uploaded: its own bytes restore
    assert run.restore(tmp_path / "r", m.id).read_bytes() == forged


def test_retention_keeps_alias_targets_transitively():
    """Pure rule (kresume.store.retention): a kept checkpoint keeps what its aliases name, and so on."""
    from kresume.store.retention import plan_prune

    ids = [layout.new_checkpoint_id(s) for s in (10, 20, 30, 40)]
    c10, c20, c30, c40 = ids
    plan = plan_prune({c: int(c[:10]) for c in ids}, keep_last=1, latest_id=c40, aliased={c40: [c20], c20: [c10]})
    assert plan.keep == [c40, c30, c20, c10], plan  # c30: the fallback
    assert plan.delete == []
    assert "holds the bytes of" in plan.reasons[c20] and c20 in plan.reasons[c10]
    plan = plan_prune({c: int(c[:10]) for c in ids}, keep_last=1, latest_id=c40, aliased={c30: [c10]})
    assert plan.delete == [c20] and c10 in plan.keep


@two_backends
def test_a_same_size_file_that_is_no_copy_costs_no_second_read(run, tmp_path, monkeypatch):
    """Every step file of a run has one size: its tail differs from the last one's, so it is never read whole
    before its upload (the whole-file CRC is computed only when the tail matches)."""
    whole_reads = []
    real = aliases.local_crc32c
    monkeypatch.setattr(aliases, "local_crc32c", lambda f, s: whole_reads.append(f.display) or real(f, s))
    for i in range(3):
        path = tmp_path / f"epoch=0-step={i}.ckpt"
        _file(path, MIB + 64, 30 + i)
        assert not run.commit(path).aliases
    assert whole_reads == []
    shutil.copyfile(tmp_path / "epoch=0-step=2.ckpt", tmp_path / "last-step=2.ckpt")
    assert run.commit(tmp_path / "last-step=2.ckpt").aliases and len(whole_reads) == 1


def test_kresume_ls_and_prune_dry_run_show_aliases(tmp_path):
    """The CLI: ``ls --json`` gives stored bytes and alias targets; ``prune --dry-run`` says why a target stays."""
    from typer.testing import CliRunner

    from kresume.cli import app

    url = f"file://{tmp_path}/run/"
    run = RunStore.open(url)
    step = tmp_path / "epoch=0-step=10.ckpt"
    _file(step, MIB, 40)
    target = run.commit(step)
    shutil.copyfile(step, tmp_path / "last-step=10.ckpt")
    alias = run.commit(tmp_path / "last-step=10.ckpt")
    _file(tmp_path / "epoch=0-step=5.ckpt", MIB, 41)
    run.commit(tmp_path / "epoch=0-step=5.ckpt")
    out = CliRunner().invoke(app, ["ls", "--json", url])
    assert out.exit_code == 0, out.output
    rows = {r["id"]: r for r in map(json.loads, out.output.splitlines()) if r["kind"] == "checkpoint"}
    assert rows[alias.id]["stored_bytes"] == 0 and rows[alias.id]["bytes"] == MIB
    assert rows[alias.id]["aliases"] == [layout.data_key(target.id, target.name, None)]
    out = CliRunner().invoke(app, ["prune", "--dry-run", "--keep-last", "1", url])
    assert out.exit_code == 0 and f"kept\t{target.id}\t" in out.output and "alias" in out.output, out.output


@two_backends
def test_resolving_an_alias_into_a_known_checkpoint_lists_only_its_own_prefix(run, tmp_path, monkeypatch):
    """The webhook's store answer (issue 17 item 3: one round trip): the alias's target was validated when it was
    the latest, so resolving the alias lists only the alias's own prefix, alongside its manifest read."""
    step = tmp_path / "epoch=0-step=10.ckpt"
    _file(step, MIB, 50)
    target = run.commit(step)
    assert run.latest().checkpoint_id == target.id  # validated: now known to this handle
    shutil.copyfile(step, tmp_path / "last-step=10.ckpt")
    alias = run.commit(tmp_path / "last-step=10.ckpt")
    listed = []
    real = run._object_sizes
    monkeypatch.setattr(run, "_object_sizes", lambda cid: listed.append(cid) or real(cid))
    assert run.latest().checkpoint_id == alias.id
    assert listed == [alias.id]
    run.known.forget(target.id)  # a handle that never validated the target lists it too
    run.known.forget(alias.id)
    listed.clear()
    assert run.latest().checkpoint_id == alias.id and sorted(listed) == sorted([alias.id, target.id])


@two_backends
def test_the_node_cache_keeps_and_restores_an_alias_whole(run, tmp_path):
    """The sidecar keeps a committed checkpoint on the node from its captured descriptors: an alias's file is
    kept whole there, and a restore from the cache gives its bytes without asking the store for the target."""
    from kresume.store.local import snapshot
    from kresume.store.nodecache import NodeCache

    step = tmp_path / "epoch=0-step=10.ckpt"
    data = _file(step, MIB, 60)
    run.commit(step)
    shutil.copyfile(step, tmp_path / "last-step=10.ckpt")
    cache = NodeCache(tmp_path / "node-cache", 64 * MIB)
    with snapshot(tmp_path / "last-step=10.ckpt") as captured:
        alias = run.commit(captured)
        assert alias.aliases and cache.put(run.url, alias, captured.files) is not None
    outcome: dict = {}
    out = run.restore(tmp_path / "r", alias, cache=cache, outcome=outcome)
    assert outcome["source"] == "cache" and out.read_bytes() == data
