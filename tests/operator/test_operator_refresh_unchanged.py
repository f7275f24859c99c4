"""A background refresh that changes nothing costs no API request (``refresher.refresh_run`` given the run's
indexed status): real control plane (CheckpointRun CRD), the real ``Kube`` client, real moto S3 and commits."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import torch

from _fixtures.objstores import make_store_base
from _fixtures.operator import kget
from kresume import contract
from kresume.operator import decisions, refresher
from kresume.operator.handlers import new_state
from kresume.operator.kube import Kube
from kresume.operator.settings import OperatorConfig
from kresume.store.runstore import RunStore


class CountingKube(Kube):
    """The real client, counting the CheckpointRun reads a status update starts with."""

    reads = 0

    async def run(self, namespace: str, name: str, **kwargs: Any) -> dict[str, Any] | None:
        self.reads += 1
        return await super().run(namespace, name, **kwargs)


def test_an_unchanged_run_is_not_read_and_a_new_commit_is_written(control_plane, k8s_namespace, crds_installed,
                                                                  objstore_pool, tmp_path: Path):
    base = make_store_base("s3-moto", objstore_pool, tmp_path)
    ns, run = k8s_namespace, f"r-{uuid.uuid4().hex[:6]}"
    url = f"{base.url}/{ns}/{run}/"
    policies = {(ns, "default"): [{"storage": base.url, "storageOptions": base.options}]}
    ckpt = tmp_path / "epoch=0-step=10.ckpt"
    torch.save({"w": torch.zeros(64)}, ckpt)
    RunStore.open(url, base.options).commit(ckpt)
    api = CountingKube(control_plane.api_client())
    state = new_state(OperatorConfig(), api)
    spec = decisions.run_spec(run=run, policy="default", url=url, source="annotation", group=None, rank=None)

    async def scenario() -> None:
        await api.update_run_status(ns, run, lambda s: {"restarts": 0}, spec=spec)
        await refresher.refresh_run(state, (ns, run), url, "default", policies)  # no index: read and written
        await state.writer.flush()
        first = kget(control_plane, "-n", ns, f"{contract.RUN_PLURAL}.{contract.GROUP}", run)
        assert first["status"]["latest"]["step"] == 10 and first["status"]["checkpoints"] == 1
        reads = api.reads
        await refresher.refresh_run(state, (ns, run), url, "default", policies, indexed=first["status"])
        await state.writer.flush()
        assert api.reads == reads  # the store's answer is what the index holds: no API request
        again = kget(control_plane, "-n", ns, f"{contract.RUN_PLURAL}.{contract.GROUP}", run)
        assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        newer = tmp_path / "epoch=0-step=20.ckpt"
        torch.save({"w": torch.ones(64)}, newer)
        RunStore.open(url, base.options).commit(newer)
        await refresher.refresh_run(state, (ns, run), url, "default", policies, indexed=first["status"])
        await state.writer.flush()
        assert api.reads == reads + 1  # the index is behind the store: read, then written
        written = kget(control_plane, "-n", ns, f"{contract.RUN_PLURAL}.{contract.GROUP}", run)
        assert written["status"]["latest"]["step"] == 20 and written["status"]["checkpoints"] == 2

    try:
        asyncio.run(scenario())
    finally:
        state.resolver.close()


def test_a_round_is_paced_at_the_refresh_rate_and_refreshes_every_live_run(control_plane, k8s_namespace,
                                                                            objstore_pool, tmp_path: Path):
    from dataclasses import replace

    base = make_store_base("s3-moto", objstore_pool, tmp_path)
    ns = k8s_namespace
    names = [f"p-{i}" for i in range(6)]
    urls = {name: f"{base.url}/{ns}/{name}/" for name in names}
    policies = {(ns, "default"): [{"storage": base.url, "storageOptions": base.options}]}
    runs = {(ns, n): [{"spec": {"url": urls[n], "policy": "default"}, "status": {}}] for n in names}
    live = {(ns, n): [f"{n}-pod"] for n in names}
    live[(ns, "gone")] = []  # a run whose pods all ended: not refreshed
    config = OperatorConfig()
    config = replace(config, resolution=replace(config.resolution, refresh_rate=1.0))
    state = new_state(config, Kube(control_plane.api_client()))
    delays: list[float] = []

    async def record(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    try:
        asyncio.run(refresher.refresh_once(state, live, runs, policies, sleep=record))
        assert all(state.resolver.cached(urls[n]) is not None for n in names)  # every live run asked the store
        # Starts at t0 + i / rate: the sixth 5 s after the first. The fake sleep lets no time pass, so each wait is
        # what is left of that schedule after the refreshes under way (a few store requests each).
        assert delays and len(delays) <= len(names) - 1 and max(delays) <= 5.0
        assert max(delays) > 1.0
    finally:
        state.resolver.close()
