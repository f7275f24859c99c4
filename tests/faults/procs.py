"""The sidecar and the CLI as real processes for fault sessions: JSON logs read back, signals, exit times."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parents[1]


def child_env(options: Mapping[str, Any], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a kresume child: storage options, JSON logs, ``tests/`` importable (for faults.clocked)."""
    path = os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, **(extra or {}), "KRESUME_STORAGE_OPTIONS": json.dumps(options),
            "KRESUME_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def module_argv(module: str, args: Sequence[str], clock_file: Path | None = None) -> list[str]:
    """``python -m MODULE ARGS`` (``MODULE`` may be ``pkg.mod:function``), or the same under
    :mod:`faults.clocked` when ``clock_file`` is given."""
    if clock_file is not None:
        return [sys.executable, "-m", "faults.clocked", str(clock_file), module, *args]
    if ":" in module:
        name, func = module.split(":", 1)
        return [sys.executable, "-c", f"import sys; sys.argv[0] = 'kresume'; from {name} import {func}; {func}()",
                *args]
    return [sys.executable, "-m", module, *args]


class Sidecar:
    """``python -m kresume.sidecar`` on ``watch`` → ``run_url``; stderr (JSON log lines) in ``log``,
    stdout (the summary line) in ``out``. ``flags`` are sidecar flags."""

    def __init__(self, watch: Path, run_url: str, options: Mapping[str, Any], workdir: Path, flags: Sequence[str] = (),
                 clock_file: Path | None = None, env: Mapping[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        stamp = time.monotonic_ns()
        self.log = workdir / f"sidecar-{stamp}.log"
        self.out = workdir / f"sidecar-{stamp}.out"
        argv = module_argv("kresume.sidecar", ["--watch", str(watch), "--run-url", run_url, "--metrics-port", "-1",
                                               "--settle-seconds", "2", "--rescan-seconds", "2", *flags], clock_file)
        self._err_f, self._out_f = open(self.log, "w"), open(self.out, "w")
        self.proc = subprocess.Popen(argv, stdout=self._out_f, stderr=self._err_f, env=child_env(options, env),
                                     start_new_session=True)
        self.exit_seconds: float | None = None
        """Seconds from :meth:`terminate`'s signal to the exit, once it exited."""

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records so far (non-JSON lines as ``{"msg": line, "level": "raw"}``)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                rec = {"msg": line, "level": "raw"}
            out.append(rec if isinstance(rec, dict) else {"msg": line, "level": "raw"})
        return out

    def wait_log(self, pred: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any] | None:
        """The first record matching ``pred`` within ``timeout`` s; None on timeout or exit."""
        end = time.monotonic() + timeout
        while True:
            for rec in self.records():
                if pred(rec):
                    return rec
            if self.proc.poll() is not None or time.monotonic() > end:
                return None
            time.sleep(0.1)

    def watching(self, timeout: float = 90.0) -> bool:
        """True once it logged that it watches (its SIGTERM handler is installed by then)."""
        return self.wait_log(lambda r: str(r.get("msg", "")).startswith("watching"), timeout) is not None

    def committed(self) -> dict[str, str]:
        """checkpoint id → unit name of every commit it logged ("committed X as ID")."""
        return {r["id"]: r["unit"] for r in self.records()
                if str(r.get("msg", "")).startswith("committed ") and "id" in r and "unit" in r}

    def count(self, pred: Callable[[str], bool]) -> int:
        return sum(1 for r in self.records() if pred(str(r.get("msg", ""))))

    def terminate(self, timeout: float, sig: int = signal.SIGTERM) -> int | None:
        """Send ``sig``, wait up to ``timeout`` s; the exit code, or None when it is still running (then
        it is killed, and :attr:`exit_seconds` stays None)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
            self.exit_seconds = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            rc = None
            self.kill()
        self._close()
        return rc

    def kill(self) -> None:
        """SIGKILL its process group (idempotent)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(30)
        self._close()

    def _close(self) -> None:
        for f in (self._err_f, self._out_f):
            if not f.closed:
                f.close()

    def summary(self) -> str:
        """The summary line it printed ('' when none)."""
        lines = self.out.read_text(errors="replace").strip().splitlines() if self.out.exists() else []
        return next((ln for ln in reversed(lines) if ln.startswith("kresume sidecar:")), "")

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def summary_counts(line: str) -> dict[str, str]:
    """``key=value`` pairs of a summary line (``committed``, ``abandoned``, ``bytes``, ``newest_step``)."""
    return dict(p.split("=", 1) for p in line.split() if "=" in p)


def run_cli(args: Sequence[str], options: Mapping[str, Any], *, clock_file: Path | None = None,
            timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """The ``kresume`` command (``kresume.cli:main``) with ARGS, the storage options in env."""
    return subprocess.run(module_argv("kresume.cli:main", args, clock_file), capture_output=True, text=True,
                          timeout=timeout, env=child_env(options))
