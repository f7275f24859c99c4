"""Checkpoints a process has already validated: their manifests, kept for the life of the store handle.

A manifest is immutable once written (its key holds a fresh checkpoint id; invariant 3), and a
checkpoint's data objects are only ever deleted after its manifest (retention, invariant 3). So
once a process has read a manifest and found every object it lists with its recorded size, the
answer stays true for as long as the manifest is still listed (an alias's target checkpoint is kept
whole while a manifest aliasing it is: docs/store-protocol.md "Aliases"). Resolution
(:func:`kresume.store.reading.resolve`) therefore validates only ids it has not seen, and only among
the ids of a fresh listing of ``manifests/`` with the bad marks of a fresh listing of ``bad/``, read
in the same round trip: a checkpoint pruned or marked bad by another process is never taken from
here. This process's own prunes and bad marks also drop their ids (:meth:`Known.forget`).
"""

from __future__ import annotations

import threading

from kresume.store.manifest import Manifest


class Known:
    """Thread-safe map checkpoint id → validated :class:`Manifest` (bounded: the newest ``limit`` ids)."""

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._items: dict[str, Manifest] = {}

    def get(self, checkpoint_id: str) -> Manifest | None:
        """The validated manifest of ``checkpoint_id``, or None when it was not validated here."""
        with self._lock:
            return self._items.get(checkpoint_id)

    def put(self, manifest: Manifest) -> None:
        """Remember ``manifest`` as validated; beyond ``limit`` the oldest ids (by id order) go."""
        with self._lock:
            self._items[manifest.id] = manifest
            if len(self._items) > self.limit:
                for cid in sorted(self._items)[: len(self._items) - self.limit]:
                    del self._items[cid]

    def forget(self, checkpoint_id: str | None = None) -> None:
        """Drop one id (a bad mark or a prune by this process), or all of them (``None``)."""
        with self._lock:
            if checkpoint_id is None:
                self._items.clear()
            else:
                self._items.pop(checkpoint_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
