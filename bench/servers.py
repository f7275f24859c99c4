"""The S3 servers the benchmark starts on loopback, and how each tool reaches them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kresume.devtools.objstores import ObjectStoreServer, SeaweedFSServer
from kresume.devtools.objstores.rclone import RcloneS3Server

BUCKET = "bench"
LAUNCHERS: dict[str, type[ObjectStoreServer]] = {"seaweedfs": SeaweedFSServer, "rclone": RcloneS3Server}
"""Server name (``--servers``) → launcher. Both are disk-backed Go servers."""


@dataclass
class Target:
    """A running server with the bench bucket: ``name``, the launcher, and client settings."""

    name: str
    server: ObjectStoreServer

    @property
    def env(self) -> dict[str, str]:
        """Environment for every client subprocess: botocore (kresume, fsspec, s5cmd) and rclone's
        on-the-fly remote ``bench:`` (``RCLONE_CONFIG_BENCH_*``, rclone docs "Config file")."""
        e = dict(self.server.env)
        e.update({
            "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": e["AWS_ACCESS_KEY_ID"],
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": e["AWS_SECRET_ACCESS_KEY"],
            "RCLONE_CONFIG_BENCH_ENDPOINT": self.server.endpoint,
            "RCLONE_CONFIG_BENCH_REGION": e["AWS_DEFAULT_REGION"],
        })
        return e

    @property
    def storage_options(self) -> dict[str, Any]:
        return self.server.storage_options

    def url(self, path: str) -> str:
        """``s3://bench/<path>``."""
        return self.server.url(BUCKET, path)

    def filesystem(self) -> Any:
        return self.server.filesystem()


def start(name: str, tmp_root: Path | None = None) -> Target:
    """Start server ``name`` with its data under ``tmp_root`` and create the bench bucket.

    ``tmp_root`` defaults to the launchers' (``$KRESUME_OBJSTORES_TMP`` or the system temp): keep it
    short, SeaweedFS puts unix sockets there and their paths must stay under 108 bytes.

    Raises ``KeyError`` for an unknown name; launcher errors (not installed, not ready) propagate.
    """
    server = LAUNCHERS[name](tmp_root=tmp_root, start_timeout_s=120.0)
    server.start()
    try:
        server.create_bucket(BUCKET)
    except BaseException:
        server.stop()
        raise
    return Target(name, server)
