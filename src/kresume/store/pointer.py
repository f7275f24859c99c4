"""Moving the run's pointer (``latest.json``): forward only, with a conditional write and re-read
(docs/store-protocol.md "Pointer moves"; DESIGN.md invariant 1).

Each try reads the pointer with its version (:func:`kresume.store.conditional.read_versioned`),
decides with the pure :func:`kresume.store.selection.pointer_decision`, and writes with
``If-Match: <version>`` (create-only when absent). A writer that loses the race re-reads and
decides again, so two committers of one run can never move the pointer backwards or lose the
newer of their commits, on every backend whose :func:`~kresume.store.conditional.guarantee` is
atomic. The pointer stays a hint: resolution returns the newest valid manifest whatever it says.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kresume import contract
from kresume.store import clock, conditional, reading, selection
from kresume.store.manifest import Manifest, ManifestInvalid, Pointer

if TYPE_CHECKING:
    from kresume.store.runstore import RunStore

logger = logging.getLogger("kresume.store")

MOVE_TRIES = 16
"""Read-decide-write rounds before giving up on one move. Each lost round means another writer
moved the pointer in between (to something at least as new, by the same rule); 16 rounds ride out
16 racing committers. Giving up leaves the commit intact (the manifest is the commit)."""


def document(store: RunStore, manifest: Manifest) -> bytes:
    """The pointer document naming ``manifest`` (JSON, :class:`kresume.store.manifest.Pointer`)."""
    return Pointer(manifest.id, store.checkpoint_url(manifest), manifest.step, clock.now_iso()).to_json()


def _usable(store: RunStore, checkpoint_id: str) -> bool:
    """The pointer's current target is committed, whole and not bad-marked."""
    return reading.load_valid(store, checkpoint_id) is not None and checkpoint_id not in reading.bad_ids(store)


def move(store: RunStore, manifest: Manifest) -> bool:
    """Move the pointer to ``manifest`` unless it names a newer usable checkpoint.

    Returns ``True`` when the pointer names ``manifest`` afterwards (moved now, or already there),
    ``False`` when it was left on a newer usable checkpoint or every try lost its race (logged).
    Raises ``StoreError`` when the store fails (after retries).
    """
    fs, path = store.fs, store._path(contract.POINTER_NAME)
    for attempt in range(MOVE_TRIES):
        data, version = store._retry(lambda: conditional.read_versioned(fs, path), contract.POINTER_NAME)
        current = None
        if data is not None:
            try:
                current = Pointer.from_json(data).checkpoint
            except ManifestInvalid:
                current = None  # an unreadable pointer is replaced (under its version)
        decision = selection.pointer_decision(current, manifest.id)
        if decision == selection.KEEP:
            return True
        if decision == selection.CHECK and current is not None and _usable(store, current):
            return False
        doc = document(store, manifest)
        if version is None:
            written = store._retry(lambda: conditional.create_if_absent(fs, path, doc), contract.POINTER_NAME)
        else:
            written = store._retry(lambda v=version: conditional.replace_if_version(fs, path, doc, v),
                                   contract.POINTER_NAME)
        if written:
            return True
        logger.debug("%s: pointer changed under us (try %d/%d); re-reading", store.url, attempt + 1, MOVE_TRIES)
    logger.warning("%s: pointer not moved to %s after %d contended tries; resolution still finds it",
                   store.url, manifest.id, MOVE_TRIES)
    return False
