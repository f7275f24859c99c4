"""One obstore client per bucket and configuration, shared by every run that uses them.

A run's :class:`~kresume.store.runstore.RunStore` is a path inside a bucket, but an obstore store
(``S3Store``/``AzureStore``) is a whole HTTP client: its own connection pool, TLS set-up and credential
state, ~110 KiB of memory before its first request (measured: 2,000 stores of one bucket raised a
process's RSS by 221 MiB, ``bench/RESULTS.md`` "Operator at cluster scale"), plus the idle keep-alive
connections it holds. The operator keeps a store handle per run, so with one client per handle its
memory and open sockets grew with the number of runs; with this cache they grow with the number of
distinct buckets and credentials (a few per policy).

obstore stores are thread-safe (``object_store`` clients are ``Send + Sync``; every call is independent),
so runs in different threads share one. Per-operation state (deadlines, the run's root path) lives in
:class:`~kresume.store.native.NativeFileSystem`, not in the store. A rotated credential is another
configuration, hence another client; the least recently used are dropped beyond :data:`LIMIT`.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from kresume.store.native_options import NativeConfig

LIMIT = 64
"""Clients kept (distinct bucket + configuration pairs); the least recently used beyond it are dropped
(runs still holding one keep it alive until they let go)."""

_CLIENTS: OrderedDict[str, Any] = OrderedDict()
_LOCK = threading.Lock()


#: Prefixes of the environment variables obstore reads itself when it builds a store (credentials, region,
#: endpoint, web identity: ``object_store``'s ``AmazonS3Builder::from_env`` / ``MicrosoftAzureBuilder::from_env``).
ENV_PREFIXES = ("AWS_", "AZURE_")


def key(cfg: NativeConfig, env: Mapping[str, str] = os.environ) -> str:
    """The cache key of a configuration: every field (bucket, store settings, client options, credential
    chain) and the ``AWS_*``/``AZURE_*`` environment obstore reads itself, as canonical JSON."""
    seen = {k: v for k, v in env.items() if k.startswith(ENV_PREFIXES)}
    return json.dumps([asdict(cfg), seen], sort_keys=True, default=str)


def shared(cfg: NativeConfig, build: Callable[[NativeConfig], Any]) -> Any:
    """The client of ``cfg``: the cached one, else ``build(cfg)`` (cached). Raises what ``build`` raises
    (nothing is cached then)."""
    k = key(cfg)
    with _LOCK:
        client = _CLIENTS.get(k)
        if client is not None:
            _CLIENTS.move_to_end(k)
            return client
    client = build(cfg)  # outside the lock: building may resolve credentials
    with _LOCK:
        client = _CLIENTS.setdefault(k, client)  # a concurrent build of the same key: keep the first
        _CLIENTS.move_to_end(k)
        while len(_CLIENTS) > LIMIT:
            _CLIENTS.popitem(last=False)
    return client


def clear() -> None:
    """Drop every cached client (tests; a process that changes its environment's credentials)."""
    with _LOCK:
        _CLIENTS.clear()
