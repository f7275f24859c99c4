"""Committing a multi-rank checkpoint from its parts (docs/store-protocol.md "Commit of a multi-rank
checkpoint"; DESIGN.md invariant 4: the checkpoint commits only when all ranks' parts are durable).

Each rank calls :func:`commit_part` once per unit it captured: its files go under the one shared
prefix, each object is checked by a HEAD (O(files of the rank), never a listing of the shared
prefix), then its part record is written create-only, then it tries the commit. A rank whose try
finds the step incomplete calls :func:`try_commit` again on its reconcile ticks
(:func:`kresume.store.parts.tick_delay`). The decision is the pure
:func:`kresume.store.parts.plan_commit`; the manifest it builds is identical for every committer and
is written create-only, so racing ranks write one manifest.

Requests per commit with world size ``W`` known: every rank lists ``parts/<id>/`` and reads the
manifest once per try; only a rank that lists ``W`` parts reads them (records are immutable and
cached per :class:`~kresume.store.runstore.RunStore`), so a commit costs O(W) requests, not O(W²):
measured 9·W + 1 in all (2 per rank are its file's PUT and HEAD), bench/RESULTS.md "Multi-rank commit".
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kresume import contract
from kresume.formats.metadata import CheckpointInfo, describe, parse_name
from kresume.store import clock, commit, conditional, errors, expects, layout, parts, pointer, reading
from kresume.store.local import LocalCheckpoint, snapshot
from kresume.store.manifest import LinkEntry, Manifest, ManifestInvalid
from kresume.store.transfer import Progress

if TYPE_CHECKING:
    from kresume.store.runstore import RunStore

logger = logging.getLogger("kresume.store")

READ_WORKERS = 16
"""Part records read at once by one try (small GETs; a 1,000-rank commit reads 1,000 of them once)."""


@dataclass(frozen=True)
class PartOutcome:
    """What :func:`commit_part` / :func:`try_commit` found.

    Attributes
    ----------
    checkpoint_id : str
        The multi-rank id (the same on every rank of the epoch).
    manifest : Manifest or None
        The committed manifest when the checkpoint is committed (by this call or another rank's).
    waiting : Waiting or None
        What the checkpoint still needs when it is not committed (missing ranks, missing files).
    created : bool
        This call wrote the manifest (exactly one call per checkpoint does).
    """

    checkpoint_id: str
    manifest: Manifest | None
    waiting: parts.Waiting | None = None
    created: bool = False

    @property
    def committed(self) -> bool:
        """True when the checkpoint is committed."""
        return self.manifest is not None


class PartCache:
    """Part records already read, per checkpoint id (records are immutable once written)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, dict[int, parts.PartRecord]] = {}

    def get(self, checkpoint_id: str) -> dict[int, parts.PartRecord]:
        """A copy of the records known for ``checkpoint_id`` (rank → record)."""
        with self._lock:
            return dict(self._records.get(checkpoint_id, {}))

    def add(self, record: parts.PartRecord) -> None:
        """Remember ``record``."""
        with self._lock:
            self._records.setdefault(record.checkpoint, {})[record.rank] = record

    def forget(self, checkpoint_id: str) -> None:
        """Drop what is known about ``checkpoint_id`` (it is committed)."""
        with self._lock:
            self._records.pop(checkpoint_id, None)


def part_id(name: str, epoch: str) -> str:
    """The multi-rank id of unit ``name`` in resume epoch ``epoch`` (step parsed from the name).
    Raises ``UsageError`` naming ``KRESUME_EPOCH`` when the token is malformed."""
    try:
        return layout.multi_rank_checkpoint_id(name, parse_name(name)[0], epoch)
    except ValueError as exc:
        raise errors.UsageError("KRESUME_EPOCH", str(exc)) from exc


