"""Concurrent admissions of one run share one store lookup (issue 17 item 3), counted at a real S3
server (moto behind a counting proxy)."""

from __future__ import annotations

import asyncio
import uuid

import torch

from kresume.operator.resolution import SOURCE_STORE, Resolver
from kresume.store.runstore import RunStore


def test_a_burst_of_admissions_of_one_run_makes_one_lookup(moto_s3, fault_proxy, tmp_path):
    proxy = fault_proxy(moto_s3.endpoint)
    opts = proxy.storage_options(moto_s3.storage_options)
    url = moto_s3.url("kresume-test", f"shared-{uuid.uuid4().hex[:8]}/ns/run/")
    torch.save({"w": torch.zeros(64), "global_step": 5}, tmp_path / "step=5.ckpt")
    committed = RunStore.open(url, opts).commit(tmp_path / "step=5.ckpt")
    resolver = Resolver()

    async def burst() -> list:
        return await asyncio.gather(*(resolver.resolve(url, opts, budget=30) for _ in range(8)))

    try:
        asyncio.run(resolver.warm(url, opts))  # client set-up outside the count
        before = sum(proxy.stats.requests.values())
        outcomes = asyncio.run(burst())
        made = sum(proxy.stats.requests.values()) - before
    finally:
        resolver.close()
    assert {o.source for o in outcomes} == {SOURCE_STORE}
    assert {o.resume.checkpoint for o in outcomes} == {committed.id}
    assert made == 5, proxy.stats.log[-made:]  # one lookup: 3 reads together, then manifest + listing
