"""Each store fault of the proxy, one request at a time, against moto with the real s3fs client through
``RunStore``: what the client sees, and that kresume neither commits nor restores anything wrong.

The campaign (tests/faults/test_faults_campaign.py) throws the same faults at a running sidecar; these
tests pin down each fault's effect on its own so a campaign failure can be read.
"""

from __future__ import annotations

import time
import uuid

import pytest
import torch

from _fixtures.faultproxy import FaultProxy
from _fixtures.objstores import SESSION_BUCKET
from kresume.store import errors
from kresume.store.runstore import RunStore
from kresume.store.storage import TransferSettings

FAST = TransferSettings(backoff_base=0.05, backoff_max=0.5)
DATA = r"/checkpoints/"


@pytest.fixture
def proxy(moto_s3):
    p = FaultProxy(moto_s3.endpoint).start()
    yield p
    p.stop()


@pytest.fixture
def stores(moto_s3, proxy):
    """(through the proxy, direct) stores of one fresh run."""
    url = moto_s3.url(SESSION_BUCKET, f"proxy-{uuid.uuid4().hex[:10]}/ns/run")
    return (RunStore.open(url, proxy.storage_options(moto_s3.storage_options), settings=FAST),
            RunStore.open(url, moto_s3.storage_options))


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "epoch=0-step=10.ckpt"
    torch.save({"w": torch.randn(5 * 2**18), "global_step": 10}, path)  # 5 MiB: one PUT
    return path


def _restored_equal(store: RunStore, cid: str, src, dest) -> bool:
    return store.restore(dest, cid).read_bytes() == src.read_bytes()


def test_upload_cut_upstream_with_a_matching_length_is_never_committed(stores, proxy, ckpt, tmp_path):
    """wrong_length on a PUT: the server stores half the object and answers 200; the commit's size
    check refuses it (nothing committed), and the next commit lands whole."""
    faulty, truth = stores
    shot = proxy.arm("wrong_length", methods=("PUT",), path_regex=DATA)
    with pytest.raises(errors.CorruptCheckpoint, match="upload did not land"):
        faulty.commit(ckpt)
    assert shot.fired.is_set() and "forwarded" in shot.detail
    assert truth.manifest_ids() == [] and truth.read_pointer() is None
    m = faulty.commit(ckpt)
    assert truth.verify(checksums=True) == [] and truth.latest().checkpoint_id == m.id
    assert _restored_equal(truth, m.id, ckpt, tmp_path / "r")


@pytest.mark.parametrize("size_mib", [5, 20])
def test_reset_in_the_middle_of_a_part_is_retried_whole(stores, proxy, tmp_path, size_mib):
    """reset_mid: half a part's body arrives, then RST; 20 MiB goes up as a multipart upload (8 MiB parts)."""
    faulty, truth = stores
    src = tmp_path / f"epoch=0-step={size_mib}.ckpt"
    torch.save({"w": torch.randn(size_mib * 2**18), "global_step": size_mib}, src)
    shot = proxy.arm("reset_mid", methods=("PUT",), path_regex=DATA, min_bytes=2**20)
    m = faulty.commit(src)
    assert shot.fired.is_set() and "then RST" in shot.detail, shot
    assert truth.verify(checksums=True) == [] and m.files[0].size == src.stat().st_size
    assert _restored_equal(truth, m.id, src, tmp_path / "r")


@pytest.mark.parametrize("strip", [False, True], ids=["with-checksums", "no-checksums"])
@pytest.mark.parametrize("target", ["manifests", "checkpoints"])
def test_a_200_with_a_truncated_body_is_read_again(stores, proxy, ckpt, tmp_path, strip, target):
    """truncated: a well-formed 200/206 with half the body. With moto's x-amz-checksum headers botocore
    notices (FlexibleChecksumError: transient); without them only kresume's parsing (manifests, re-read) or
    sizes and CRC-32C (data, resumed) can — either way ``latest`` and ``restore`` give the right answer."""
    faulty, truth = stores
    m = truth.commit(ckpt)
    shot = proxy.arm("truncated", methods=("GET",), path_regex=f"/{target}/", strip_checksums=strip)
    if target == "manifests":
        found = faulty.latest()
        assert found is not None and found.checkpoint_id == m.id and found.fallback_reason is None
    else:
        assert _restored_equal(faulty, m.id, ckpt, tmp_path / "r")
    assert shot.fired.is_set(), "the fault never hit a request"


def test_a_download_that_declares_more_than_it_sends_is_resumed(stores, proxy, ckpt, tmp_path):
    faulty, truth = stores
    m = truth.commit(ckpt)
    shot = proxy.arm("wrong_length", methods=("GET",), path_regex=DATA)
    assert _restored_equal(faulty, m.id, ckpt, tmp_path / "r")
    assert shot.fired.is_set() and "declared" in shot.detail


@pytest.mark.parametrize("kind", ["storm", "stall", "drip"])
def test_short_windows_are_ridden_out(stores, proxy, ckpt, tmp_path, kind):
    """A 4 s storm (503 SlowDown), stall (nothing sent, then the connection aborted) or drip (1 KiB/s)
    while a commit runs: it commits whole once the window is over (the campaign's windows are 30 s)."""
    faulty, truth = stores
    w = proxy.window(kind, 4.0)
    t0 = time.monotonic()
    m = faulty.commit(ckpt)
    assert w.hits >= 1, w
    assert time.monotonic() - t0 >= 1.0  # the window really slowed it down
    assert truth.verify(checksums=True) == [] and truth.latest().checkpoint_id == m.id
    assert _restored_equal(truth, m.id, ckpt, tmp_path / "r")


@pytest.mark.parametrize("doc", ["manifests", "latest.json"])
def test_a_manifest_or_pointer_stored_cut_never_stands_as_a_commit(stores, proxy, ckpt, tmp_path, doc):
    """wrong_length on the manifest's (pointer's) PUT: a server that checks no checksum stores half of it
    and answers 200. The manifest is read back, removed and the commit fails (retried: a new id); a cut
    pointer is only a hint that resolution does not trust."""
    faulty, truth = stores
    shot = proxy.arm("wrong_length", methods=("PUT",), path_regex=doc.replace(".", r"\."))
    if doc == "manifests":
        with pytest.raises(errors.CorruptCheckpoint, match="did not land intact"):
            faulty.commit(ckpt)
        assert truth.manifest_ids() == [] and truth.verify() == []
        m = faulty.commit(ckpt)
    else:
        m = faulty.commit(ckpt)
    assert shot.fired.is_set()
    found = truth.latest()
    assert found is not None and found.checkpoint_id == m.id and truth.verify(checksums=True) == []
    assert _restored_equal(truth, m.id, ckpt, tmp_path / "r")
