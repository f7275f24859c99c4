"""Bad marks and retention: which committed checkpoints stay, and deleting the rest safely.

The decision is pure (:mod:`kresume.store.retention`); this module reads the state it needs and
deletes in the order invariant 3 requires: a checkpoint's manifest first (it is no longer
committed), then its data objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from kresume import contract
from kresume.store import clock, commit, layout, reading, retention, transfer

if TYPE_CHECKING:
    from kresume.store.runstore import RunStore


def mark_bad(store: RunStore, checkpoint_id: str, reason: str) -> str | None:
    """Mark a committed checkpoint bad: resolution skips it from now on. When the pointer named
    it, the pointer is moved to the newest valid checkpoint (returned; None when it did not
    move), so readers of ``latest.json`` stop landing on it."""
    doc = json.dumps({"checkpoint": checkpoint_id, "reason": reason, "at": clock.now_iso()}).encode()
    store._retry(lambda: transfer.write_small(store.fs, store._path(layout.bad_key(checkpoint_id)), doc),
                 layout.bad_key(checkpoint_id))
    store.known.forget(checkpoint_id)
    return commit.repair_pointer(store)


def prune(store: RunStore, keep_last: int, keep_every: int | None = None, *, protect: Iterable[str] = (),
          dry_run: bool = False, orphans_older_than: float | None = None) -> retention.PrunePlan:
    """Delete old checkpoints by the rules of :mod:`kresume.store.retention`.

    A multi-rank checkpoint is one step: its manifest, data and part records go together.
    Only checkpoints not marked bad count toward ``keep_last``/``keep_every``; bad-marked ones,
    the pointer's target and the checkpoint :func:`kresume.store.reading.latest` resolves to are
    never deleted. Each deletion removes the manifest first (so the checkpoint is no longer
    committed), then its data objects. With ``orphans_older_than`` (seconds), data folders without
    a manifest whose commit started longer ago than that (interrupted commits) are deleted too and
    listed in the plan's ``delete`` with reason ``orphan``.
    """
    pointer, ids, bad = reading.read_state(store)
    found = reading.resolve(store, pointer, ids, bad)
    steps = {cid: (k.step if k.step >= 0 else None) for cid in ids if (k := layout.parse_checkpoint_id(cid))}
    plan = retention.plan_prune(steps, keep_last=keep_last, keep_every=keep_every,
                                pointer_id=pointer.checkpoint if pointer else None, protect=protect,
                                bad=bad, latest_id=found.checkpoint_id if found else None)
    orphans: list[str] = []
    if orphans_older_than is not None:
        committed = set(ids)
        cutoff = clock.time() - orphans_older_than
        for cid in sorted(set(store._ls_names(contract.CHECKPOINTS_DIR)) | set(store._ls_names(contract.PARTS_DIR))):
            started = layout.id_started_at(cid)
            if cid not in committed and started is not None and started.timestamp() < cutoff:
                orphans.append(cid)
    if not dry_run:
        for cid in plan.delete:
            store.known.forget(cid)
            store._retry(lambda c=cid: store._rm(layout.manifest_key(c)), layout.manifest_key(cid))
            _delete_objects(store, cid)
        for cid in orphans:
            _delete_objects(store, cid)
    reasons = dict(plan.reasons)
    reasons.update({cid: "orphan" for cid in orphans})
    return retention.PrunePlan(plan.keep, plan.delete + orphans, reasons)


def _delete_objects(store: RunStore, checkpoint_id: str) -> None:
    """Delete a checkpoint's part records (multi-rank; absent otherwise), then its data objects.

    Parts go first: while they exist a rank's try could (re-)create the manifest, and it must never
    do so over data that is being deleted."""
    for key in (layout.parts_prefix(checkpoint_id), layout.data_prefix(checkpoint_id)):
        store._retry(lambda k=key: store._rm(k, recursive=True), key)
