"""Fixtures every test may use."""

from __future__ import annotations

import fsspec
import google_crc32c
import pytest


def file_crc32c(path: str, block: int = 8 * 2**20) -> str:
    """CRC-32C of a local file as the manifest writes it (8 lowercase hex digits), read in pieces."""
    crc = 0
    with open(path, "rb", buffering=0) as f:
        while data := f.read(block):
            crc = google_crc32c.extend(crc, data)
    return f"{crc:08x}"


@pytest.fixture(autouse=True)
def _clear_fsspec_caches():
    """fsspec caches filesystem instances per process (fsspec's own conftest does the same)."""
    yield
    for cls in list(fsspec.registry.values()) + [fsspec.AbstractFileSystem]:
        cls.clear_instance_cache()
    from fsspec.implementations.memory import MemoryFileSystem

    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs.clear()
    MemoryFileSystem.pseudo_dirs.append("")
