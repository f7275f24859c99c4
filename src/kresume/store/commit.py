"""Commit: upload a captured checkpoint, write its manifest, move the pointer (invariant 1).

Order, and why: every data object is uploaded and found with its size before the manifest is
written, because the manifest's existence IS the commit (DESIGN.md "Store protocol"); the manifest
is written create-only (:mod:`kresume.store.conditional`), so a commit never replaces another; the
pointer is moved last, and only forward (:mod:`kresume.store.pointer`), because it is a hint that
readers may trust first.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from kresume import contract
from kresume.formats import checks
from kresume.formats.metadata import CheckpointInfo, describe
from kresume.store import aliases as aliasmod
from kresume.store import clock, conditional, errors, layout, pointer, reading, selection, transfer
from kresume.store.local import LocalCheckpoint, snapshot
from kresume.store.manifest import FileEntry, LinkEntry, Manifest
from kresume.store.transfer import Progress

if TYPE_CHECKING:
    from kresume.store.runstore import RunStore


def check_content(checkpoint: LocalCheckpoint) -> None:
    """Run each captured file's format check (torch zip footer, safetensors header, JSON) on the
    captured descriptor: the bytes about to be uploaded, not whatever the path names now.

    Raises ``SourceIncomplete`` naming the file when a check fails.
    """
    for f in checkpoint.files:
        name = f.relpath.rsplit("/", 1)[-1] if f.relpath else checkpoint.name
        verdict = checks.check_file(f.fd, f.size, name)
        if verdict is not None and not verdict.ok:
            raise errors.SourceIncomplete(f.display, verdict.reason,
                                          fix="commit it once the writer has finished; a truncated file never becomes valid")


def upload_files(store: RunStore, checkpoint: LocalCheckpoint, checkpoint_id: str,
                 progress: Progress = None, *, aliases: bool = False) -> list[FileEntry]:
    """Upload every captured file of ``checkpoint`` under ``checkpoints/<checkpoint_id>/<name>/``
    (``max_workers`` at once, each with the store's retries) and return their entries (path, size,
    CRC-32C of the bytes sent), in the order of ``checkpoint.files``.

    With ``aliases`` (single-rank commits; docs/store-protocol.md "Aliases"), a file whose size and CRC-32C
    (and last 64 KiB) equal an object ``store.objects`` knows is committed in the run, or a stored file of
    this checkpoint, is not uploaded: its entry names that object (:func:`kresume.store.aliases.choose`). ``progress`` is
    not called for an aliased file (no byte was sent).

    Every file is re-checked after all uploads: a rewrite of an early file during a later upload
    must also abandon the commit (raises ``SourceChanged``); a change of metadata alone (``chmod``,
    ``copystat``) whose bytes still have the CRC-32C sent is not one (:meth:`LocalFile.check_unchanged`),
    and the manifest then records the file's new mtime.
    """
    keys = {f.relpath: layout.data_key(checkpoint_id, checkpoint.name, f.relpath or None) for f in checkpoint.files}

    def remote_range(key: str, start: int, end: int) -> bytes:
        def cat() -> bytes:
            try:
                return store.fs.cat_file(store._path(key), start=start, end=end)
            except FileNotFoundError:  # pruned since it was learnt: no target (the file is uploaded)
                store.objects.forget(aliasmod.alias_checkpoint(key))
                return b""
        return store._retry(cat, key)

    chosen = aliasmod.choose(store.objects, checkpoint, checkpoint_id, store.settings, remote_range) if aliases else {}

    def upload(f: Any) -> FileEntry:
        if f.relpath in chosen:
            return FileEntry(f.relpath, f.size, chosen[f.relpath].crc32c, chosen[f.relpath].alias)
        crc = store._retry(lambda: transfer.upload_file(store.fs, f, store._path(keys[f.relpath]), store.settings,
                                                        progress), keys[f.relpath])
        return FileEntry(f.relpath, f.size, crc)

    sent = [f for f in checkpoint.files if f.relpath not in chosen]
    workers = max(1, min(store.settings.max_workers, len(sent) or 1))
    with ThreadPoolExecutor(workers, thread_name_prefix="kresume-upload") as pool:
        entries = list(pool.map(upload, checkpoint.files))
    for f, entry in zip(checkpoint.files, entries, strict=True):
        f.check_unchanged(entry.crc32c)
    return entries


def commit(store: RunStore, checkpoint: LocalCheckpoint | str | os.PathLike[str], *,
           info: CheckpointInfo | None = None, source: Mapping[str, Any] | None = None,
           progress: Progress = None, move_pointer: bool = True, resumed_from: str | None = None) -> Manifest:
    """Upload a local checkpoint and commit it.

    Parameters
    ----------
    store : RunStore
        The run to commit into.
    checkpoint : LocalCheckpoint or path
        A captured checkpoint (see :func:`kresume.store.local.snapshot`), or a path that is
        captured here (and closed afterwards).
    info : CheckpointInfo, optional
        Format, step and epoch; read with :func:`kresume.formats.metadata.describe` when omitted.
    source : mapping, optional
        Extra provenance for the manifest (``pod``, ``namespace``, ``rank``); host, path and
        mtime are always recorded.
    progress : callable, optional
        Called with the number of bytes uploaded since the last call.
    move_pointer : bool
        Move ``latest.json`` to this checkpoint when it is newer than the current target.
    resumed_from : str, optional
        The checkpoint the committing pod resumed from (an id, or the ``KRESUME_RESUME_FROM`` URL),
        recorded as ``source.resumed_from`` (its id): it makes that checkpoint *verified*, the
        fallback retention keeps (docs/store-protocol.md "Pins, verified fallbacks and retention").

    Returns
    -------
    Manifest
        The committed manifest.

    Raises
    ------
    SourceChanged, SourceUnreadable, OutsideRoot
        The local checkpoint could not be committed as it was; nothing was committed.
    StoreError
        The store failed (after retries); nothing was committed (orphaned data objects may remain
        and are removed by ``prune(orphans_older_than=…)``).
    """
    if not isinstance(checkpoint, LocalCheckpoint):
        with snapshot(checkpoint) as captured:
            return commit(store, captured, info=info, source=source, progress=progress, move_pointer=move_pointer,
                          resumed_from=resumed_from)
    check_content(checkpoint)
    info = info or describe(checkpoint.path)
    cid = layout.new_checkpoint_id(info.step)
    name = checkpoint.name
    entries = upload_files(store, checkpoint, cid, progress, aliases=True)
    manifest = Manifest(
        id=cid, name=name, kind=checkpoint.kind, format=info.format, step=info.step, epoch=info.epoch,
        files=tuple(entries), links=tuple(LinkEntry(p, t) for p, t in checkpoint.links),
        created_at=checkpoint.created_at, committed_at="",
        source={"host": socket.gethostname(), "path": str(checkpoint.path), "mtime_ns": checkpoint.mtime_ns,
                "pod": os.environ.get("KRESUME_POD_NAME", ""),
                "namespace": os.environ.get("KRESUME_POD_NAMESPACE", ""), **dict(source or {}),
                **resumed_source(resumed_from)},
    )
    problems = selection.object_problems(manifest, store._manifest_object_sizes(manifest))
    if problems:
        for target in selection.alias_targets(manifest):  # a target found gone is no target next time
            store.objects.forget(target)
        raise errors.CorruptCheckpoint(store.key_url(layout.data_prefix(cid)),
                                       "upload did not land: " + "; ".join(problems[:3]))
    manifest = Manifest(**{**manifest.__dict__, "committed_at": clock.now_iso()})
    write_manifest(store, manifest)
    check_alias_targets(store, manifest)
    store.objects.learn([manifest], aliasmod.uploaded_tails(checkpoint, manifest.files, manifest.id))
    if move_pointer:
        pointer.move(store, manifest)
    return manifest


def check_alias_targets(store: RunStore, manifest: Manifest) -> None:
    """After a manifest with aliases is written: every checkpoint it aliases into must still be committed.

    A prune deletes a checkpoint's manifest, then lists the manifests again and keeps the data of any it
    finds aliasing it (:func:`kresume.store.prune.prune`). A target manifest still present after ours was
    written means that listing comes after our write and sees our alias; a target manifest gone means a
    prune may be deleting its data: our manifest is removed (it has a fresh id, no reader has been told of
    it by the pointer) and the commit fails with ``CorruptCheckpoint`` (the sidecar retries it, uploading,
    as the target is forgotten). One manifest read per other checkpoint aliased.
    """
    for target in selection.alias_targets(manifest):
        if store._read(layout.manifest_key(target)) is None:
            store.objects.forget(target)
            key = layout.manifest_key(manifest.id)
            store._retry(lambda: store._rm(key), key)
            raise errors.CorruptCheckpoint(store.key_url(key), f"the checkpoint its alias names, {target}, was "
                                           "pruned while it was committed; the manifest was removed",
                                           fix="commit again (the file is uploaded)")


def resumed_source(resumed_from: str | None) -> dict[str, str]:
    """``{"resumed_from": <id>}`` for a manifest's or part's ``source`` (``{}`` when not resumed);
    a value that holds no kresume id (a local path) is kept as given."""
    if not resumed_from:
        return {}
    return {"resumed_from": layout.checkpoint_id_of(resumed_from) or resumed_from}


def write_manifest(store: RunStore, manifest: Manifest) -> None:
    """Write ``manifest`` create-only: the commit (docs/store-protocol.md "Commit", step 4), then read
    it back: a manifest stored other than sent is removed and the commit fails (``CorruptCheckpoint``).

    "Already exists" is success when the stored bytes are identical (a retried write whose first
    attempt landed; racing committers of one multi-rank checkpoint write the same bytes), and
    ``CommitConflict`` otherwise (the existing manifest is left as it is).
    """
    key = layout.manifest_key(manifest.id)
    data = manifest.to_json()
    if store._retry(lambda: conditional.create_if_absent(store.fs, store._path(key), data), key):
        if any(store._read(key) == data for _ in range(2)):  # read back (twice: a read may be cut too)
            return
        # The store kept other bytes than were sent (a server that checks no checksum stored a body cut
        # on the way: tests/faults "wrong_length"). The record is ours (a fresh id): remove it, so no
        # reader meets a damaged commit, and fail the commit (the sidecar retries it under a new id).
        store._retry(lambda: store._rm(key), key)
        raise errors.CorruptCheckpoint(store.key_url(key), "the manifest did not land intact (the store kept other "
                                                            "bytes than were sent); it was removed")
    existing = store._read(key)
    if existing != data:
        raise errors.CommitConflict(store.key_url(key), "a different manifest is already committed under this id",
                                    fix="nothing was overwritten; commit again (a new commit gets a new id)")


def repair_pointer(store: RunStore) -> str | None:
    """Move the pointer to the newest valid checkpoint when it names an older or broken one.

    A committer killed between writing a manifest and moving the pointer leaves the pointer
    stale (resolution still finds the newer manifest, invariant 2); a restarted sidecar calls
    this so the pointer, which humans and ``resume_from`` read first, catches up. The move is
    the conditional one of :func:`kresume.store.pointer.move` (a newer usable target is kept).
    Returns the id the pointer was moved to, or ``None`` when nothing changed.
    """
    found = reading.latest(store)
    if found is None or found.fallback_reason is None:
        return None
    return found.checkpoint_id if pointer.move(store, found.manifest) else None


def write_pointer(store: RunStore, manifest: Manifest) -> None:
    """Point ``latest.json`` at ``manifest`` unconditionally (a human's repair; commits never
    call this: they use :func:`kresume.store.pointer.move`)."""
    store._retry(lambda: transfer.write_small(store.fs, store._path(contract.POINTER_NAME),
                                              pointer.document(store, manifest)), contract.POINTER_NAME)
