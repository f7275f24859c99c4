"""A fault-injecting HTTP reverse proxy for S3 servers (aiohttp), and its ``fault_proxy`` fixture.

The proxy listens on 127.0.0.1 and forwards every request unchanged (method, path, query,
headers including the ``Host`` the client signed with SigV4, body) to one upstream server
(moto, SeaweedFS). A :class:`FaultPlan` decides per request whether to answer it with a fault
instead of forwarding it:

- ``"slowdown"``: HTTP 503 with S3's ``SlowDown`` XML error body (S3 throttling),
- ``"internal"``: HTTP 500 with S3's ``InternalError`` XML error body,
- ``"reset"``: the request body is read, then the TCP connection is aborted (RST) with no answer,
- ``"denied"``: HTTP 403 ``AccessDenied`` (a permanent error: clients must not retry it).

The error bodies follow the S3 REST error response format (AWS S3 API reference, "Error
responses": ``<Error><Code/><Message/><Resource/><RequestId/></Error>``), which is what botocore
parses into ``ClientError`` codes. Usage::

    def test_x(fault_proxy, moto_s3):
        proxy = fault_proxy(moto_s3.endpoint, FaultPlan(fraction=0.2, kinds=("slowdown",), seed=1))
        options = proxy.storage_options(moto_s3.storage_options)   # endpoint -> the proxy
        ...
        assert proxy.stats.faults["slowdown"] > 0
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

FAULT_KINDS = ("slowdown", "internal", "reset", "denied")
"""Every fault a :class:`FaultPlan` may inject."""

_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
    "denied": (403, "AccessDenied", "Access Denied"),
}
# RFC 9110 §7.6.1 hop-by-hop fields, plus fields aiohttp recomputes for the re-sent body.
_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "expect", "content-length"}


@dataclass
class FaultPlan:
    """Which requests get a fault. Requests are counted from 1 in arrival order.

    A request is *eligible* when its method is in ``methods`` (all when empty) and its path
    matches ``path_regex`` (all when empty). Among eligible requests, a fault starts on every
    ``every_nth``-th one and/or with probability ``fraction`` (seeded ``random.Random(seed)``), and
    then lasts for ``burst`` consecutive eligible requests (1 = that request only). The kind is
    drawn from ``kinds`` with the same generator. After ``max_faults`` faults (None: unlimited)
    everything is forwarded. ``enabled`` switches the plan off and on at run time (e.g. "deny
    everything from now on").
    """

    every_nth: int | None = None
    fraction: float = 0.0
    kinds: tuple[str, ...] = ("slowdown",)
    burst: int = 1
    methods: tuple[str, ...] = ()
    path_regex: str = ""
    seed: int = 0
    max_faults: int | None = None
    enabled: bool = True
    injected: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _eligible: int = field(default=0, init=False, repr=False)
    _left: int = field(default=0, init=False, repr=False)
    _kind: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"FaultPlan.kinds: unknown {sorted(unknown)}; choose from {FAULT_KINDS}")
        if self.every_nth is not None and self.every_nth < 1:
            raise ValueError("FaultPlan.every_nth must be >= 1 (or None)")
        if not 0.0 <= self.fraction <= 1.0 or self.burst < 1:
            raise ValueError("FaultPlan.fraction must be in [0, 1] and burst >= 1")
        self._rng = random.Random(self.seed)

    def decide(self, method: str, path: str) -> str | None:
        """The fault kind for this request, or None to forward it. Not thread-safe (one event loop)."""
        if not self.enabled or (self.max_faults is not None and self.injected >= self.max_faults) \
                or (self.methods and method not in self.methods) \
                or (self.path_regex and not re.search(self.path_regex, path)):
            return None
        self._eligible += 1
        if self._left == 0:
            start = (self.every_nth is not None and self._eligible % self.every_nth == 0) \
                or (self.fraction > 0 and self._rng.random() < self.fraction)
            if not start:
                return None
            self._left = self.burst
            self._kind = self._rng.choice(self.kinds)
        self._left -= 1
        self.injected += 1
        return self._kind


@dataclass
class ProxyStats:
    """What the proxy saw: requests by method, faults by kind, requests forwarded upstream."""

    requests: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    forwarded: int = 0
    log: list[tuple[str, str, str]] = field(default_factory=list)
    """(method, path, outcome) per request; outcome is a fault kind or the upstream status."""


class FaultProxy:
    """The proxy server, running its own event loop on a daemon thread. Start with :meth:`start`.

    Parameters
    ----------
    upstream : str
        Base URL of the real server, e.g. ``http://127.0.0.1:PORT``.
    plan : FaultPlan
        The faults; may be replaced or toggled (``proxy.plan.enabled = False``) while running.
    """

    def __init__(self, upstream: str, plan: FaultPlan | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.plan = plan or FaultPlan(fraction=0.0)
        self.stats = ProxyStats()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>`` of the proxy."""
        return f"http://127.0.0.1:{self.port}"

    def storage_options(self, upstream_options: dict[str, Any]) -> dict[str, Any]:
        """s3fs storage options of the upstream with ``client_kwargs.endpoint_url`` set to the proxy."""
        opts = {**upstream_options}
        opts["client_kwargs"] = {**opts.get("client_kwargs", {}), "endpoint_url": self.endpoint}
        return opts

    def start(self) -> FaultProxy:
        """Bind an ephemeral port and serve; returns self."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        """Close the listener and the upstream session, then stop the loop thread."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=300))
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.stats.requests[request.method] += 1
        kind = self.plan.decide(request.method, request.path)
        if kind is not None:
            self.stats.faults[kind] += 1
            self.stats.log.append((request.method, request.path, kind))
            if kind == "reset":
                assert request.transport is not None
                request.transport.abort()  # RST: the client sees a reset / server disconnect
                raise asyncio.CancelledError
            status, code, message = _ERRORS[kind]
            xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                   f"<Resource>{request.path}</Resource><RequestId>{uuid.uuid4().hex[:16]}</RequestId></Error>")
            return web.Response(status=status, body=xml.encode(), content_type="application/xml",
                                headers={"x-amz-request-id": uuid.uuid4().hex[:16]})
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        assert self._session is not None
        async with self._session.request(request.method, self.upstream + request.rel_url.raw_path_qs,
                                         headers=headers, data=body if body else None,
                                         allow_redirects=False, skip_auto_headers=("Content-Type",)) as up:
            data = await up.read()
            out_headers = {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
            self.stats.forwarded += 1
            self.stats.log.append((request.method, request.path, str(up.status)))
            if request.method == "HEAD":
                # keep the object's Content-Length on HEAD (s3fs.info reads the size from it)
                resp = web.StreamResponse(status=up.status, headers=out_headers)
                if "Content-Length" in up.headers:
                    resp.content_length = int(up.headers["Content-Length"])
                await resp.prepare(request)
                await resp.write_eof()
                return resp
            return web.Response(status=up.status, body=data, headers=out_headers)


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """Factory ``fault_proxy(upstream_endpoint, plan=None) -> FaultProxy`` (started); all stopped at teardown."""
    proxies: list[FaultProxy] = []

    def make(upstream: str, plan: FaultPlan | None = None) -> FaultProxy:
        proxy = FaultProxy(upstream, plan).start()
        proxies.append(proxy)
        return proxy

    yield make
    for p in proxies:
        p.stop()
