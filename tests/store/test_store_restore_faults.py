"""S3 restore under faults, through a proxy in front of moto: a body that breaks off in the middle of
a range is resumed from the next byte; one that keeps breaking off, or a 500 on a ranged GET,
restarts the whole file (TransferSettings.attempts). The restored bytes and the progress total must
come out exact either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import uuid
from pathlib import Path

from aiohttp import web

from _fixtures.faultproxy import FaultPlan, FaultProxy
from _fixtures.objstores import SESSION_BUCKET
from kresume.store import download, errors
from kresume.store.deadline import Deadline
from kresume.store.runstore import RunStore
from kresume.store.storage import TransferSettings

RANGE = 256 * 1024
SIZE = 4 * RANGE + 4321
# RFC 9110 §7.6.1 hop-by-hop fields, plus the ones aiohttp recomputes for a re-sent body.
_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "expect", "content-length"}


class CutProxy(FaultProxy):
    """Forwards everything; the first ``cuts`` ranged GETs of the data object get their headers and
    half their body, then the connection is closed (a body that breaks off mid-range).
    ``ranges`` records every ranged GET's ``Range`` header in arrival order."""

    def __init__(self, upstream: str, cuts: int) -> None:
        super().__init__(upstream)
        self.cuts = cuts
        self.ranges: list[str] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rng = request.headers.get("Range")
        if request.method != "GET" or not rng or "/checkpoints/" not in request.path:
            return await super()._handle(request)
        self.ranges.append(rng)
        if self.cuts <= 0:
            return await super()._handle(request)
        self.cuts -= 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        assert self._session is not None
        async with self._session.get(self.upstream + request.rel_url.raw_path_qs, headers=headers,
                                     allow_redirects=False) as up:
            data = await up.read()
            status, out = up.status, {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
        assert status == 206, status
        resp = web.StreamResponse(status=status, headers=out)
        resp.content_length = len(data)
        await resp.prepare(request)
        await resp.write(data[: len(data) // 2])
        # Let the client take in the half body first: aiohttp raises a stored payload error before
        # handing out data still buffered, and this test wants bytes to resume after.
        await asyncio.sleep(0.3)
        assert request.transport is not None
        request.transport.close()  # FIN after the half body: fewer bytes than Content-Length
        raise asyncio.CancelledError


def _starts(ranges: list[str]) -> list[int]:
    return [int(re.fullmatch(r"bytes=(\d+)-\d*", r)[1]) for r in ranges]


def _commit_then_open_through(proxy_options: dict, moto_s3, tmp_path: Path, settings: TransferSettings):
    """Commit a SIZE-byte file directly, then return (data, manifest, store through the proxy)."""
    url = moto_s3.url(SESSION_BUCKET, f"faults-{uuid.uuid4().hex[:10]}/ns/run")
    data = hashlib.shake_256(b"restore-faults").digest(SIZE)
    src = tmp_path / "src" / "weights.dat"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    m = RunStore.open(url, moto_s3.storage_options).commit(src)
    return data, m, RunStore.open(url, proxy_options, settings=settings)


def _restore_through(proxy, moto_s3, tmp_path, settings) -> tuple[bytes, Path, list[int]]:
    """Commit directly, restore through ``proxy``; returns (original bytes, restored path, progress calls)."""
    data, m, store = _commit_then_open_through(proxy.storage_options(moto_s3.storage_options), moto_s3,
                                               tmp_path, settings)
    seen: list[int] = []
    return data, store.restore(tmp_path / "dest", m.id, progress=seen.append), seen


def test_body_broken_off_mid_range_resumes_from_the_next_byte(moto_s3, tmp_path):
    proxy = CutProxy(moto_s3.endpoint, cuts=1).start()
    try:
        settings = TransferSettings(range_size=RANGE, ranges_in_flight=2, attempts=2, backoff_base=0.01)
        data, restored, seen = _restore_through(proxy, moto_s3, tmp_path, settings)
        assert restored.read_bytes() == data
        assert sum(seen) == SIZE
        assert proxy.cuts == 0
        starts = _starts(proxy.ranges)
        # the resumed request starts inside a range (where the cut body stopped), not on a boundary
        assert any(s % RANGE for s in starts), proxy.ranges
        assert starts.count(0) == 1  # the file was not restarted
    finally:
        proxy.stop()


def test_body_breaking_off_repeatedly_still_restores_every_byte_once(moto_s3, tmp_path):
    # More cuts than one range may resume from (kresume's RESUMES_PER_RANGE; obstore also resumes
    # broken bodies itself): whichever layer gives up restarts cleanly, and every byte lands once.
    cuts = download.RESUMES_PER_RANGE + 1
    proxy = CutProxy(moto_s3.endpoint, cuts=cuts).start()
    try:
        settings = TransferSettings(range_size=RANGE, ranges_in_flight=1, attempts=3, backoff_base=0.01)
        data, restored, seen = _restore_through(proxy, moto_s3, tmp_path, settings)
        assert restored.read_bytes() == data
        assert sum(seen) == SIZE  # a retried file's bytes are not counted twice
        assert proxy.cuts == 0, proxy.ranges  # every cut happened
    finally:
        proxy.stop()


def test_server_error_on_a_ranged_get_retries_the_file(moto_s3, fault_proxy, tmp_path):
    proxy = fault_proxy(moto_s3.endpoint, FaultPlan(every_nth=3, kinds=("internal",), methods=("GET",),
                                                    path_regex="/checkpoints/", max_faults=2))
    settings = TransferSettings(range_size=RANGE, ranges_in_flight=2, attempts=4, backoff_base=0.01)
    data, restored, seen = _restore_through(proxy, moto_s3, tmp_path, settings)
    assert restored.read_bytes() == data
    assert sum(seen) == SIZE
    assert proxy.stats.faults["internal"] == 2


def test_a_store_that_stops_answering_mid_restore_fails_it_within_the_idle_budget(moto_s3, fault_proxy, tmp_path):
    # The range threads call the store directly; the thread waiting for an object's ranges enforces the
    # deadline (download._gather). The store freezes once the first bytes have landed: the restore must fail
    # as StoreUnreachable naming the budget, long before the freeze ends, and leave no file behind.
    proxy = fault_proxy(moto_s3.endpoint)
    budget = Deadline("the test's budget (1.5 s without an answer)", idle=1.5)
    settings = TransferSettings(range_size=RANGE, ranges_in_flight=1, attempts=2, backoff_base=0.01, deadline=budget)
    data, m, store = _commit_then_open_through(proxy.storage_options(moto_s3.storage_options), moto_s3,
                                               tmp_path, settings)
    froze: list[object] = []

    def progress(n: int) -> None:
        if not froze:
            froze.append(proxy.window("stall", 120.0))

    outcome: list[BaseException | Path] = []

    def run() -> None:
        try:
            outcome.append(store.restore(tmp_path / "dest", m.id, progress=progress))
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60.0)  # generous; the freeze lasts 120 s
    assert not worker.is_alive(), "the restore did not fail while the store was frozen"
    assert froze, "no byte arrived before the freeze"
    proxy.clear()
    (exc,) = outcome
    assert isinstance(exc, errors.StoreUnreachable), repr(exc)
    assert "the test's budget" in str(exc)
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == []  # no partial file, no staging folder
