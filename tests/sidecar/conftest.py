"""Sidecar process helpers: start ``python -m kresume.sidecar`` as a real process, read its JSON
logs, signal it; a moto S3 run store for it (from the shared objstores fixtures)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from _fixtures.objstores import make_store_base
from kresume.devtools import _procs
from kresume.store.runstore import RunStore

HERE = Path(__file__).parent
WRITERS = HERE / "sidecar_writers.py"


class SidecarProc:
    """One sidecar process; logs (JSON lines) in ``log_path``, stdout (summary) in ``out_path``."""

    def __init__(self, watch: Path, run_url: str, options: dict, env: dict, workdir: Path, *args: str,
                 prefix: tuple[str, ...] = (), launcher: tuple[str, ...] = ()):
        self.log_path = workdir / f"sidecar-{time.monotonic_ns()}.log"
        self.out_path = self.log_path.with_suffix(".out")
        full_env = {**os.environ, **env, "KRESUME_STORAGE_OPTIONS": json.dumps(options),
                    "KRESUME_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
        argv = [*prefix, *(launcher or (sys.executable, "-m", "kresume.sidecar")), "--watch", str(watch),
                "--run-url", run_url,
                "--metrics-port", "0", "--settle-seconds", "2", *args]
        self._err = open(self.log_path, "w")
        self._out = open(self.out_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err, env=full_env)

    def logs(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"msg": line, "level": "raw"})
        return out

    def wait_log(self, pred, timeout: float = 60.0) -> dict:
        """First log record satisfying ``pred``; fails with the log tail on timeout or exit."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for rec in self.logs():
                if pred(rec):
                    return rec
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no matching log line; sidecar rc={self.proc.poll()}; tail:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        return _procs.log_tail(self.log_path, n)

    @property
    def port(self) -> int:
        return int(self.wait_log(lambda r: "port" in r, 30)["port"])

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> tuple[int, str]:
        """Send ``sig`` and wait; returns (exit code, stdout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self._err.close()
        self._out.close()
        return rc, self.out_path.read_text()

    def exited(self, timeout: float = 60.0) -> tuple[int, str]:
        """Wait for the sidecar to exit by itself, after the test signalled it once, and return (exit code, stdout).
        Never signals: a second SIGTERM ends the sidecar at once (the contract), which would race the behaviour
        under test on a loaded machine."""
        rc = self.proc.wait(timeout)
        return rc, self.stop()[1]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture
def moto_run(objstore_pool, tmp_path):
    """``(url, options, env, RunStore)`` of a fresh run on the session's moto S3 server."""
    base = make_store_base("s3-moto", objstore_pool, tmp_path)
    url = base.join("ns", "run") + "/"
    return url, dict(base.options), dict(base.env), RunStore.open(url, base.options)


@pytest.fixture
def start_sidecar(tmp_path):
    """Factory ``start(watch, run, *flags, prefix=(), launcher=()) -> SidecarProc``; ``prefix`` runs the sidecar
    under a command (``setpriv …``), ``launcher`` replaces ``python -m kresume.sidecar`` (a script that patches
    a fault in first); every process is killed at teardown."""
    procs: list[SidecarProc] = []

    def start(watch: Path, run, *args: str, prefix: tuple[str, ...] = (), launcher: tuple[str, ...] = ()) -> SidecarProc:
        url, options, env, _ = run
        p = SidecarProc(watch, url, options, env, tmp_path, *args, prefix=prefix, launcher=launcher)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()


def _run_writer(*args: str, timeout: float = 240.0) -> dict:
    """Run ``sidecar_writers.py`` (a real trainer) to completion; returns its JSON report."""
    out = subprocess.run([sys.executable, str(WRITERS), *args], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _wait_committed(store: RunStore, names: set[str], timeout: float = 60.0) -> dict[str, list]:
    """Wait until a manifest exists for every name; returns name → manifests."""
    end = time.monotonic() + timeout
    while True:
        by: dict[str, list] = {}
        for m in store.list():
            by.setdefault(m.name, []).append(m)
        if names <= set(by) or time.monotonic() > end:
            assert names <= set(by), f"missing commits: {sorted(names - set(by))}; have {sorted(by)}"
            return by
        time.sleep(0.25)


@pytest.fixture
def run_writer():
    """``run_writer(kind, out, *args) -> report``: a real trainer process run to completion."""
    return _run_writer


@pytest.fixture
def wait_committed():
    """``wait_committed(store, names, timeout) -> {name: [Manifest]}``."""
    return _wait_committed
