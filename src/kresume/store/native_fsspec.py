"""An fsspec ``AbstractFileSystem`` view of a :class:`kresume.store.native.NativeFileSystem`.

The native filesystem implements the primitives kresume's store uses without importing fsspec; a caller that
wants any other fsspec method (``open`` in text mode, ``cat``, ``glob``, ``walk``, ``du``, ``get`` …) gets it
from this view, whose primitives are the native filesystem's own (the same store, the same deadline), so the
generic methods behave as they would on a subclass of ``AbstractFileSystem``.
"""

from __future__ import annotations

from typing import Any

_CLASS: list[type] = []


def view(native: Any) -> Any:
    """An ``AbstractFileSystem`` over ``native`` (a ``NativeFileSystem``); imports fsspec."""
    if not _CLASS:
        _CLASS.append(_make_class())
    return _CLASS[0](native)


def _make_class() -> type:
    from fsspec.spec import AbstractFileSystem

    from kresume.store import native_options

    class NativeView(AbstractFileSystem):  # type: ignore[misc]
        """fsspec's generic methods over a native filesystem's primitives."""

        protocol = tuple(native_options.NATIVE_PROTOCOLS)
        root_marker = ""
        cachable = False

        def __init__(self, fs: Any) -> None:
            super().__init__()
            self.fs = fs
            self.protocol = fs.protocol  # type: ignore[misc]

        def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
            return self.fs.ls(path, detail=detail, **kwargs)

        def find(self, path: str, maxdepth: int | None = None, withdirs: bool = False, detail: bool = False,
                 **kwargs: Any) -> Any:
            return self.fs.find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)

        def info(self, path: str, **kwargs: Any) -> Any:
            return self.fs.info(path, **kwargs)

        def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
            return self.fs.cat_file(path, start=start, end=end, **kwargs)

        def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
            self.fs.pipe_file(path, value, mode=mode, **kwargs)

        def rm_file(self, path: str) -> None:
            self.fs.rm_file(path)

        def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
            self.fs.rm(path, recursive=recursive, maxdepth=maxdepth)

        def _open(self, path: str, mode: str = "rb", block_size: Any = None, autocommit: bool = True,
                  cache_options: Any = None, **kwargs: Any) -> Any:
            return self.fs._open(path, mode, block_size=block_size, autocommit=autocommit,
                                 cache_options=cache_options, **kwargs)

        def size(self, path: str) -> int:
            return self.fs.size(path)

        def invalidate_cache(self, path: str | None = None) -> None:
            """No listing cache is kept."""

        def makedirs(self, path: str, exist_ok: bool = False) -> None:
            """Object stores have no folders."""

        def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
            """Folders need nothing."""

    return NativeView
