"""Run the operator as a real process against a cluster, for tests, benchmarks and the demo.

Like ``kopf.testing.KopfRunner`` but in a separate process (``python -m kresume.operator``), started and
stopped by :class:`kresume.devtools._procs.ManagedProcess` (own process group, dies with its parent, a bounded
start that fails with the log tail). What the chart would install around it (RBAC, the webhook configuration)
comes from the chart itself: :mod:`kresume.devtools.chart`.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kresume import contract
from kresume.devtools import _procs


def tls_ready(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    """Readiness probe: True once ``host:port`` completes a TLS handshake (certificate not checked).

    kopf opens the webhook port only after scanning the cluster's resources, so this also means "kopf is up".
    """
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1) as sock, ctx.wrap_socket(sock):
                return True
        except OSError:
            return False

    return probe


class OperatorProcess:
    """``python -m kresume.operator *args`` with ``env`` on top of ``os.environ``; output appended to ``log``.

    ``env`` must reach the cluster (``KUBECONFIG``). :meth:`start` returns once the process listens on
    ``webhook_port`` and completes a TLS handshake there, within ``ready_timeout`` seconds, else raises
    :class:`kresume.devtools._procs.ProcessStartError` with the log tail.
    """

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log: Path, webhook_port: int,
                 ready_timeout: float = 60.0) -> None:
        self.args, self.env, self.log, self.webhook_port = list(args), dict(env), Path(log), webhook_port
        self._proc = _procs.ManagedProcess(
            "kresume-operator", [sys.executable, "-m", "kresume.operator", *self.args], self.log,
            port=webhook_port, ready=tls_ready(webhook_port), env=self.env, start_timeout_s=ready_timeout,
            stop_grace_s=15.0, poll_s=0.2,
        )

    @property
    def running(self) -> bool:
        """True while the operator process is alive."""
        return self._proc.running

    @property
    def pid(self) -> int | None:
        """The process id (None when not running)."""
        return self._proc.pid

    def start(self) -> OperatorProcess:
        """Spawn and wait until the webhook serves TLS; returns self."""
        self._proc.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group (kopf shuts down gracefully), SIGKILL after ``timeout`` s; idempotent."""
        self._proc.stop(grace_s=timeout)

    def tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the log."""
        return _procs.log_tail(self.log, lines) or "(no log)"

    def wait_serving(self, kubectl: Any, namespace: str, timeout: float = 90.0) -> float:
        """Create throwaway opted-in pods (``kresume.dev/run: probe``) until one comes back mutated:
        the webhook answers end to end (kopf scanned the cluster, the handler is warm). Returns the
        seconds it took. ``kubectl(*args, input=..., check=...)`` runs kubectl against the cluster."""
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < timeout:
            name = f"kresume-probe-{i}"
            i += 1
            probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": name, "namespace": namespace, "labels": {contract.LABEL_INJECT: "true"},
                "annotations": {contract.ANN_RUN: "probe"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]}}
            res = kubectl("create", "-o", "json", "-f", "-", input=json.dumps(probe), check=False)
            kubectl("delete", "pod", "-n", namespace, name, "--wait=false", check=False)
            if res.returncode == 0 and contract.ANN_INJECTED in (json.loads(res.stdout)["metadata"].get("annotations") or {}):
                return time.monotonic() - t0
            time.sleep(0.5)
        raise RuntimeError(f"webhook did not mutate a probe pod within {timeout} s:\n{self.tail()}")

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
