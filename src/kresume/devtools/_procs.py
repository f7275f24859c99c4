"""Run a local server as a child process: start, wait until ready, stop cleanly, fail loudly.

Generic helper for the dev launchers (object stores, control plane). One :class:`ManagedProcess`
owns one child started in its own session (process group), with stdout+stderr appended to a log
file. :meth:`ManagedProcess.start` waits, bounded, until a readiness probe passes *and* the child
itself listens on the expected port (so a stranger already holding the port is never mistaken for
our server), otherwise it kills the child and raises :class:`ProcessStartError` whose message ends
with the tail of the log. :meth:`ManagedProcess.stop` terminates the whole process group
(SIGTERM, then SIGKILL after a grace period) and is idempotent.

No child is left behind:
- ``stop()`` kills the process group, not just the leader;
- an ``atexit`` hook stops every child still running when the interpreter exits (normal exit,
  unhandled exception, Ctrl-C / KeyboardInterrupt);
- on Linux, children get ``PR_SET_PDEATHSIG`` = SIGKILL, so they die even if this process is
  killed with SIGKILL. Caveat (Linux semantics): the signal fires when the *thread* that started
  the child exits, so start long-lived servers from the main thread or a thread that outlives
  them, or pass ``die_with_parent=False``.

Example::

    proc = ManagedProcess("moto", [sys.executable, "-m", "moto.server", "-p", str(port)],
                          port=port, ready=http_ready(f"http://127.0.0.1:{port}/"))
    with proc:        # start() + stop()
        ...
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

__all__ = [
    "ExecutableNotFoundError",
    "ManagedProcess",
    "ProcessStartError",
    "free_ports",
    "http_ready",
    "log_tail",
]

LOG_TAIL_LINES = 40
"""Lines of the child's log quoted in start errors."""


class ProcessStartError(RuntimeError):
    """A child process could not be started, exited early, or did not become ready in time."""


class ExecutableNotFoundError(ProcessStartError, FileNotFoundError):
    """The program to run is not installed where we looked; the message says how to install it."""


