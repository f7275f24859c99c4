"""The native filesystem without fsspec at import (kresume.store.native, native_fsspec): its own copies of
fsspec's path rules agree with fsspec's, and fsspec's generic methods work through the view, on moto."""

from __future__ import annotations

import sys
import uuid

import pytest
from fsspec.spec import AbstractFileSystem

from _fixtures.objstores import SESSION_BUCKET
from kresume.store import native, native_options
from kresume.store.storage import open_fs


class _Fsspec(AbstractFileSystem):
    protocol = tuple(native_options.NATIVE_PROTOCOLS)
    root_marker = ""


PATHS = ["s3://b/k/x", "s3://b/k/x/", "b/k", "az://c/p/", "abfs://c/p/q", "s3a://b/x", "s3::b/x", "b", "", "/",
         "s3://", "gs://b/x", "b//double/"]


@pytest.mark.parametrize("path", PATHS)
def test_path_rules_match_fsspecs(path):
    assert native.NativeFileSystem._strip_protocol(path) == _Fsspec._strip_protocol(path)
    assert native.NativeFileSystem._parent(path) == _Fsspec._parent(path)
    assert native.NativeFileSystem._strip_protocol([path, path]) == _Fsspec._strip_protocol([path, path])


def test_generic_methods_come_from_the_fsspec_view(moto_s3):
    url = moto_s3.url(SESSION_BUCKET, f"native-view-{uuid.uuid4().hex[:8]}")
    fs, root = open_fs(url, moto_s3.storage_options)
    assert native.is_native(fs)
    fs.pipe_file(f"{root}/a/one.bin", b"1" * 10)
    fs.pipe_file(f"{root}/a/two.bin", b"22")
    assert fs.exists(f"{root}/a/one.bin") and not fs.exists(f"{root}/a/none.bin")
    assert fs.cat(f"{root}/a/two.bin") == b"22"  # AbstractFileSystem.cat over cat_file
    assert fs.isfile(f"{root}/a/one.bin") and fs.isdir(f"{root}/a")
    assert sorted(fs.glob(f"{root}/a/*.bin")) == [f"{root}/a/one.bin", f"{root}/a/two.bin"]
    assert fs.du(f"{root}/a") == 12
    f = fs.open(f"{root}/a/one.bin", "rb")  # obstore's reader (not a context manager, as before)
    assert f.read() == b"1" * 10
    f.close()
    assert "fsspec.spec" in sys.modules
    with pytest.raises(AttributeError):
        fs.no_such_method  # noqa: B018
