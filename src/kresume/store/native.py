"""The native client for s3:// and az:// runs: an fsspec filesystem over obstore (Rust ``object_store``).

Why: measured side by side with s3fs/aiobotocore in one run (bench/RESULTS.md "Client cost"),
obstore starts in a fraction of the time (no aiobotocore import, no botocore session), signs
without hashing payloads over plain http, and moves each GB for a fraction of the CPU. fsspec
stays the interface: :class:`NativeFileSystem` is an ``AbstractFileSystem`` with the primitives
kresume's store uses (``ls``, ``find``, ``info``, ``cat_file``, ``pipe_file``, ``rm``, ``open``),
and :mod:`kresume.store.transfer` / :mod:`kresume.store.download` use its obstore store directly
for the data path. Every other URL, and any configuration :mod:`kresume.store.native_options`
cannot translate exactly, opens the fsspec backend as before.

Selection (:func:`choose_client`): storage option ``kresume_client`` (``native`` | ``fsspec``),
else environment ``KRESUME_STORE_CLIENT``, else ``native`` where it applies.

Errors leave this module as fsspec backends raise them (builtin ``OSError`` subclasses, so
:mod:`kresume.store.errors` maps them): missing object or bucket → ``FileNotFoundError``; 401/403
→ ``PermissionError``; connection failures and timeouts → ``ConnectionError``; anything else as
obstore raised it (its message carries the HTTP status and the store's error code).
gs:// is not served natively: fake-gcs-server (the GCS server here) rejects object_store's XML-API
uploads ("invalid uploadType"), so that path could not be tested against a real server.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import importlib.util
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from kresume.store import clients, native_options
from kresume.store.native_options import NativeConfig, Untranslatable

logger = logging.getLogger("kresume.store")

OPTION = "kresume_client"
"""Storage option selecting the client of a run: ``native`` (default where it applies) or ``fsspec``."""
ENV = "KRESUME_STORE_CLIENT"
"""Environment variable with the same meaning; the storage option wins."""
CLIENTS = ("native", "fsspec")

#: obstore's own request retries (connection errors, 5xx, timeouts of safe requests), kept short:
#: kresume's :func:`kresume.store.storage.retrying` retries whole operations with full jitter.
RETRY = {"max_retries": 3, "retry_timeout": timedelta(seconds=60),
         "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5), "base": 2}}
#: Request timeouts unless storage options set them: obstore's default 30 s per request would cut a
#: 32 MiB ranged GET below ~1 MB/s; connections still fail fast.
CLIENT_DEFAULTS = {"timeout": "300s", "connect_timeout": "10s"}


def choose_client(options: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> str:
    """``native`` or ``fsspec`` (see module doc). Raises ``ValueError`` naming the setting for any other value."""
    value = str(options.get(OPTION) or env.get(ENV) or "native").strip().lower()
    if value not in CLIENTS:
        where = f"storage option {OPTION}" if options.get(OPTION) else f"{ENV}"
        raise ValueError(f"{where}={value!r}: use one of {', '.join(CLIENTS)}")
    return value


def open_native(url: str, options: Mapping[str, Any], env: Mapping[str, str] = os.environ, *,
                deadline: Any = None) -> tuple[Any, str] | None:
    """``(NativeFileSystem, root path)`` for ``url``, or ``None`` when the native path does not apply
    (other protocol, ``fsspec`` selected, or an option without an exact equivalent: logged at INFO once
    per key). Makes no request."""
    if choose_client(options, env) != "native" or "://" not in url:
        return None
    if importlib.util.find_spec("obstore") is None:  # an install without it (older extras): the fsspec backend
        if "obstore" not in _LOGGED:
            _LOGGED.add("obstore")
            logger.info("obstore is not installed: using the fsspec backend (pip install 'kresume[s3]' adds it)")
        return None
    # fsspec's own configuration (FSSPEC_<PROTOCOL>_<KEY>, ~/.config/fsspec/*.json) applies as it
    # would to the fsspec backend; the caller's options win.
    protocol = url.split("://", 1)[0]
    opts = {**fsspec_config().get(protocol, {}), **{k: v for k, v in options.items() if k != OPTION}}
    try:
        cfg = native_options.translate(url, opts, env)
    except Untranslatable as exc:
        if exc.key not in _LOGGED:
            _LOGGED.add(exc.key)
            logger.info("%s: using the fsspec backend (%s)", url.split("://", 1)[0], exc)
        return None
    _, _, path = native_options.split_url(url)
    fs = NativeFileSystem(protocol, cfg, clients.shared(cfg, _build_store), deadline)  # one client per bucket
    return fs, f"{cfg.bucket}/{path}".rstrip("/")


_LOGGED: set[str] = set()


def fsspec_config() -> Mapping[str, Any]:
    """``fsspec.config.conf`` (protocol → options), without importing fsspec when there is none to read.

    fsspec fills it at import from ``FSSPEC_<PROTOCOL>[_<KEY>]`` environment variables and the ``*.ini`` /
    ``*.json`` files of ``FSSPEC_CONFIG_DIR`` (default ``~/.config/fsspec``) (``fsspec/config.py``). With none of
    those it is empty, and the native client skips fsspec's import (a large share of a one-shot command's
    start-up: bench/RESULTS.md "CLI start-up").
    """
    import sys

    if "fsspec.config" not in sys.modules:
        named = any(k.startswith("FSSPEC_") and k != "FSSPEC_CONFIG_DIR" for k in os.environ)
        folder = os.environ.get("FSSPEC_CONFIG_DIR", os.path.join(os.path.expanduser("~"), ".config/fsspec"))
        try:
            files = any(n.endswith((".ini", ".json")) for n in os.listdir(folder))
        except OSError:
            files = False
        if not named and not files:
            return {}
    import fsspec.config

    return fsspec.config.conf


def _build_store(cfg: NativeConfig) -> Any:
    from obstore.store import AzureStore, S3Store

    client = {**CLIENT_DEFAULTS, **cfg.client_options}
    if cfg.kind == "s3":
        provider = _BotocoreCredentials(cfg.profile) if cfg.use_botocore_chain else None
        return S3Store(cfg.bucket, config=cfg.config, client_options=client, retry_config=RETRY,
                       credential_provider=provider)
    provider = None
    if cfg.use_azure_default_credential:
        from azure.identity import DefaultAzureCredential
        from obstore.auth.azure import AzureCredentialProvider

        provider = AzureCredentialProvider(credential=DefaultAzureCredential())
    return AzureStore(cfg.bucket, config=cfg.config, client_options=client, retry_config=RETRY,
                      credential_provider=provider)


class _BotocoreCredentials:
    """obstore credential provider resolving with botocore's chain (what s3fs uses): shared files,
    profiles, SSO, ``credential_process``, assume-role, container and instance metadata."""

    def __init__(self, profile: str | None) -> None:
        self._profile = profile
        self._creds: Any = None

    def __call__(self) -> dict[str, Any]:
        if self._creds is None:
            import botocore.session

            self._creds = botocore.session.Session(profile=self._profile).get_credentials()
            if self._creds is None:
                raise PermissionError("NoCredentialsError: unable to locate credentials (botocore chain)")
        frozen = self._creds.get_frozen_credentials()
        expiry = getattr(self._creds, "_expiry_time", None)
        return {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key,
                "token": frozen.token, "expires_at": expiry}


# Errors leave as fsspec backends raise them (module doc): kresume.store.native_errors.
from kresume.store.native_errors import ServiceError, errors_mapped, mapped  # noqa: E402  (re-exported)

POLL_SECONDS = 0.25
"""How often a call bounded by a deadline re-checks it (a deadline may be set or moved while it waits)."""
_HELPERS: cf.ThreadPoolExecutor | None = None
_HELPERS_LOCK = threading.Lock()


def _helpers() -> cf.ThreadPoolExecutor:
    global _HELPERS
    with _HELPERS_LOCK:
        if _HELPERS is None:
            _HELPERS = cf.ThreadPoolExecutor(64, thread_name_prefix="kresume-native")
        return _HELPERS


# ------------------------------------------------------------------------------------- filesystem
class NativeFileSystem:
    """fsspec filesystem of ONE bucket/container over an obstore store (module doc).

    Paths are fsspec's ``bucket/key`` (protocol optional). ``store`` is the obstore store;
    :meth:`key` turns a path into its key. Listings are never cached (kresume's callers ask for
    fresh ones); ``invalidate_cache`` is accepted and does nothing.

    It implements fsspec's ``AbstractFileSystem`` primitives itself without importing fsspec (a one-shot
    ``kresume restore`` then never pays fsspec's import); any other ``AbstractFileSystem`` method
    (``open``, ``cat``, ``glob``, ``walk`` …) is served by an fsspec view over these primitives, made on first
    use (:func:`kresume.store.native_fsspec.view`).
    """

    protocol: tuple[str, ...] = tuple(native_options.NATIVE_PROTOCOLS)
    root_marker = ""
    sep = "/"
    cachable = False
    async_impl = False

    def __init__(self, url_protocol: str, cfg: NativeConfig, store: Any, deadline: Any = None) -> None:
        self.protocol = (url_protocol,)
        self.native = cfg
        self.store = store
        self.bucket = cfg.bucket
        self.deadline = deadline
        """A :class:`kresume.store.deadline.Deadline` every request must end by, or None."""
        self._view: Any = None

    def __getattr__(self, name: str) -> Any:
        """Any other ``AbstractFileSystem`` attribute, from the fsspec view (module doc of native_fsspec)."""
        if name.startswith("__") or name == "_view":
            raise AttributeError(name)
        if self.__dict__.get("_view") is None:
            from kresume.store import native_fsspec

            self._view = native_fsspec.view(self)
        return getattr(self._view, name)

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        """fsspec's ``AbstractFileSystem.open`` (text modes, compression) over :meth:`_open`."""
        return self.__getattr__("open")(path, mode, **kwargs)

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        """``AbstractFileSystem._strip_protocol``: any native protocol's ``<p>://`` or ``<p>::`` prefix and
        trailing slashes removed (a list: each item)."""
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = os.fspath(path) if not isinstance(path, str) else path
        for protocol in cls.protocol:
            if path.startswith(protocol + "://"):
                path = path[len(protocol) + 3:]
            elif path.startswith(protocol + "::"):
                path = path[len(protocol) + 2:]
        path = path.rstrip("/")
        return path or cls.root_marker

    @classmethod
    def _parent(cls, path: str) -> str:
        """``AbstractFileSystem._parent``: the path without its last component."""
        path = cls._strip_protocol(path)
        if "/" in path:
            return cls.root_marker + path.rsplit("/", 1)[0].lstrip(cls.root_marker)
        return cls.root_marker

    def exists(self, path: str, **kwargs: Any) -> bool:
        """``AbstractFileSystem.exists``: whether :meth:`info` answers (any error means no)."""
        try:
            self.info(path, **kwargs)
            return True
        except Exception:  # noqa: BLE001 - fsspec's own rule
            return False

    # --- time budget -----------------------------------------------------------------------------
    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` (an obstore call), ending by :attr:`deadline`.

        obstore's blocking calls cannot be interrupted, so with a deadline the call runs in a helper
        thread and the caller stops waiting when the deadline passes (re-checked every
        :data:`POLL_SECONDS`, so a deadline set while waiting — SIGTERM — counts), raising
        ``DeadlineExceeded`` (transient: :func:`kresume.store.storage.retrying` reports the budget).
        The abandoned request finishes or fails in its thread; the caller has already moved on (the
        sidecar exits at its deadline). An answer renews an idle deadline.
        """
        deadline = self.deadline
        if deadline is None:
            return fn(*args, **kwargs)
        from kresume.store.deadline import DeadlineExceeded

        if deadline.expired():
            raise DeadlineExceeded(f"no answer before {deadline.what}")
        future = _helpers().submit(fn, *args, **kwargs)
        while True:
            left = deadline.remaining()
            if left is not None and left <= 0:
                future.cancel()
                raise DeadlineExceeded(f"no answer before {deadline.what}")
            try:
                result = future.result(timeout=POLL_SECONDS if left is None else min(left, POLL_SECONDS))
            except cf.TimeoutError:
                continue
            deadline.touch()
            return result

    def iterate(self, stream: Any) -> Iterator[Any]:
        """The items of an obstore stream, each ``next`` bounded like :meth:`call`."""
        while True:
            try:
                yield self.call(next, stream)
            except StopIteration:
                return

    # --- paths -----------------------------------------------------------------------------------
    def key(self, path: str) -> str:
        """The object key of ``path`` (``bucket/a/b`` → ``a/b``). Raises ``ValueError`` for another bucket."""
        stripped = self._strip_protocol(path)
        bucket, _, key = stripped.partition("/")
        if bucket != self.bucket:
            raise ValueError(f"path {path!r} is outside bucket {self.bucket!r}")
        return key.strip("/")

    def _name(self, key: str) -> str:
        return f"{self.bucket}/{key}" if key else self.bucket

    def split_path(self, path: str) -> tuple[str, str, None]:
        """``(bucket, key, None)`` like s3fs's ``split_path``."""
        return self.bucket, self.key(path), None

    def invalidate_cache(self, path: str | None = None) -> None:
        """No listing cache is kept."""

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Object stores have no folders: nothing to make."""

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Folders need nothing; buckets are created outside kresume."""

    # --- listings --------------------------------------------------------------------------------
    def _entry(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        return {"name": self._name(meta["path"]), "size": int(meta["size"]), "type": "file",
                "e_tag": meta.get("e_tag"), "version": meta.get("version"), "last_modified": meta.get("last_modified")}

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """Objects and "folders" directly under ``path``; ``FileNotFoundError`` when there are none."""
        import obstore

        key = self.key(path)
        with errors_mapped():
            result = self.call(obstore.list_with_delimiter, self.store, key or None)
        out = [self._entry(o) for o in result["objects"]]
        out += [{"name": self._name(p.rstrip("/")), "size": 0, "type": "directory"} for p in result["common_prefixes"]]
        if not out:
            raise FileNotFoundError(path)
        return out if detail else sorted(e["name"] for e in out)

    def find(self, path: str, maxdepth: int | None = None, withdirs: bool = False, detail: bool = False,
             **kwargs: Any) -> Any:
        """Every object under ``path`` (one flat, paginated listing), ``{name: info}`` with ``detail``."""
        import obstore

        key = self.key(path)
        out: dict[str, dict[str, Any]] = {}
        with errors_mapped():
            for batch in self.call(obstore.list, self.store, key or None, chunk_size=1000):
                for meta in batch:
                    entry = self._entry(meta)
                    out[entry["name"]] = entry
        return out if detail else sorted(out)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """An object's ``{name, size, type, e_tag, version, last_modified}``; a prefix with objects is a
        directory; ``FileNotFoundError`` otherwise (a missing bucket included)."""
        import obstore

        key = self.key(path)
        if key:
            try:
                with errors_mapped():
                    return self._entry(self.call(obstore.head, self.store, key))
            except FileNotFoundError:
                pass
        with errors_mapped():
            result = self.call(obstore.list_with_delimiter, self.store, key or None)
        if result["objects"] or result["common_prefixes"] or not key:
            return {"name": self._name(key), "size": 0, "type": "directory"}
        raise FileNotFoundError(path)

    # --- small objects ---------------------------------------------------------------------------
    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        """The object's bytes (or ``[start, end)``)."""
        import obstore

        key = self.key(path)
        with errors_mapped():
            if start is None and end is None:
                return self.call(obstore.get, self.store, key).bytes().to_bytes()
            size = None if end is not None and (start or 0) >= 0 and end >= 0 else self.info(path)["size"]
            lo = (start or 0) if (start or 0) >= 0 else size + start  # type: ignore[operator]
            hi = end if end is not None and end >= 0 else (size if end is None else size + end)  # type: ignore[operator]
            return self.call(obstore.get_range, self.store, key, start=lo, end=hi).to_bytes() if hi > lo else b""

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """One PUT of ``value`` (``mode="create"``: create-only, ``FileExistsError`` when present)."""
        import obstore

        with errors_mapped():
            self.call(obstore.put, self.store, self.key(path), value, use_multipart=False,
                        mode="create" if mode == "create" else "overwrite")

    # --- deletes ---------------------------------------------------------------------------------
    def rm_file(self, path: str) -> None:
        import obstore

        with errors_mapped():
            self.call(obstore.delete, self.store, self.key(path))

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Delete ``path`` (with ``recursive``, every object under it; batched); absent is no error."""
        import obstore

        paths = [path] if isinstance(path, str) else list(path)
        keys: list[str] = []
        for p in paths:
            key = self.key(p)
            if key:
                keys.append(key)
            if recursive:
                keys += [self.key(n) for n in self.find(p)]
        for i in range(0, len(keys), 1000):
            batch = sorted(set(keys[i:i + 1000]))
            try:
                with errors_mapped():
                    self.call(obstore.delete, self.store, batch)
            except FileNotFoundError:  # Azure answers 404 for a missing blob; S3 does not
                for key in batch:
                    with contextlib.suppress(FileNotFoundError), errors_mapped():
                        self.call(obstore.delete, self.store, key)

    # --- streams ---------------------------------------------------------------------------------
    def _open(self, path: str, mode: str = "rb", block_size: Any = None, autocommit: bool = True,
              cache_options: Any = None, **kwargs: Any) -> Any:
        """A file object: ``rb`` reads ``block_size`` bytes per ranged GET; ``wb`` buffers ``block_size``
        bytes, then uploads in parts of that size (obstore's buffered reader/writer)."""
        import obstore

        size = int(block_size or 8 * 2**20)
        with errors_mapped():
            if mode == "rb":
                return self.call(obstore.open_reader, self.store, self.key(path), buffer_size=size)
            if mode == "wb":
                return self.call(obstore.open_writer, self.store, self.key(path), buffer_size=size, max_concurrency=2)
        raise ValueError(f"mode {mode!r} is not supported (rb, wb)")

    def size(self, path: str) -> int:
        return int(self.info(path)["size"])


def is_native(fs: Any) -> bool:
    """True for a :class:`NativeFileSystem`."""
    return isinstance(fs, NativeFileSystem)
