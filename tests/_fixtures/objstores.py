"""Object-store fixtures: real local servers, started lazily once per session.

- ``store_base``: parametrised over the backends in ``KRESUME_TEST_BACKENDS`` (comma list; default
  all of :data:`BACKENDS`); yields a :class:`StoreBase` with a fresh, unique base URL and the
  fsspec storage options for it. Remote bases live under one session bucket per server; the base
  is removed after the test. Usage::

      def test_x(store_base):
          fs, path = fsspec.url_to_fs(store_base.url, **store_base.options)

- ``moto_s3``, ``seaweedfs_s3``, ``fake_gcs``, ``azurite``: the session's running launchers
  (``kresume.devtools.objstores``), for tests that need one specific server (sidecar, operator).

A server that cannot start makes the requesting tests ERROR with its log tail; it is never
skipped. A start failure is remembered, so later tests fail at once instead of waiting again.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kresume.devtools import objstores  # first: sets GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT before gcsfs loads

BACKENDS = ["file", "memory", "s3-seaweedfs", "s3-moto", "gcs", "azure", "s3-fsspec"]
"""The default store backends; the remote ones are keys of ``objstores.SERVERS`` or of :data:`FSSPEC_CLIENT`."""
FSSPEC_CLIENT = {"s3-fsspec": "s3-seaweedfs", "azure-fsspec": "azure"}
"""Backends that reach a server through the fsspec backend (s3fs, adlfs) instead of kresume's native
client (storage option ``kresume_client: fsspec``); ``azure-fsspec`` only when named in
``KRESUME_TEST_BACKENDS`` (the generic fsspec path is also covered by ``gcs``)."""
SESSION_BUCKET = "kresume-test"
"""Bucket/container created once per server; every ``store_base`` is a unique prefix in it."""
ENV_BACKENDS = "KRESUME_TEST_BACKENDS"


def selected_backends(value: str | None = None) -> list[str]:
    """Backends named in ``KRESUME_TEST_BACKENDS`` (comma list, order kept); all when unset/empty.

    Raises ValueError naming the unknown entries and the valid ones.
    """
    raw = os.environ.get(ENV_BACKENDS, "") if value is None else value
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names:
        return list(BACKENDS)
    unknown = [n for n in names if n not in BACKENDS and n not in FSSPEC_CLIENT]
    if unknown:
        raise ValueError(f"{ENV_BACKENDS}: unknown backend(s) {unknown}; choose from {BACKENDS + ['azure-fsspec']}")
    return names


@dataclass(frozen=True)
class StoreBase:
    """A fresh, unique place in one store backend for one test.

    ``url`` has no trailing slash (e.g. ``s3://kresume-test/t-1a2b3c4d5e6f``, ``file:///tmp/…``);
    ``options`` are the fsspec storage options (a dict you may pass as ``**options``); ``env``
    holds the same settings as environment variables for child processes (sidecar under test);
    ``server`` is the running launcher (None for file/memory).
    """

    backend: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    server: objstores.ObjectStoreServer | None = None

    def join(self, *parts: str) -> str:
        """``url`` joined with relative path parts by "/"."""
        return "/".join([self.url, *(p.strip("/") for p in parts if p.strip("/"))])

    def fs(self) -> tuple[Any, str]:
        """``fsspec.url_to_fs(self.url, **self.options)``: (filesystem, path of the base)."""
        import fsspec

        return fsspec.url_to_fs(self.url, **{k: v for k, v in self.options.items() if k != "kresume_client"})


class ServerPool:
    """Starts each named server at most once and stops them all at :meth:`close`."""

    def __init__(self) -> None:
        self._servers: dict[str, objstores.ObjectStoreServer] = {}
        self._failures: dict[str, BaseException] = {}

    def get(self, backend: str) -> objstores.ObjectStoreServer:
        """The running server for ``backend`` (key of ``objstores.SERVERS``) with the session bucket."""
        if backend in self._servers:
            return self._servers[backend]
        if backend in self._failures:
            raise RuntimeError(f"{backend} server failed to start earlier in this session") from self._failures[
                backend
            ]
        server = objstores.SERVERS[backend]()
        try:
            server.start()
            server.create_bucket(SESSION_BUCKET)
        except BaseException as err:
            server.stop()
            self._failures[backend] = err
            raise
        self._servers[backend] = server
        return server

    def close(self) -> None:
        """Stop every started server (process groups killed, temp folders removed)."""
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def objstore_pool() -> Iterator[ServerPool]:
    """Session pool of object-store servers; each starts on first use."""
    pool = ServerPool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session")
def moto_s3(objstore_pool: ServerPool) -> objstores.ObjectStoreServer:
    """Running moto S3 server (strict semantics; keep objects <= 200 MiB)."""
    return objstore_pool.get("s3-moto")


@pytest.fixture(scope="session")
def seaweedfs_s3(objstore_pool: ServerPool) -> objstores.ObjectStoreServer:
    """Running SeaweedFS S3 server (on disk; big files)."""
    return objstore_pool.get("s3-seaweedfs")


@pytest.fixture(scope="session")
def fake_gcs(objstore_pool: ServerPool) -> objstores.ObjectStoreServer:
    """Running fake-gcs-server (GCS JSON API, memory backend)."""
    return objstore_pool.get("gcs")


@pytest.fixture(scope="session")
def azurite(objstore_pool: ServerPool) -> objstores.ObjectStoreServer:
    """Running Azurite blob server."""
    return objstore_pool.get("azure")


def make_store_base(backend: str, pool: ServerPool, tmp_path: Path) -> StoreBase:
    """A fresh StoreBase for ``backend`` (file: a folder under ``tmp_path``; memory: a unique root)."""
    unique = f"t-{uuid.uuid4().hex[:12]}"
    if backend == "file":
        root = tmp_path / "store" / unique
        root.mkdir(parents=True)
        return StoreBase(backend, root.as_uri())
    if backend == "memory":
        return StoreBase(backend, f"memory://kresume/{unique}")
    if backend in FSSPEC_CLIENT:
        server = pool.get(FSSPEC_CLIENT[backend])
        return StoreBase(backend, server.url(SESSION_BUCKET, unique), {**server.storage_options, "kresume_client": "fsspec"},
                         {**server.env, "KRESUME_STORE_CLIENT": "fsspec"}, server)
    server = pool.get(backend)
    return StoreBase(backend, server.url(SESSION_BUCKET, unique), server.storage_options, server.env, server)


@pytest.fixture(params=selected_backends())
def store_base(request: pytest.FixtureRequest, objstore_pool: ServerPool, tmp_path: Path) -> Iterator[StoreBase]:
    """A fresh unique base URL + storage options, once per selected backend (see module docstring)."""
    base = make_store_base(request.param, objstore_pool, tmp_path)
    yield base
    if base.server is not None:
        fs, path = base.fs()
        try:
            fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
