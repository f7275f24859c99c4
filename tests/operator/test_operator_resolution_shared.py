"""Concurrent admissions of one run share one store lookup (issue 17 item 3), counted at a real S3
server (moto behind a counting proxy)."""

from __future__ import annotations

import asyncio
import threading
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
    # One lookup (3 reads together, then manifest + listing) and, for the 7 that joined it, one bad-mark GET of
    # its answer begun after they did (they share it).
    assert made == 6, proxy.stats.log[-made:]


class Held:
    """A real RunStore whose ``latest()`` answers only once ``release`` is set (a lookup kept in flight)."""

    def __init__(self, store, release):
        self._store, self._release = store, release
        self.answered = threading.Event()

    def latest(self, *, deadline=None):
        out = self._store.latest(deadline=deadline)
        self.answered.set()
        assert self._release.wait(30)
        return out

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_an_admission_joining_a_lookup_begun_before_a_mark_bad_never_gets_the_marked_checkpoint(
        moto_s3, tmp_path):
    """Issue 11 item 3 with shared lookups: lookup L reads the run (newest: B), `kresume mark-bad B` returns, then
    admission 2 joins L. Admission 1 began before the mark and may get B; admission 2 must not."""
    url = moto_s3.url("kresume-test", f"joined-{uuid.uuid4().hex[:8]}/ns/run/")
    opts = moto_s3.storage_options
    store = RunStore.open(url, opts)
    for step in (1, 2):
        torch.save({"w": torch.zeros(8), "global_step": step}, tmp_path / f"step={step}.ckpt")
    a = store.commit(tmp_path / "step=1.ckpt")
    b = store.commit(tmp_path / "step=2.ckpt")
    release = threading.Event()
    held = Held(RunStore.open(url, opts), release)
    resolver = Resolver(open_store=lambda u, o: held)

    async def scenario():
        first = asyncio.create_task(resolver.resolve(url, opts, budget=30))
        assert await asyncio.to_thread(held.answered.wait, 30)  # L has read the run: its answer is B
        await asyncio.to_thread(RunStore.open(url, opts).mark_bad, b.id, "test: bad after L read the run")
        second = asyncio.create_task(resolver.resolve(url, opts, budget=30))  # begins after mark-bad returned
        await asyncio.sleep(0.2)
        release.set()
        return await first, await second

    try:
        first, second = asyncio.run(scenario())
    finally:
        release.set()
        resolver.close()
    assert first.resume.checkpoint == b.id  # began before the mark: allowed
    assert second.source == SOURCE_STORE and second.resume.checkpoint == a.id, second
