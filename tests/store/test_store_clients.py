"""One obstore client per bucket and configuration (store/clients.py): every run's store handle of one bucket
shares it, against real S3 (SeaweedFS) and Azure (Azurite); different settings never share one."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
import torch

from kresume.store import clients
from kresume.store.native_options import NativeConfig
from kresume.store.runstore import RunStore
from tests._fixtures.objstores import SESSION_BUCKET


def _cfg(bucket: str = "b", **config: str) -> NativeConfig:
    return NativeConfig("s3", bucket, {"endpoint": "http://127.0.0.1:9", **config}, {"allow_http": "true"})


def test_the_key_tells_apart_bucket_settings_and_the_environment_obstore_reads():
    base = clients.key(_cfg(), env={})
    assert clients.key(_cfg(), env={"HOME": "/x"}) == base  # only what obstore reads counts
    assert clients.key(_cfg("other"), env={}) != base
    assert clients.key(_cfg(access_key_id="k2"), env={}) != base
    assert clients.key(_cfg(), env={"AWS_SECRET_ACCESS_KEY": "rotated"}) != base
    assert clients.key(_cfg(), env={"AZURE_STORAGE_ACCOUNT_KEY": "k"}) != base


def test_a_client_is_built_once_per_configuration_and_the_oldest_dropped_beyond_the_limit(monkeypatch):
    monkeypatch.setattr(clients, "LIMIT", 2)
    clients.clear()
    built: list[str] = []

    def build(cfg: NativeConfig) -> object:
        built.append(cfg.bucket)
        return object()

    a = clients.shared(_cfg("a"), build)
    assert clients.shared(_cfg("a"), build) is a and built == ["a"]
    clients.shared(_cfg("b"), build)
    assert clients.shared(_cfg("a"), build) is a  # used last: "b" is now the oldest
    clients.shared(_cfg("c"), build)
    assert clients.shared(_cfg("a"), build) is a and built == ["a", "b", "c"]
    clients.shared(_cfg("b"), build)
    assert built == ["a", "b", "c", "b"]  # "b" had been dropped
    clients.clear()


def test_a_failed_build_caches_nothing():
    clients.clear()

    def broken(cfg: NativeConfig) -> object:
        raise ValueError("bad endpoint")

    with pytest.raises(ValueError, match="bad endpoint"):
        clients.shared(_cfg("x"), broken)
    assert clients.shared(_cfg("x"), lambda cfg: "ok") == "ok"
    clients.clear()


@pytest.mark.parametrize("server", ["seaweedfs_s3", "azurite"])
def test_runs_of_one_bucket_share_one_client_and_keep_their_own_checkpoints(server, request, tmp_path: Path):
    srv = request.getfixturevalue(server)
    base = srv.url(SESSION_BUCKET, f"clients-{uuid.uuid4().hex[:8]}")
    ckpt = tmp_path / "epoch=0-step=1.ckpt"
    torch.save({"w": torch.zeros(256)}, ckpt)
    stores = [RunStore.open(f"{base}/ns/run-{rank}/", srv.storage_options) for rank in range(2)]
    assert stores[0].fs.store is stores[1].fs.store  # one HTTP client for the bucket
    errors: list[BaseException] = []

    def commit(store: RunStore) -> None:  # two ranks' sidecars, each its own run, at once
        try:
            store.commit(ckpt)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=commit, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for rank, store in enumerate(stores):
        latest = store.latest()
        assert latest is not None and f"/run-{rank}/" in store.checkpoint_url(latest.manifest)
