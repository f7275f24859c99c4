"""Bad marks and retention: which committed checkpoints stay, and deleting the rest safely.

The decision is pure (:mod:`kresume.store.retention`); this module reads the state it needs and
deletes in the order invariant 3 requires: a checkpoint's manifest first (it is no longer
committed), then its data objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from kresume import contract
from kresume.store import clock, commit, errors, layout, pins, reading, retention, selection, transfer

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


def unmark_bad(store: RunStore, checkpoint_id: str) -> str | None:
    """Remove ``checkpoint_id``'s bad mark (a mistaken ``mark-bad``, or the operator's crash-loop
    mark once the cause is fixed): resolution may pick it again. When it is now the newest valid
    checkpoint the pointer moves forward to it (returned; ``None`` when the pointer did not move).
    Raises ``NoCheckpoint`` when it carries no bad mark."""
    key = layout.bad_key(checkpoint_id)
    if store._read(key) is None:
        raise store.no_checkpoint(f"checkpoint {checkpoint_id!r} is not marked bad",
                                  fix="`kresume ls` shows which checkpoints are marked bad")
    store._retry(lambda: store._rm(key), key)
    return commit.repair_pointer(store)


def prune(store: RunStore, keep_last: int, keep_every: int | None = None, *, protect: Iterable[str] = (),
          dry_run: bool = False, orphans_older_than: float | None = None) -> retention.PrunePlan:
    """Delete old checkpoints by the rules of :mod:`kresume.store.retention`.

    A multi-rank checkpoint is one step: its manifest, data and part records go together.
    Only checkpoints not marked bad count toward ``keep_last``/``keep_every``; bad-marked ones,
    the pointer's target, the checkpoint :func:`kresume.store.reading.latest` resolves to, every
    checkpoint a live pin names (judged by the store's clock) and one fallback older than latest
    (the newest verified, else the newest valid) are never deleted; ``reasons`` says why each is kept. Each deletion removes the manifest first (so the checkpoint is no longer
    committed), then its data objects. With ``orphans_older_than`` (seconds), checkpoints without a
    manifest (interrupted commits, multi-rank steps a rank never finished) whose newest object or
    part is older than that *by the store's clock* (:func:`find_orphans`) are deleted too and
    listed in the plan's ``delete`` with reason ``orphan``.
    """
    pointer, ids, bad = reading.read_state(store)
    found = reading.resolve(store, pointer, ids, bad)
    steps = {cid: (k.step if k.step >= 0 else None) for cid in ids if (k := layout.parse_checkpoint_id(cid))}
    manifests = reading.list_manifests(store)
    store.objects.learn(manifests)
    aliased = {m.id: selection.alias_targets(m) for m in manifests if m.aliases}
    verified = {layout.checkpoint_id_of(str(m.source.get("resumed_from") or "")) for m in manifests} - {None}
    pin_list = pins.read_pins(store)
    candidates = orphan_candidates(store, set(ids) | alias_owners(aliased)) if orphans_older_than is not None else []
    # The store's clock costs a write: read it only when an age rule has something to judge (a
    # prune of a mistyped, empty URL must not create objects there).
    now = clock.StoreClock(store).now() if pin_list or candidates else None
    pinned: dict[str, list[str]] = {}
    for p in pins.judge(pin_list, now):
        if p.live:
            pinned.setdefault(p.checkpoint, []).append(p.holder)
    plan = retention.plan_prune(steps, keep_last=keep_last, keep_every=keep_every,
                                pointer_id=pointer.checkpoint if pointer else None, protect=protect,
                                bad=bad, latest_id=found.checkpoint_id if found else None,
                                pinned=pinned, verified={v for v in verified if v}, aliased=aliased)
    orphans = find_orphans(store, candidates, orphans_older_than, now) if orphans_older_than is not None else []
    reasons = dict(plan.reasons)
    if not dry_run:
        for cid in plan.delete:  # every manifest first: none of them is committed any more
            store.known.forget(cid)
            store.objects.forget(cid)
            store._retry(lambda c=cid: store._rm(layout.manifest_key(c)), layout.manifest_key(cid))
        # A commit that aliased one of them while this prune ran is seen now (commit.check_alias_targets):
        # its targets' data stays (an orphan for a later prune once nothing aliases it).
        late = aliased_by_new(store, set(ids))
        for cid in plan.delete:
            if cid in late:
                reasons[cid] = f"manifest deleted, data kept: {', '.join(late[cid])} aliased it during the prune"
            else:
                _delete_objects(store, cid)
        for cid in orphans:
            _delete_objects(store, cid)
    reasons.update({cid: "orphan" for cid in orphans})
    return retention.PrunePlan(plan.keep, plan.delete + orphans, reasons)


def alias_owners(aliased: dict[str, list[str]]) -> set[str]:
    """Every checkpoint id some manifest's aliases name (their data is referenced: never an orphan)."""
    return {t for targets in aliased.values() for t in targets}


def aliased_by_new(store: RunStore, seen: set[str]) -> dict[str, list[str]]:
    """Target id → ids of manifests committed since the listing ``seen`` that alias into it (one listing,
    plus one read per new manifest)."""
    out: dict[str, list[str]] = {}
    for cid in set(reading.manifest_ids(store)) - seen:
        try:
            manifest = reading.read_manifest(store, cid)
        except errors.CorruptCheckpoint:
            continue
        for target in selection.alias_targets(manifest) if manifest is not None else []:
            out.setdefault(target, []).append(cid)
    return out


def orphan_candidates(store: RunStore, committed: set[str]) -> list[str]:
    """kresume ids with data or parts but no manifest (two listings)."""
    found = set(store._ls_names(contract.CHECKPOINTS_DIR)) | set(store._ls_names(contract.PARTS_DIR))
    return sorted(cid for cid in found - committed if layout.parse_checkpoint_id(cid) is not None)


def find_orphans(store: RunStore, candidates: list[str], older_than: float, now: datetime | None) -> list[str]:
    """The ``candidates`` (:func:`orphan_candidates`) whose newest object is more than ``older_than``
    seconds old: ``now`` (the store's time, :class:`kresume.store.clock.StoreClock`) minus the newest
    LastModified among ``checkpoints/<id>/`` and ``parts/<id>/`` (issue 11 item 5). Never the id's
    embedded time against the local clock: a skewed uploader or a multi-hour upload is still writing
    and its objects are young. An orphan whose age cannot be told (no ``now``, no LastModified) is kept.
    One recursive listing per candidate."""
    if now is None:
        return []
    out = []
    for cid in candidates:
        newest = _newest_modified(store, cid)
        if newest is not None and retention.orphan_is_old(newest, now, older_than):
            out.append(cid)
    return out


def _newest_modified(store: RunStore, checkpoint_id: str) -> datetime | None:
    """The newest LastModified among a checkpoint's data objects and part records (``None``: none known)."""
    stamps = []
    for key in (layout.data_prefix(checkpoint_id), layout.parts_prefix(checkpoint_id)):
        path = store._path(key)

        def find(p: str = path) -> dict:
            store.fs.invalidate_cache(p)
            try:
                return store.fs.find(p, detail=True)
            except FileNotFoundError:
                return {}

        for info in store._retry(find, key).values():
            if info.get("type", "file") != "directory":
                stamps.append(clock.modified_at(info))
    if not stamps or any(s is None for s in stamps):
        return None
    return max(stamps)


def _delete_objects(store: RunStore, checkpoint_id: str) -> None:
    """Delete a checkpoint's part records (multi-rank; absent otherwise), then its data objects.

    Parts go first: while they exist a rank's try could (re-)create the manifest, and it must never
    do so over data that is being deleted."""
    for key in (layout.parts_prefix(checkpoint_id), layout.data_prefix(checkpoint_id)):
        store._retry(lambda k=key: store._rm(k, recursive=True), key)
