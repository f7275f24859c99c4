"""A forwarding HTTP proxy that records when each request arrived: store requests per admission.

The bench points the operator's storage endpoint at it; every request is forwarded unchanged to
the real server (moto) and recorded as ``(time.perf_counter() at arrival, method, path)``, so the
requests one admission made are those that arrived while its pod create was in flight (pods are
created one at a time; background reads of the operator that fall in the window count too, which
is why the bench reports the median).
"""

from __future__ import annotations

import asyncio
import threading
import time

import aiohttp
from aiohttp import web

_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
        "transfer-encoding", "upgrade", "content-length", "host"}


class CountingProxy:
    """``CountingProxy(upstream).start()``; ``endpoint``; ``arrivals``; ``count(t0, t1)``; ``stop()``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.arrivals: list[tuple[float, str, str]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="count-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, t0: float, t1: float) -> int:
        """Requests that arrived in ``[t0, t1]`` (``time.perf_counter()`` seconds)."""
        return sum(1 for t, _, _ in list(self.arrivals) if t0 <= t <= t1)

    def start(self) -> CountingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
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
        self.arrivals.append((time.perf_counter(), request.method, request.path))
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        assert self._session is not None
        async with self._session.request(request.method, self.upstream + request.rel_url.raw_path_qs, headers=headers,
                                         data=body or None, allow_redirects=False,
                                         skip_auto_headers=("Content-Type",)) as up:
            data = await up.read()
            out = {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
            if request.method == "HEAD":
                resp = web.StreamResponse(status=up.status, headers=out)
                if "Content-Length" in up.headers:
                    resp.content_length = int(up.headers["Content-Length"])
                await resp.prepare(request)
                await resp.write_eof()
                return resp
            return web.Response(status=up.status, body=data, headers=out)
