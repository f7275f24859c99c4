"""A fault-injecting HTTP reverse proxy for S3 servers (aiohttp), and its ``fault_proxy`` fixture.

The proxy listens on 127.0.0.1 and forwards every request unchanged (method, path, query,
headers including the ``Host`` the client signed with SigV4, body) to one upstream server
(moto, SeaweedFS). Three ways to inject faults, checked in this order for every request:

1. **Windows** (:meth:`FaultProxy.window`, kinds :data:`WINDOW_KINDS`): a time span during which
   every matching request is affected —

   - ``"storm"``: answered at once with 503 ``SlowDown`` (or 500 ``InternalError``), never forwarded
     (an S3 throttling storm; the issue's 30 s storms);
   - ``"stall"``: the connection is accepted and the request read, then nothing is sent until the
     window ends, when the connection is aborted; responses of requests already in flight are held
     the same way (a store that stops answering);
   - ``"drip"``: request and response bodies move at ``rate`` bytes/s (default 1 KiB/s) while the
     window lasts, then at full speed.

2. **Armed one-shot faults** (:meth:`FaultProxy.arm`, kinds :data:`ARMED_KINDS`): the next request
   that matches gets the fault, and the returned :class:`Armed` records what was done —

   - ``"slowdown"``, ``"internal"``, ``"denied"``, ``"reset"`` as below;
   - ``"reset_mid"``: about half of the request body is read, then the TCP connection is aborted
     (RST): a connection reset in the middle of a part upload;
   - ``"wrong_length"``: on an upload (PUT/POST with a body), only the first half of the body is
     forwarded upstream with a Content-Length to match and without the body's checksum headers
     (``x-amz-checksum-*``, ``Content-MD5``), and the upstream's answer (usually 200) goes back to the
     client, which sent the whole body: a server that verifies nothing stores half the object (AWS S3
     itself would reject the cut body by its signed SHA-256; moto and other lax servers do not); on a
     download (GET), the response declares the object's full Content-Length, sends half the body and
     closes the connection;
   - ``"truncated"``: a 200/206 download whose body is cut to half with a Content-Length that
     matches the cut body — well-formed HTTP, wrong data (only sizes and checksums can tell).

   Response-side faults (``truncated``, ``wrong_length`` on GET) wait for a matching answer of
   status 200/206 with at least ``min_bytes`` (≥ 2) bytes.

3. **A** :class:`FaultPlan` (per-request, counted or random; kinds :data:`FAULT_KINDS`):

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
        shot = proxy.arm("reset_mid", methods=("PUT",), path_regex="/checkpoints/", min_bytes=2**20)
        assert shot.fired.wait(30), "no upload came by"
        proxy.window("storm", 30.0)
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
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
ARMED_KINDS = ("slowdown", "internal", "reset", "denied", "reset_mid", "wrong_length", "truncated")
"""Every one-shot fault :meth:`FaultProxy.arm` accepts."""
WINDOW_KINDS = ("storm", "stall", "drip")
"""Every time-window fault :meth:`FaultProxy.window` accepts."""

_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
    "denied": (403, "AccessDenied", "Access Denied"),
}
# RFC 9110 §7.6.1 hop-by-hop fields, plus fields aiohttp recomputes for the re-sent body.
_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "expect", "content-length"}
_DRIP_PIECE = 256
"""Bytes moved per step of a drip (four steps per second at 1 KiB/s)."""


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


def _matches(methods: tuple[str, ...], path_regex: str, method: str, path: str) -> bool:
    return (not methods or method in methods) and (not path_regex or re.search(path_regex, path) is not None)


@dataclass
class Armed:
    """A one-shot fault waiting for its request. ``fired`` is set once it hit one; ``detail`` then
    says what was done (method, path, bytes)."""

    kind: str
    methods: tuple[str, ...] = ()
    path_regex: str = ""
    min_bytes: int = 0
    strip_checksums: bool = False
    """``truncated``: also drop the ``x-amz-checksum-*`` headers (a server that keeps no checksums,
    e.g. for objects uploaded without them), so that only kresume's own checks can tell."""
    fired: threading.Event = field(default_factory=threading.Event)
    detail: str = ""
    cancelled: bool = False

    def cancel(self) -> None:
        """Withdraw the fault if it has not fired yet (it never will afterwards)."""
        self.cancelled = True


