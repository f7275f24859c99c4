"""Prometheus metrics and the ``/metrics``, ``/healthz``, ``/readyz`` HTTP endpoints.

Names follow Prometheus conventions (``_total`` counters, base units: bytes, seconds).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "kresume_sidecar"


class Metrics:
    """The sidecar's metrics in their own registry (no process-global state)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.bytes_uploaded = Counter(f"{PREFIX}_bytes_uploaded", "Bytes uploaded to the store", registry=r)
        self.commits = Counter(f"{PREFIX}_commits", "Checkpoints committed", registry=r)
        self.failures = Counter(f"{PREFIX}_failures", "Checkpoints not committed, by reason", ["reason"],
                                registry=r)
        self.commit_lag = Histogram(
            f"{PREFIX}_commit_lag_seconds", "Seconds from a checkpoint's last write to its commit",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600), registry=r)
        self.inflight_bytes = Gauge(f"{PREFIX}_inflight_bytes", "Bytes of checkpoints being uploaded", registry=r)
        self.pending = Gauge(f"{PREFIX}_pending_checkpoints", "Complete checkpoints waiting to upload", registry=r)
        self.last_step = Gauge(f"{PREFIX}_last_committed_step", "Step of the newest committed checkpoint",
                               registry=r)
        self.last_step.set(-1)
        self.parts_recorded = Counter(f"{PREFIX}_parts_recorded", "This rank's parts of multi-rank checkpoints "
                                      "recorded in the store", registry=r)
        self.parts_waiting = Gauge(f"{PREFIX}_parts_waiting", "Multi-rank checkpoints this rank has recorded its "
                                   "part of that are not committed yet (waiting for other ranks)", registry=r)
        self.cache_puts = Counter(f"{PREFIX}_cache_puts", "Committed checkpoints kept in the node-local cache, by "
                                  "method (clone, link, copy, rw)", ["method"], registry=r)
        self.cache_put_failures = Counter(f"{PREFIX}_cache_put_failures", "Node-local cache writes that failed",
                                          registry=r)


class Health:
    """Liveness (the main loop beat recently) and readiness (store opened, first scan done)."""

    def __init__(self, stale_after: float) -> None:
        self.stale_after = stale_after
        self.beat_at = time.monotonic()
        self.ready = False
        self.reason = "starting"

    def beat(self) -> None:
        """Called by the main loop on every turn."""
        self.beat_at = time.monotonic()

    def alive(self) -> bool:
        """True when the last beat is younger than ``stale_after`` seconds."""
        return time.monotonic() - self.beat_at < self.stale_after


def serve(metrics: Metrics, health: Health, host: str, port: int) -> ThreadingHTTPServer:
    """Start the HTTP server on a daemon thread; returns it (``server_address`` has the port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = health.alive()
                self._send(200 if ok else 503, b"ok\n" if ok else b"main loop stalled\n")
            elif path == "/readyz":
                self._send(200 if health.ready else 503,
                           b"ready\n" if health.ready else health.reason.encode() + b"\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    # A short poll interval: ``shutdown()`` at exit waits up to one interval (0.5 s by default).
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="kresume-metrics",
                     daemon=True).start()
    return server