def commit_part(store: RunStore, checkpoint: LocalCheckpoint | str | os.PathLike[str], *, rank: int,
                world_size: int | None, epoch: str, info: CheckpointInfo | None = None,
                expect: parts.Expects | None = None, source: Mapping[str, Any] | None = None,
                progress: Progress = None, resumed_from: str | None = None) -> PartOutcome:
    """Upload this rank's files of a multi-rank unit, record its part, then try the commit.

    Parameters
    ----------
    store : RunStore
        The run (every rank of the job opens the same run URL).
    checkpoint : LocalCheckpoint or path
        This rank's captured unit (its folder on this pod: e.g. ``step_100/`` holding ``__1_0.distcp``),
        or a path captured here.
    rank, world_size : int, int or None
        This pod's rank (``KRESUME_RANK``) and the job's world size (``KRESUME_WORLD_SIZE``; ``None``
        when unknown: then nothing is waited for beyond what the parts expect).
    epoch : str
        The resume-epoch token ``KRESUME_EPOCH`` (the same on every rank; names the shared prefix).
    info : CheckpointInfo, optional
        Format and counters (read with :func:`kresume.formats.metadata.describe` when omitted).
    expect : Expects, optional
        What this part says the whole holds; derived from content when omitted
        (:func:`kresume.store.expects.from_checkpoint`: DCP ``.metadata``, DeepSpeed model states).
        Pass ``Expects(ranks=world_size)`` for ``kresume.dev/parts: all-ranks`` units.
    source : mapping, optional
        Provenance merged into the part's ``source`` (``pod``, ``namespace``, ``resumed_from``).
    progress : callable, optional
        Called with bytes uploaded since the last call.
    resumed_from : str, optional
        The checkpoint this pod resumed from (id or ``KRESUME_RESUME_FROM`` URL), recorded in the
        part and, from the lowest rank that has it, in the manifest (``source.resumed_from``).

    Returns
    -------
    PartOutcome
        ``committed`` with the manifest, or ``waiting`` saying which ranks/files are missing.

    Raises
    ------
    UsageError
        ``rank``/``world_size``/``epoch`` are malformed.
    CommitConflict
        The unit was rewritten in place within one epoch (this rank's part or the committed
        manifest already records other files under this id; nothing was uploaded), or the parts
        disagree about a file (never committed).
    SourceChanged, SourceIncomplete, SourceUnreadable, StoreError
        As :func:`kresume.store.commit.commit`; nothing of this rank was recorded.
    """
    if not isinstance(checkpoint, LocalCheckpoint):
        with snapshot(checkpoint) as captured:
            return commit_part(store, captured, rank=rank, world_size=world_size, epoch=epoch, info=info,
                               expect=expect, source=source, progress=progress, resumed_from=resumed_from)
    _check_rank(rank, world_size)
    cid = part_id(checkpoint.name, epoch)
    commit.check_content(checkpoint)
    committed = reading.read_manifest(store, cid)
    if committed is not None:
        _check_same_files(store, cid, checkpoint, {f.path: f.size for f in committed.files}, "the committed manifest")
        return PartOutcome(cid, committed)
    key = layout.part_key(cid, rank)
    recorded = _read_part(store, cid, rank)
    if recorded is not None:  # a restarted sidecar re-offers what it already recorded
        _check_same_files(store, cid, checkpoint, {f.path: f.size for f in recorded.files}, f"rank {rank}'s part")
        if recorded.source.get("mtime_ns") != checkpoint.mtime_ns:
            raise _rewritten(store, cid, f"rank {rank}'s part records another version (mtime)")
        store._parts.add(recorded)
        return try_commit(store, cid, world_size=world_size, committed_checked=True)
    info = info or describe(checkpoint.path)
    entries = commit.upload_files(store, checkpoint, cid, progress)
    _head_objects(store, cid, checkpoint.name, entries)
    record = parts.PartRecord(
        checkpoint=cid, rank=rank, world_size=world_size, epoch=epoch, name=checkpoint.name, kind=checkpoint.kind,
        format=info.format, step=info.step, files=tuple(entries),
        links=tuple(LinkEntry(p, t) for p, t in checkpoint.links),
        expects=expect if expect is not None else expects.from_checkpoint(checkpoint),
        source={"host": socket.gethostname(), "path": str(checkpoint.path), "mtime_ns": checkpoint.mtime_ns,
                "pod": os.environ.get("KRESUME_POD_NAME", ""), "namespace": os.environ.get("KRESUME_POD_NAMESPACE", ""),
                **dict(source or {}), **commit.resumed_source(resumed_from)},
        epoch_of_training=info.epoch, created_at=checkpoint.created_at, recorded_at=clock.now_iso(),
    )
    data = record.to_json()
    if not store._retry(lambda: conditional.create_if_absent(store.fs, store._path(key), data), key):
        again = _read_part(store, cid, rank)
        if again is None or again.files != record.files:  # not our own retried write
            raise _rewritten(store, cid, f"another writer recorded rank {rank}'s part at the same time")
        record = again
    store._parts.add(record)
    return try_commit(store, cid, world_size=world_size, committed_checked=True)