@dataclass
class Window:
    """A time-window fault: active from ``start`` to ``end`` (``time.monotonic`` seconds).
    ``hits`` counts the requests it affected."""

    kind: str
    start: float
    end: float
    methods: tuple[str, ...] = ()
    path_regex: str = ""
    error: str = "slowdown"
    rate: int = 1024
    hits: int = 0

    def active(self, now: float | None = None) -> bool:
        """Whether the window covers ``now`` (default: the current monotonic time)."""
        t = time.monotonic() if now is None else now
        return self.start <= t < self.end


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
        self._lock = threading.Lock()
        self._armed: list[Armed] = []
        self._windows: list[Window] = []

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>`` of the proxy."""
        return f"http://127.0.0.1:{self.port}"

    def storage_options(self, upstream_options: dict[str, Any]) -> dict[str, Any]:
        """s3fs storage options of the upstream with ``client_kwargs.endpoint_url`` set to the proxy."""
        opts = {**upstream_options}
        opts["client_kwargs"] = {**opts.get("client_kwargs", {}), "endpoint_url": self.endpoint}
        return opts

    # ------------------------------------------------------------------ fault control (any thread)
    def arm(self, kind: str, *, methods: tuple[str, ...] = (), path_regex: str = "", min_bytes: int = 0,
            strip_checksums: bool = False) -> Armed:
        """Give the next matching request the one-shot fault ``kind`` (:data:`ARMED_KINDS`).

        ``min_bytes``: only requests (for response-side faults: answers) with at least this many
        body bytes match; ``strip_checksums``: see :class:`Armed`. Raises ValueError for an unknown kind.
        """
        if kind not in ARMED_KINDS:
            raise ValueError(f"arm: unknown kind {kind!r}; choose from {ARMED_KINDS}")
        floor = 2 if kind in ("truncated", "wrong_length", "reset_mid") else 0
        shot = Armed(kind, tuple(methods), path_regex, max(min_bytes, floor), strip_checksums)
        with self._lock:
            self._armed.append(shot)
        return shot

    def window(self, kind: str, seconds: float, *, methods: tuple[str, ...] = (), path_regex: str = "",
               error: str = "slowdown", rate: int = 1024) -> Window:
        """Start the time-window fault ``kind`` (:data:`WINDOW_KINDS`) now, for ``seconds``.

        ``error`` (storms): ``"slowdown"`` (503) or ``"internal"`` (500); ``rate`` (drips): bytes/s.
        Raises ValueError for an unknown kind or error.
        """
        if kind not in WINDOW_KINDS:
            raise ValueError(f"window: unknown kind {kind!r}; choose from {WINDOW_KINDS}")
        if error not in ("slowdown", "internal") or rate < 1 or seconds <= 0:
            raise ValueError("window: error must be slowdown|internal, rate >= 1 B/s, seconds > 0")
        now = time.monotonic()
        w = Window(kind, now, now + seconds, tuple(methods), path_regex, error, rate)
        with self._lock:
            self._windows.append(w)
        return w

    def clear(self) -> None:
        """End every window now and withdraw every armed fault that has not fired."""
        now = time.monotonic()
        with self._lock:
            for w in self._windows:
                w.end = min(w.end, now)
            for a in self._armed:
                a.cancelled = True
            self._armed.clear()

    def _active(self, kind: str, method: str, path: str) -> Window | None:
        now = time.monotonic()
        with self._lock:
            for w in self._windows:
                if w.kind == kind and w.active(now) and _matches(w.methods, w.path_regex, method, path):
                    return w
        return None

    def _take(self, kinds: tuple[str, ...], method: str, path: str, size: int) -> Armed | None:
        with self._lock:
            for a in self._armed:
                if a.kind in kinds and not a.cancelled and size >= a.min_bytes \
                        and _matches(a.methods, a.path_regex, method, path):
                    self._armed.remove(a)
                    return a
        return None

    def _fire(self, shot: Armed, method: str, path: str, detail: str) -> None:
        shot.detail = f"{method} {path}: {detail}"
        self.stats.faults[shot.kind] += 1
        self.stats.log.append((method, path, shot.kind))
        shot.fired.set()

    # ------------------------------------------------------------------ server
    def start(self) -> FaultProxy:
        """Bind an ephemeral port and serve; returns self."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        """Close the listener and the upstream session, then stop the loop thread."""
        if self._thread.is_alive():
            self.clear()
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=300))
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    @staticmethod
    def _abort(request: web.Request) -> None:
        """Abort the client connection (RST) and end the handler."""
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError

    async def _hold_stall(self, request: web.Request, window: Window) -> None:
        """Send nothing until ``window`` ends, then abort the connection."""
        window.hits += 1
        self.stats.log.append((request.method, request.path, "stall"))
        while window.active():
            await asyncio.sleep(min(0.2, max(0.0, window.end - time.monotonic())))
        self._abort(request)

    async def _read_body(self, request: web.Request) -> bytes:
        """The request body; dripped while a drip window covers the request."""
        drip = self._active("drip", request.method, request.path)
        if drip is None or not request.can_read_body:
            return await request.read()
        drip.hits += 1
        pieces = []
        while True:
            w = self._active("drip", request.method, request.path)
            piece = await request.content.read(_DRIP_PIECE if w else 2**20)
            if not piece:
                return b"".join(pieces)
            pieces.append(piece)
            if w:
                await asyncio.sleep(len(piece) / w.rate)

    def _error(self, request: web.Request, kind: str) -> web.Response:
        status, code, message = _ERRORS[kind]
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
               f"<Resource>{request.path}</Resource><RequestId>{uuid.uuid4().hex[:16]}</RequestId></Error>")
        return web.Response(status=status, body=xml.encode(), content_type="application/xml",
                            headers={"x-amz-request-id": uuid.uuid4().hex[:16]})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method, path = request.method, request.path
        self.stats.requests[method] += 1
        storm = self._active("storm", method, path)
        if storm is not None:
            storm.hits += 1
            self.stats.log.append((method, path, "storm"))
            await request.read()
            return self._error(request, storm.error)
        stall = self._active("stall", method, path)
        if stall is not None:
            await request.read()
            await self._hold_stall(request, stall)
        declared = request.content_length or 0
        shot = self._take(("slowdown", "internal", "denied", "reset", "reset_mid"), method, path, declared)
        if shot is None and request.can_read_body and declared:
            shot = self._take(("wrong_length",), method, path, declared)
        if shot is not None and shot.kind == "reset_mid":
            got = await request.content.readexactly(max(1, declared // 2))
            self._fire(shot, method, path, f"read {len(got)} of {declared} B of the body, then RST")
            self._abort(request)
        body = await self._read_body(request)
        strip: set[str] = set()
        if shot is not None:
            if shot.kind == "reset":
                self._fire(shot, method, path, f"read the whole body ({len(body)} B), then RST")
                self._abort(request)
            if shot.kind in _ERRORS:
                self._fire(shot, method, path, f"answered {_ERRORS[shot.kind][0]} {_ERRORS[shot.kind][1]}")
                return self._error(request, shot.kind)
            if shot.kind == "wrong_length":
                self._fire(shot, method, path, f"forwarded {len(body) // 2} of {len(body)} B upstream, "
                                               "without its checksum headers")
                body = body[: len(body) // 2]
                strip = {k for k in request.headers if k.lower().startswith("x-amz-checksum")
                         or k.lower() in ("x-amz-sdk-checksum-algorithm", "content-md5")}
        kind = self.plan.decide(method, path)
        if kind is not None:
            self.stats.faults[kind] += 1
            self.stats.log.append((method, path, kind))
            if kind == "reset":
                self._abort(request)
            return self._error(request, kind)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        if strip:
            headers = {k: v for k, v in headers.items() if k not in strip}
        assert self._session is not None
        async with self._session.request(method, self.upstream + request.rel_url.raw_path_qs,
                                         headers=headers, data=body if body else None,
                                         allow_redirects=False, skip_auto_headers=("Content-Type",)) as up:
            data = await up.read()
            status = up.status
            out_headers = {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
            upstream_length = up.headers.get("Content-Length")
        self.stats.forwarded += 1
        self.stats.log.append((method, path, str(status)))
        stall = self._active("stall", method, path)
        if stall is not None:  # a response in flight when the store stopped answering
            await self._hold_stall(request, stall)
        if method == "HEAD":
            # keep the object's Content-Length on HEAD (s3fs.info reads the size from it)
            resp = web.StreamResponse(status=status, headers=out_headers)
            if upstream_length is not None:
                resp.content_length = int(upstream_length)
            await resp.prepare(request)
            await resp.write_eof()
            return resp
        if method == "GET" and status in (200, 206):
            cut = self._take(("truncated", "wrong_length"), method, path, len(data))
            if cut is not None:
                half = len(data) // 2
                if cut.kind == "truncated":
                    if cut.strip_checksums:
                        out_headers = {k: v for k, v in out_headers.items()
                                       if not k.lower().startswith("x-amz-checksum")}
                    self._fire(cut, method, path, f"answered {status} with {half} of {len(data)} B and a "
                                                  "Content-Length to match" + (", no checksum headers"
                                                                               if cut.strip_checksums else ""))
                    return web.Response(status=status, body=data[:half], headers=out_headers)
                resp = web.StreamResponse(status=status, headers=out_headers)
                resp.content_length = len(data)
                await resp.prepare(request)
                await resp.write(data[:half])
                self._fire(cut, method, path, f"declared {len(data)} B, sent {half}, closed")
                await asyncio.sleep(0.2)  # let the client take in the half body first
                assert request.transport is not None
                request.transport.close()
                raise asyncio.CancelledError
        drip = self._active("drip", method, path)
        if drip is not None and len(data) > _DRIP_PIECE:
            drip.hits += 1
            resp = web.StreamResponse(status=status, headers=out_headers)
            resp.content_length = len(data)
            await resp.prepare(request)
            sent = 0
            while sent < len(data):
                w = self._active("drip", method, path)
                n = _DRIP_PIECE if w else len(data) - sent
                await resp.write(data[sent:sent + n])
                sent += n
                if w:
                    await asyncio.sleep(n / w.rate)
            await resp.write_eof()
            return resp
        return web.Response(status=status, body=data, headers=out_headers)


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
