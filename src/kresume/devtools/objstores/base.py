"""The launcher base class shared by every local object-store server (see the package docstring)."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kresume.devtools import _procs

# Common subset of the S3, GCS and Azure container naming rules: 3-63 characters, lowercase
# letters, digits and single hyphens, starting and ending with a letter or digit.
_BUCKET_RE = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def check_gcsfs_env() -> None:
    """Raise RuntimeError if gcsfs was imported with its experimental HNS/zonal mode on.

    gcsfs reads ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` once, at import; with it on (its default)
    every call against an emulator stalls 50-110 s (../shared/objstores/README.md).
    """
    gcsfs = sys.modules.get("gcsfs")
    if gcsfs is not None and gcsfs.GCSFileSystem.__name__ == "ExtendedGcsFileSystem":
        raise RuntimeError(
            "gcsfs was imported with GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT on; calls to a GCS emulator "
            "would stall. Set GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false before importing gcsfs "
            "(import kresume.devtools.objstores first)."
        )


_LIVE: weakref.WeakSet[ObjectStoreServer] = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    """Stop servers still running at interpreter exit (incl. Ctrl-C) and remove their temp folders.

    Registered after ``_procs``' own hook, so it runs first (atexit is LIFO).
    """
    for server in list(_LIVE):
        server.stop()


def _check_bucket_name(name: str) -> None:
    if not _BUCKET_RE.match(name):
        raise ValueError(
            f"bucket/container name {name!r} is invalid: use 3-63 lowercase letters, digits and "
            "single hyphens, starting and ending with a letter or digit (S3/GCS/Azure rules)"
        )


@dataclass(eq=False)
class ObjectStoreServer:
    """Base launcher: one server process on ``127.0.0.1:<port>`` with a private temp folder.

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``start`` raises
    ``kresume.devtools._procs.ExecutableNotFoundError`` (message says how to install) or
    ``ProcessStartError`` (not ready within ``start_timeout_s``; message has the log tail).
    ``stop`` kills the process group and deletes the temp folder; it is idempotent.
    """

    name: ClassVar[str] = "object-store"
    protocol: ClassVar[str] = ""
    """fsspec protocol of URLs built by :meth:`url`."""

    port: int | None = None
    """Port to listen on; None picks a free one at start."""
    start_timeout_s: float = 60.0
    """Bound on the wait until the server answers, seconds."""
    tmp_root: Path | None = None
    """Parent of the temp folder (data, log); default ``$KRESUME_OBJSTORES_TMP`` or the system temp."""
    tmpdir: Path | None = field(default=None, init=False)
    """The server's private folder while running (deleted by stop)."""
    _proc: _procs.ManagedProcess | None = field(default=None, init=False, repr=False)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> ObjectStoreServer:
        """Start the server and wait until it answers; returns self. Idempotent while running."""
        if self._proc is not None and self._proc.running:
            return self
        exe = self._executable()  # before any side effect: a missing binary raises here
        root = self.tmp_root or os.environ.get("KRESUME_OBJSTORES_TMP") or None
        if root:
            Path(root).mkdir(parents=True, exist_ok=True)
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"kresume-{self.name}-", dir=root))
        _LIVE.add(self)
        try:
            if self.port is None:
                self.port = _procs.free_ports(1)[0]
            self._proc = _procs.ManagedProcess(
                name=self.name,
                argv=[*exe, *self._args()],
                log_path=self.tmpdir / "server.log",
                port=self.port,
                ready=self._ready_probe(),
                cwd=self.tmpdir,
                env=self._server_env(),
                start_timeout_s=self.start_timeout_s,
            )
            self._proc.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (whole process group) and remove its temp folder; idempotent."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is not None:
            proc.stop()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self) -> ObjectStoreServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.running

    @property
    def pid(self) -> int:
        """Pid of the server process, which leads its own process group (tests freeze a store with
        ``os.killpg(server.pid, SIGSTOP)``); raises RuntimeError before start."""
        if self._proc is None or self._proc.pid is None:
            raise RuntimeError(f"{self.name} server is not running; call start() first")
        return self._proc.pid

    @property
    def startup_seconds(self) -> float | None:
        """Measured seconds from spawn until the server answered (None before start)."""
        return self._proc.startup_seconds if self._proc else None

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the server's log ("" when not started)."""
        return self._proc.log_tail(lines) if self._proc else ""

    # -- client side -----------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``; raises RuntimeError before start."""
        if self.port is None or not self.running:
            raise RuntimeError(f"{self.name} server is not running; call start() first")
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec storage options (a fresh dict) that reach this server without global env."""
        raise NotImplementedError

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point the same fsspec client at this server (child processes)."""
        raise NotImplementedError

    def url(self, bucket: str, path: str = "") -> str:
        """``<protocol>://<bucket>[/<path>]``; ``path`` is relative (leading "/" stripped)."""
        path = path.lstrip("/")
        return f"{self.protocol}://{bucket}" + (f"/{path}" if path else "")

    def filesystem(self) -> Any:
        """An fsspec filesystem for this server (``fsspec.url_to_fs`` with :attr:`storage_options`)."""
        import fsspec

        fs, _ = fsspec.url_to_fs(self.url("x-x-x"), **self.storage_options)
        return fs

    def create_bucket(self, name: str) -> str:
        """Create bucket/container ``name`` if missing; return its URL.

        Uses ``fs.mkdir``: gcsfs and adlfs ``makedirs(bucket)`` create nothing (README, rechecked
        in tests/objstores). Raises ValueError for a name the clouds reject.
        """
        _check_bucket_name(name)
        fs = self.filesystem()
        if not fs.exists(name):
            fs.mkdir(name)
        fs.invalidate_cache()
        return self.url(name)

    # -- per server ------------------------------------------------------------------------------
    def _executable(self) -> list[str]:
        raise NotImplementedError

    def _args(self) -> list[str]:
        raise NotImplementedError

    def _ready_probe(self) -> Any:
        return _procs.http_ready(f"http://127.0.0.1:{self.port}/", ok_statuses=lambda s: s < 500)

    def _server_env(self) -> dict[str, str]:
        return {"TMPDIR": str(self.tmpdir)}


def venv_tool(name: str, package: str) -> list[str]:
    """A console script installed next to this interpreter, else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return [str(here)]
    found = shutil.which(name)
    if found:
        return [found]
    raise _procs.ExecutableNotFoundError(
        f"{name!r} not found next to {sys.executable} nor on PATH; install it with "
        f"`pip install -e '.[dev]'` (package {package})"
    )