def try_commit(store: RunStore, checkpoint_id: str, *, world_size: int | None = None,
               committed_checked: bool = False) -> PartOutcome:
    """Commit ``checkpoint_id`` if its parts are whole (a reconcile tick; safe to call from every rank).

    One manifest GET (committed already? then the pointer is moved forward if needed), one LIST of
    ``parts/<id>/`` (per 1,000 ranks); with ``world_size`` known and fewer parts listed, nothing
    more. Otherwise the records not read yet are read, :func:`kresume.store.parts.plan_commit`
    decides, and a whole union is written create-only and the pointer moved.

    ``committed_checked``: the caller (:func:`commit_part`) has just read the manifest and found none,
    so the first GET is skipped (one request per rank less).

    Returns a :class:`PartOutcome`; raises ``CommitConflict`` when the parts can never commit as they
    are (two ranks' files differ under one path, world sizes disagree), ``StoreError`` on store failures.
    """
    existing = None if committed_checked else reading.read_manifest(store, checkpoint_id)
    if existing is not None:
        store._parts.forget(checkpoint_id)
        pointer.move(store, existing)
        return PartOutcome(checkpoint_id, existing)
    listed = layout.ranks_from_part_names(store._ls_names(layout.parts_prefix(checkpoint_id)))
    known = store._parts.get(checkpoint_id)
    if world_size is not None and len(listed) < world_size:
        missing = tuple(r for r in range(world_size) if r not in listed)
        first = next(iter(known.values()), None)
        return PartOutcome(checkpoint_id, None, parts.Waiting(
            checkpoint_id, first.name if first else "", first.step if first else None, tuple(listed), world_size,
            missing, {}, f"{len(listed)} of {world_size} parts recorded"))
    records = _read_parts(store, checkpoint_id, [r for r in listed if r not in known])
    known.update(records)
    plan = parts.plan_commit(checkpoint_id, known, world_size=world_size)
    if isinstance(plan, parts.Waiting):
        if plan.conflict:
            raise errors.CommitConflict(store.key_url(layout.parts_prefix(checkpoint_id)), plan.reason,
                                        fix="re-save the step under a new name (put the step in the folder name); "
                                            "retention deletes the uncommitted parts as an orphan")
        return PartOutcome(checkpoint_id, None, plan)
    manifest, created = _create_manifest(store, plan.manifest)
    store._parts.forget(checkpoint_id)
    pointer.move(store, manifest)
    return PartOutcome(checkpoint_id, manifest, created=created)


def pending(store: RunStore) -> list[parts.Waiting]:
    """Uncommitted multi-rank checkpoints that have parts, newest first, each with the ranks that
    recorded a part and what is still missing (``conflict`` when it can never commit as it is).

    Reads every part of every pending id (a diagnostic for ``kresume ls`` and the operator's status,
    not a hot path). Raises ``StoreError`` on store failures.
    """
    committed = set(reading.manifest_ids(store))
    ids = [cid for cid in layout.sort_newest_first(store._ls_names(contract.PARTS_DIR)) if cid not in committed]
    out: list[parts.Waiting] = []
    for cid in ids:
        listed = layout.ranks_from_part_names(store._ls_names(layout.parts_prefix(cid)))
        if not listed:
            continue  # an empty "folder" some servers keep after a delete (SeaweedFS)
        known = store._parts.get(cid)
        known.update(_read_parts(store, cid, [r for r in listed if r not in known]))
        plan = parts.plan_commit(cid, known)
        if isinstance(plan, parts.Ready):
            m = plan.manifest
            plan = parts.Waiting(cid, m.name, m.step, tuple(sorted(known)), m.source.get("world_size"), (), {},
                                 "whole, not committed yet (the next try of any rank commits it)")
        out.append(plan)
    return out


# ---------------------------------------------------------------- helpers
def _check_rank(rank: int, world_size: int | None) -> None:
    if not isinstance(rank, int) or rank < 0:
        raise errors.UsageError("KRESUME_RANK", f"rank {rank!r} is not an integer ≥ 0")
    if world_size is not None and (not isinstance(world_size, int) or world_size < 1 or rank >= world_size):
        raise errors.UsageError("KRESUME_WORLD_SIZE", f"world size {world_size!r} does not hold rank {rank}",
                                fix="KRESUME_WORLD_SIZE must be an integer > KRESUME_RANK")


def _rewritten(store: RunStore, checkpoint_id: str, detail: str) -> errors.CommitConflict:
    return errors.CommitConflict(store.key_url(layout.data_prefix(checkpoint_id)),
                                 f"a multi-rank unit rewritten in place within one resume epoch: {detail}",
                                 fix="put the step in the folder name (step_100/, global_step100/), as DCP, "
                                     "DeepSpeed and FSDP recipes do; nothing was uploaded")


def _check_same_files(store: RunStore, checkpoint_id: str, checkpoint: LocalCheckpoint,
                      recorded: Mapping[str, int], what: str) -> None:
    """Refuse (before uploading anything) a capture whose files are not what ``what`` recorded."""
    for f in checkpoint.files:
        if recorded.get(f.relpath) != f.size:
            raise _rewritten(store, checkpoint_id, f"{f.relpath or checkpoint.name!r} is {f.size} B here, "
                                                   f"{what} has {recorded.get(f.relpath, 'no such file')}")


