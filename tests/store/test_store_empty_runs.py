"""A run URL that holds nothing: a missing bucket/container is told apart from a mistyped run, on
every backend (listing a missing bucket looks exactly like listing an empty prefix), and nothing
reports an empty run as clean."""

from __future__ import annotations

import uuid

import pytest

from kresume.store import errors
from kresume.store.runstore import RunStore


def _missing_bucket_run(store_base):
    if store_base.server is None:
        pytest.fail("only for backends with buckets")  # never reached: callers check first
    bucket = f"no-such-{uuid.uuid4().hex[:10]}"
    return bucket, RunStore.open(store_base.server.url(bucket, "ns/run"), store_base.options)


def test_missing_bucket_is_named_wherever_an_empty_run_is_reported(store_base):
    if store_base.server is None:
        run = RunStore.open(store_base.join("typo", "ns", "run"), store_base.options)
        with pytest.raises(errors.NoCheckpoint):
            run.check()
        return
    bucket, run = _missing_bucket_run(store_base)
    assert run.latest() is None  # resolution itself stays one round trip (webhook path)
    for call in (run.check, lambda: run.resolve_checkpoint(None), lambda: run.resolve_checkpoint("x.ckpt")):
        with pytest.raises(errors.BucketMissing) as info:
            call()
        assert info.value.exit_code == 7 and repr(bucket) in str(info.value)


def test_empty_run_in_an_existing_bucket_is_no_checkpoint_not_clean(store_base):
    run = RunStore.open(store_base.join("ns", f"typo-{uuid.uuid4().hex[:8]}"), store_base.options)
    with pytest.raises(errors.NoCheckpoint, match="nothing is committed under this URL"):
        run.check()
    with pytest.raises(errors.NoCheckpoint):
        run.resolve_checkpoint(None)
    assert isinstance(run.no_checkpoint("x"), errors.NoCheckpoint)


def test_check_counts_what_it_checked(store_base, tmp_path):
    run = RunStore.open(store_base.join("ns", f"run-{uuid.uuid4().hex[:8]}"), store_base.options)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"a" * 1000)
    (folder / "b.bin").write_bytes(b"b" * 24)
    (tmp_path / "epoch=0-step=3.ckpt").write_bytes(b"c" * 100)
    run.commit(folder)
    run.commit(tmp_path / "epoch=0-step=3.ckpt")
    report = run.check(checksums=True)
    assert (report.problems, report.checkpoints, report.files, report.bytes) == ([], 2, 3, 1124)


def test_library_verify_of_an_empty_run_has_no_problems(store_base):
    """``verify()`` lists problems; a run with nothing committed yet (a sidecar killed during its first
    upload) has none. Only the CLI's ``check`` refuses to call an empty run clean."""
    run = RunStore.open(store_base.join("ns", f"empty-{uuid.uuid4().hex[:8]}"), store_base.options)
    assert run.verify(checksums=True) == []
    with pytest.raises(errors.NoCheckpoint):
        run.check()
