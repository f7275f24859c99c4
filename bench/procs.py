"""Run one command as a child process and measure it exactly: wall time, CPU time and peak RSS.

Peak RSS and CPU come from ``os.wait4`` (the kernel's ``ru_maxrss``, KiB on Linux, and
``ru_utime + ru_stime`` of the child), so there is no polling error. ``ru_maxrss`` is the largest
resident set of the child *or* any descendant it waited for.

Linux carries the high-water mark across ``fork`` + ``exec``: a child forked from this (large)
Python process starts with our RSS as its peak. So the command is started by a tiny trampoline
(``python -I -S``, ~10 MiB) that forks it and reports the child's ``wait4`` usage on a pipe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


PYCACHE = Path(__file__).resolve().parents[1] / ".cache" / "bench-pycache"
"""Where the measured tools' bytecode is cached (under the repository's ignored ``.cache``: shared by every bench
run, never left in a row's work folder)."""


def bytecode_as_installed(cache_dir: os.PathLike[str] | str = PYCACHE) -> None:
    """Let the Python tools this process starts cache their bytecode, as an installed kresume has it.

    The image installs kresume from its wheel, and pip byte-compiles what it installs, so a pod's ``kresume
    restore`` loads ``.pyc`` files. Here kresume is an editable install of ``src/`` and the environment may set
    ``PYTHONDONTWRITEBYTECODE=1`` (this machine's does): every measured ``kresume`` would then compile its
    ~40 modules from source first, a start-up cost (~0.03-0.05 CPU-s, bench/RESULTS.md "CLI start-up") no
    deployment pays. The variable is dropped and bytecode goes to ``cache_dir`` (``PYTHONPYCACHEPREFIX``, so
    the source tree stays clean); the first run of each tool fills it (every row has warm-up or upload rounds
    first). Changes ``os.environ`` of this process, which children inherit.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = os.fspath(cache_dir)


class CommandFailed(RuntimeError):
    """A measured command exited non-zero; the message has its argv and the tail of its output."""


@dataclass(frozen=True)
class Sample:
    """One measured run: ``seconds`` wall, ``cpu_seconds`` user+sys, ``max_rss`` bytes."""

    seconds: float
    cpu_seconds: float
    max_rss: int


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
        timeout_s: float = 1800.0) -> Sample:
    """Run ``argv`` to completion (output captured, kept for errors) and measure it.

    Raises
    ------
    CommandFailed
        Non-zero exit or timeout (the child is killed).
    """
    rfd, wfd = os.pipe()
    t0 = time.perf_counter()
    try:
        with subprocess.Popen([sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(wfd), *map(str, argv)],  # noqa: S603
                              env={**os.environ, **(env or {})}, cwd=cwd, pass_fds=(wfd,),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
            os.close(wfd)
            wfd = -1
            out = _read_all(proc, t0 + timeout_s)  # the pipe must not fill up
            proc.wait()
        seconds = time.perf_counter() - t0
        with os.fdopen(rfd, "rb") as r:
            rfd = -1
            report = r.read()
    finally:
        for fd in (rfd, wfd):
            if fd >= 0:
                os.close(fd)
    if proc.returncode != 0 or not report:
        tail = out.decode("utf-8", "replace")[-2000:]
        raise CommandFailed(f"exit {proc.returncode}: {' '.join(map(str, argv))}\n{tail}")
    usage = json.loads(report)
    return Sample(seconds, usage["cpu"], usage["maxrss_kib"] * 1024)


_TRAMPOLINE = """
import os, sys, json, signal
fd = int(sys.argv[1])
pid = os.fork()
if pid == 0:
    os.close(fd)
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda s, _f: os.kill(pid, s))
_, status, ru = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
if code == 0:
    os.write(fd, json.dumps({"cpu": ru.ru_utime + ru.ru_stime, "maxrss_kib": ru.ru_maxrss}).encode())
sys.exit(code if code >= 0 else 128 - code)
"""


def _read_all(proc: subprocess.Popen[bytes], deadline: float) -> bytes:
    assert proc.stdout is not None
    chunks: list[bytes] = []
    os.set_blocking(proc.stdout.fileno(), True)
    while True:
        if time.perf_counter() > deadline:
            proc.kill()
            raise CommandFailed(f"timed out: {' '.join(map(str, proc.args))}")  # type: ignore[arg-type]
        data = proc.stdout.read1(1 << 16)
        if not data:
            return b"".join(chunks)
        chunks.append(data)
        if sum(map(len, chunks)) > 1 << 20:  # keep only the tail of chatty tools
            chunks = [b"".join(chunks)[-65536:]]


class Running:
    """A long-running command started by :func:`start` (through the trampoline).

    ``proc.stderr`` is a pipe of the command's stderr (stdout is discarded). :meth:`stop` sends
    SIGTERM (forwarded to the command), waits, and returns its :class:`Sample` (peak RSS, CPU).
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None, cwd: str | None) -> None:
        self._rfd, wfd = os.pipe()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(wfd), *map(str, argv)],
            env={**os.environ, **(env or {})}, cwd=cwd, pass_fds=(wfd,), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(wfd)
        self.argv = list(argv)

    def stop(self, timeout_s: float = 120.0) -> Sample:
        """SIGTERM, wait up to ``timeout_s`` (then SIGKILL), return the measured sample.

        Raises CommandFailed when it exits non-zero or had to be killed."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        seconds = time.perf_counter() - self.t0
        with os.fdopen(self._rfd, "rb") as r:
            report = r.read()
        if self.proc.returncode != 0 or not report:
            raise CommandFailed(f"exit {self.proc.returncode}: {' '.join(self.argv)}")
        usage = json.loads(report)
        return Sample(seconds, usage["cpu"], usage["maxrss_kib"] * 1024)


def start(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None) -> Running:
    """Start ``argv`` in the background, measured like :func:`run` once :meth:`Running.stop` ends it."""
    return Running(argv, env, cwd)