def free_ports(count: int = 1, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct TCP ports on ``host`` that were free a moment ago.

    All sockets are held open until every port is picked, so the ports are distinct. There is an
    unavoidable race with other processes between this call and the child binding the port; the
    start check (the child must own the listening socket) turns a lost race into a clear error.
    The kernel picks from the ephemeral range (``/proc/sys/net/ipv4/ip_local_port_range``).
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_ready(url: str, *, ok_statuses: Callable[[int], bool] = lambda _status: True,
               timeout_s: float = 2.0) -> Callable[[], bool]:
    """Readiness probe: True once a GET of ``url`` returns an HTTP status accepted by ``ok_statuses``.

    By default any status (even 403/404) counts: the server is listening and speaking HTTP.
    Connection errors and timeouts mean "not yet".
    """

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                return ok_statuses(resp.status)
        except urllib.error.HTTPError as err:
            return ok_statuses(err.code)
        except (OSError, ValueError):
            return False

    return probe


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Last ``lines`` lines of a text log (decoding errors replaced); "" if it does not exist."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.stop(grace_s=3.0)


@dataclass(eq=False)
class ManagedProcess:
    """One child server process with a bounded, verified start and a clean stop.

    Fields are the launch recipe; call :meth:`start` / :meth:`stop` or use it as a context manager.
    Raises :class:`ExecutableNotFoundError` if ``argv[0]`` does not exist, and
    :class:`ProcessStartError` if the child exits or is not ready within ``start_timeout_s``.
    """

    name: str
    """Human name used in errors and logs, e.g. ``"seaweedfs"``."""
    argv: Sequence[str]
    """Program and arguments; ``argv[0]`` is a path or a name looked up on PATH."""
    log_path: Path
    """File receiving the child's stdout and stderr (appended)."""
    port: int | None = None
    """TCP port the child must be LISTENing on (checked via psutil); None skips the check."""
    ready: Callable[[], bool] | None = None
    """Readiness probe, polled every ``poll_s`` until True; None means "port is listening"."""
    cwd: Path | None = None
    """Working directory of the child (default: inherit)."""
    env: Mapping[str, str] | None = None
    """Extra environment variables on top of ``os.environ``."""
    start_timeout_s: float = 60.0
    """Bound on the wait for readiness, seconds."""
    stop_grace_s: float = 10.0
    """Seconds between SIGTERM and SIGKILL of the process group on stop."""
    poll_s: float = 0.1
    """Seconds between readiness probes."""
    die_with_parent: bool = True
    """Linux: SIGKILL the child when the starting thread exits (see module docstring)."""
    startup_seconds: float | None = field(default=None, init=False)
    """Measured wall time from spawn to ready, seconds (set by a successful start)."""
    _popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> ManagedProcess:
        """Spawn the child and block until it is ready; returns self.

        Raises ExecutableNotFoundError / ProcessStartError (message includes the log tail).
        """
        if self.running:
            return self
        exe = self.argv[0]
        if os.sep in exe:
            if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
                raise ExecutableNotFoundError(f"{self.name}: executable {exe!r} not found or not executable")
        elif not _which(exe):
            raise ExecutableNotFoundError(f"{self.name}: {exe!r} is not on PATH")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(  # noqa: S603 - argv built by our launchers
                list(self.argv),
                cwd=self.cwd,
                env={**os.environ, **(self.env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: killpg never hits us
                preexec_fn=_die_with_parent if self.die_with_parent and sys.platform == "linux" else None,
            )
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop(grace_s=2.0)
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self, grace_s: float | None = None) -> None:
        """Terminate the child's process group (SIGTERM, then SIGKILL after ``grace_s``); idempotent."""
        popen, self._popen = self._popen, None
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if popen is None:
            return
        stop_group(popen, self.stop_grace_s if grace_s is None else grace_s)

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state -----------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """PID of the child (process-group leader), or None when not started/stopped."""
        return self._popen.pid if self._popen else None

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has ended; None while it runs (or when not started / stopped)."""
        return self._popen.poll() if self._popen else None

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._popen is not None and self._popen.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Last lines of the child's log."""
        return log_tail(self.log_path, lines)

    # -- internals -------------------------------------------------------------------------------
    def _wait_ready(self, t0: float) -> None:
        assert self._popen is not None
        deadline = t0 + self.start_timeout_s
        while True:
            rc = self._popen.poll()
            if rc is not None:
                raise ProcessStartError(self._explain(f"exited with code {rc} before it was ready"))
            if self._owns_port() and (self.ready is None or self.ready()):
                # Re-check: a probe may have been answered by a stranger on a port we lost.
                if self._popen.poll() is None and self._owns_port():
                    return
            if time.monotonic() >= deadline:
                raise ProcessStartError(self._explain(f"not ready after {self.start_timeout_s:.0f} s"))
            time.sleep(self.poll_s)

    def _owns_port(self) -> bool:
        if self.port is None:
            return True
        assert self._popen is not None
        try:
            root = psutil.Process(self._popen.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return False
        for proc in procs:
            try:
                conns = proc.net_connections(kind="inet")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == self.port for c in conns):
                return True
        return False

    def _explain(self, what: str) -> str:
        where = f" (port {self.port})" if self.port is not None else ""
        tail = self.log_tail() or "<empty log>"
        return (f"{self.name}{where} {what}.\ncommand: {' '.join(map(str, self.argv))}\n"
                f"log: {self.log_path} (last lines below)\n{tail}")


def _which(name: str) -> str | None:
    return shutil.which(name)


def stop_group(popen: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the process group led by ``popen`` (started with ``start_new_session=True``), wait up to
    ``grace_s`` seconds for the leader, then SIGKILL the group so no grandchild survives."""
    _signal_group(popen.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=grace_s)
    _signal_group(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=5.0)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