def _head_objects(store: RunStore, checkpoint_id: str, name: str, entries: list[Any]) -> None:
    """Check that every object this rank uploaded exists with its size: one HEAD per object."""
    def size_of(entry: Any) -> tuple[str, int | None]:
        key = layout.data_key(checkpoint_id, name, entry.path or None)
        path = store._path(key)

        def head() -> int | None:
            store.fs.invalidate_cache(path)
            try:
                return int(store.fs.info(path).get("size") or 0)
            except FileNotFoundError:
                return None

        return key, store._retry(head, key)

    workers = max(1, min(store.settings.max_workers, len(entries)))
    with ThreadPoolExecutor(workers, thread_name_prefix="kresume-head") as pool:
        found = list(pool.map(size_of, entries))
    bad = [f"{key}: {'missing' if got is None else f'{got} B'}, uploaded {e.size} B"
           for (key, got), e in zip(found, entries) if got != e.size]
    if bad:
        raise errors.CorruptCheckpoint(store.key_url(layout.data_prefix(checkpoint_id)),
                                       "upload did not land: " + "; ".join(bad[:3]))


def _read_part(store: RunStore, checkpoint_id: str, rank: int) -> parts.PartRecord | None:
    key = layout.part_key(checkpoint_id, rank)
    data = store._read(key)
    if data is None:
        return None
    try:
        return parts.PartRecord.from_json(data, expected_id=checkpoint_id, expected_rank=rank)
    except ManifestInvalid as exc:
        raise errors.CommitConflict(store.key_url(key), f"unreadable part record: {exc}",
                                    fix="delete it so the rank records its part again") from exc


def _read_parts(store: RunStore, checkpoint_id: str, ranks: list[int]) -> dict[int, parts.PartRecord]:
    """Read the part records of ``ranks`` concurrently (absent ones are skipped) and cache them."""
    if not ranks:
        return {}
    with ThreadPoolExecutor(min(READ_WORKERS, len(ranks)), thread_name_prefix="kresume-parts") as pool:
        found = dict(zip(ranks, pool.map(lambda r: _read_part(store, checkpoint_id, r), ranks)))
    out = {r: rec for r, rec in found.items() if rec is not None}
    for rec in out.values():
        store._parts.add(rec)
    return out


def _create_manifest(store: RunStore, manifest: Manifest) -> tuple[Manifest, bool]:
    """Write the manifest create-only; return the committed manifest and whether this call created it.

    Identical bytes already there: another rank committed the same union at the same moment.
    Other bytes: a committer that saw a different, also whole set of parts (possible only when the
    world size is unknown) won; its manifest stands (logged) — unless it does not parse, which is a
    conflict.
    """
    key = layout.manifest_key(manifest.id)
    data = manifest.to_json()
    if store._retry(lambda: conditional.create_if_absent(store.fs, store._path(key), data), key):
        if any(store._read(key) == data for _ in range(2)):  # read back, as commit.write_manifest does
            return manifest, True
        # The store kept other bytes than were sent (a body cut on the way, no checksum checked): remove
        # it so no reader meets a damaged commit; the next try of any rank writes it again from the parts.
        store._retry(lambda: store._rm(key), key)
        raise errors.CorruptCheckpoint(store.key_url(key), "the manifest did not land intact (the store kept other "
                                                            "bytes than were sent); it was removed, the next try "
                                                            "writes it again")
    existing = store._read(key)
    if existing == data:
        logger.debug("%s: %s already committed with identical bytes by another rank", store.url, manifest.id)
        return manifest, False
    try:
        theirs = Manifest.from_json(existing or b"", expected_id=manifest.id)
    except ManifestInvalid as exc:
        raise errors.CommitConflict(store.key_url(key), f"an unreadable manifest is in the way: {exc}") from exc
    logger.warning("%s: %s was committed by another rank from a different set of parts; keeping it",
                   store.url, manifest.id)
    return theirs, False


def pending_ids(store: RunStore, committed: set[str] | None = None) -> list[str]:
    """Ids with part records and no manifest, newest first: one LIST of ``parts/`` (plus one of
    ``manifests/`` when ``committed``, the committed ids, is not given). Cheap where :func:`pending`
    reads every part: a restarted sidecar adopts these (:mod:`kresume.sidecar.reconcile`)."""
    done = set(reading.manifest_ids(store)) if committed is None else committed
    return [cid for cid in layout.sort_newest_first(store._ls_names(contract.PARTS_DIR)) if cid not in done]
