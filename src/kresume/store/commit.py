"""Commit: upload a captured checkpoint, write its manifest, move the pointer (invariant 1).

Order, and why: every data object is uploaded and found with its size before the manifest is
written, because the manifest's existence IS the commit (DESIGN.md "Store protocol"); the pointer
is moved last, and only forward, because it is a hint that readers may trust first.
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
from kresume.store import clock, errors, layout, reading, selection, transfer
from kresume.store.local import LocalCheckpoint, snapshot
from kresume.store.manifest import FileEntry, LinkEntry, Manifest, Pointer
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


def commit(store: RunStore, checkpoint: LocalCheckpoint | str | os.PathLike[str], *,
           info: CheckpointInfo | None = None, source: Mapping[str, Any] | None = None,
           progress: Progress = None, move_pointer: bool = True) -> Manifest:
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
            return commit(store, captured, info=info, source=source, progress=progress, move_pointer=move_pointer)
    check_content(checkpoint)
    info = info or describe(checkpoint.path)
    cid = layout.new_checkpoint_id(info.step)
    name = checkpoint.name
    keys = {f.relpath: layout.data_key(cid, name, f.relpath or None) for f in checkpoint.files}

    def upload(f: Any) -> FileEntry:
        crc = store._retry(lambda: transfer.upload_file(store.fs, f, store._path(keys[f.relpath]), store.settings,
                                                        progress), keys[f.relpath])
        return FileEntry(f.relpath, f.size, crc)

    workers = max(1, min(store.settings.max_workers, len(checkpoint.files)))
    with ThreadPoolExecutor(workers, thread_name_prefix="kresume-upload") as pool:
        entries = list(pool.map(upload, checkpoint.files))
    # Every file is re-checked after all uploads: a rewrite of an early file during a later
    # upload must also abandon the commit.
    for f in checkpoint.files:
        f.check_unchanged()
    sizes = store._object_sizes(cid)
    manifest = Manifest(
        id=cid, name=name, kind=checkpoint.kind, format=info.format, step=info.step, epoch=info.epoch,
        files=tuple(entries), links=tuple(LinkEntry(p, t) for p, t in checkpoint.links),
        created_at=checkpoint.created_at, committed_at="",
        source={"host": socket.gethostname(), "path": str(checkpoint.path), "mtime_ns": checkpoint.mtime_ns,
                "pod": os.environ.get("KRESUME_POD_NAME", ""),
                "namespace": os.environ.get("KRESUME_POD_NAMESPACE", ""), **dict(source or {})},
    )
    problems = selection.object_problems(manifest, sizes)
    if problems:
        raise errors.CorruptCheckpoint(store.key_url(layout.data_prefix(cid)),
                                       "upload did not land: " + "; ".join(problems[:3]))
    manifest = Manifest(**{**manifest.__dict__, "committed_at": clock.now_iso()})
    store._retry(lambda: transfer.write_small(store.fs, store._path(layout.manifest_key(cid)), manifest.to_json()),
                 layout.manifest_key(cid))
    if move_pointer:
        advance_pointer(store, manifest)
    return manifest


def advance_pointer(store: RunStore, manifest: Manifest) -> None:
    """Move the pointer to ``manifest`` unless it names a newer checkpoint that is valid and not bad."""
    current = reading.read_pointer(store)
    if current is not None:
        cur_key = layout.parse_checkpoint_id(current.checkpoint)
        new_key = layout.parse_checkpoint_id(manifest.id)
        if cur_key is not None and new_key is not None and cur_key > new_key \
                and reading.load_valid(store, current.checkpoint) is not None \
                and current.checkpoint not in reading.bad_ids(store):
            return  # never move the pointer backwards from a newer usable checkpoint
    write_pointer(store, manifest)


def repair_pointer(store: RunStore) -> str | None:
    """Move the pointer to the newest valid checkpoint when it names an older or broken one.

    A committer killed between writing a manifest and moving the pointer leaves the pointer
    stale (resolution still finds the newer manifest, invariant 2); a restarted sidecar calls
    this so the pointer, which humans and ``resume_from`` read first, catches up. Returns the
    id the pointer was moved to, or ``None`` when nothing changed.
    """
    found = reading.latest(store)
    if found is None or found.fallback_reason is None:
        return None
    write_pointer(store, found.manifest)
    return found.checkpoint_id


def write_pointer(store: RunStore, manifest: Manifest) -> None:
    """Point ``latest.json`` at ``manifest`` (unconditionally)."""
    ptr = Pointer(manifest.id, store.checkpoint_url(manifest), manifest.step, clock.now_iso())
    store._retry(lambda: transfer.write_small(store.fs, store._path(contract.POINTER_NAME), ptr.to_json()),
                 contract.POINTER_NAME)
