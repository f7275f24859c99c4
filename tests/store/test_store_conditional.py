"""Conditional writes on every backend the suite runs (store/conditional.py; docs/store-protocol.md
"Pointer moves"): what each real server enforces, checked one request at a time."""

from __future__ import annotations

import uuid

from kresume.store import conditional, errors, native, storage


def _fs(store_base):
    fs, root = storage.open_fs(store_base.join(f"cond-{uuid.uuid4().hex[:8]}"), store_base.options)
    return fs, root


def test_create_only_writes_once_and_keeps_the_first(store_base):
    fs, root = _fs(store_base)
    path = f"{root}/manifests/a.json"
    assert conditional.read_versioned(fs, path) == (None, None)
    assert conditional.create_if_absent(fs, path, b'{"first": 1}') is True
    assert conditional.create_if_absent(fs, path, b'{"second": 2}') is False
    data, version = conditional.read_versioned(fs, path)
    assert data == b'{"first": 1}' and version


def test_replace_if_version_refuses_a_stale_version(store_base):
    fs, root = _fs(store_base)
    path = f"{root}/latest.json"
    assert conditional.create_if_absent(fs, path, b"v1")
    _, v1 = conditional.read_versioned(fs, path)
    assert conditional.replace_if_version(fs, path, b"v2", v1) is True
    data, v2 = conditional.read_versioned(fs, path)
    assert data == b"v2" and v2 != v1
    assert conditional.replace_if_version(fs, path, b"v3-stale", v1) is False  # the stale writer loses
    assert conditional.read_versioned(fs, path) == (b"v2", v2)
    assert conditional.replace_if_version(fs, path, b"v3", v2) is True
    assert conditional.read_versioned(fs, path)[0] == b"v3"


def test_replace_of_a_deleted_object_is_refused_not_recreated(store_base):
    fs, root = _fs(store_base)
    path = f"{root}/latest.json"
    assert conditional.create_if_absent(fs, path, b"v1")
    _, v1 = conditional.read_versioned(fs, path)
    fs.rm(path)
    fs.invalidate_cache()
    assert conditional.replace_if_version(fs, path, b"v2", v1) is False
    assert conditional.read_versioned(fs, path) == (None, None)


def test_every_suite_backend_has_atomic_preconditions(store_base):
    fs, _ = _fs(store_base)
    expected = {"file": "file", "memory": "memory", "s3-moto": "s3", "s3-seaweedfs": "s3", "gcs": "gcs",
                "azure": "azure", "s3-fsspec": "s3", "azure-fsspec": "azure"}[store_base.backend]
    assert conditional.backend(fs) == expected
    # s3:// and az:// run through the native client unless the fsspec backend is asked for
    assert native.is_native(fs) == (store_base.backend in ("s3-moto", "s3-seaweedfs", "azure"))
    assert conditional.guarantee(fs).atomic


def test_the_fallback_gives_the_same_answers_without_atomicity(tmp_path):
    """A filesystem kresume has no precondition path for (fsspec's DirFileSystem wrapping a local
    folder is one) still answers create/replace correctly when nobody races."""
    import fsspec

    fs = fsspec.filesystem("dir", path=str(tmp_path), fs=fsspec.filesystem("memory"))
    assert conditional.backend(fs) == "fallback" and not conditional.guarantee(fs).atomic
    assert conditional.create_if_absent(fs, "x/latest.json", b"v1")
    assert not conditional.create_if_absent(fs, "x/latest.json", b"other")
    _, v1 = conditional.read_versioned(fs, "x/latest.json")
    assert conditional.replace_if_version(fs, "x/latest.json", b"v2", v1)
    assert not conditional.replace_if_version(fs, "x/latest.json", b"v3", v1)


def test_precondition_errors_are_recognised_in_each_form():
    class ClientError(Exception):
        def __init__(self, code):
            super().__init__(code)
            self.response = {"Error": {"Code": code}}

    wrapped = OSError(22, "pre-conditions did not hold")
    wrapped.__cause__ = ClientError("PreconditionFailed")
    assert errors.is_precondition_failed(wrapped)
    assert errors.is_precondition_failed(FileExistsError("x"))
    assert not errors.is_precondition_failed(OSError(22, "invalid"))
    missing = FileNotFoundError("gone")
    missing.__cause__ = ClientError("NoSuchKey")
    assert errors.is_missing_object(missing)
    bucket = FileNotFoundError("gone")
    bucket.__cause__ = ClientError("NoSuchBucket")
    assert not errors.is_missing_object(bucket)
