"""Fixtures every test may use."""

from __future__ import annotations

import fsspec
import pytest


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
