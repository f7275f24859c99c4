"""Restore: download a committed checkpoint into a local folder, atomically.

Files land in a staging folder inside the destination, are checked against the manifest's sizes
and CRC-32C as their bytes arrive, and only then is the checkpoint renamed into place: a half
restore never looks complete (DESIGN.md "Store protocol", invariant 2 from the reader's side).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kresume.store import download, errors, native, parts, reading
from kresume.store.manifest import FileEntry, Manifest
from kresume.store.transfer import Progress

if TYPE_CHECKING:
    from kresume.store.nodecache import NodeCache
    from kresume.store.runstore import RunStore


def restore(store: RunStore, dest: str | os.PathLike[str], checkpoint: str | Manifest | None = None, *,
            progress: Progress = None, on_start: Callable[[Manifest], None] | None = None,
            rank: int | None = None, cache: NodeCache | None = None, outcome: dict[str, Any] | None = None) -> Path:
    """Download a committed checkpoint into folder ``dest``; return the local path of the
    checkpoint (``dest/<name>``).

    Files are downloaded into ``dest/.kresume-restore-<id>/`` (:func:`kresume.store.download.download_file`:
    on the native path (s3://, az://) concurrent ranges of all files share ``TransferSettings.ranges_in_flight``), each
    checked against its size and the CRC-32C computed as its bytes arrived, and only then
    renamed to ``dest/<name>``, replacing an older copy; a half restore never looks complete.
    A file whose download fails transiently is restarted from scratch (``TransferSettings.attempts``).
    ``progress`` is called with bytes downloaded (never more than each file's size in total,
    retries included). Raises ``CorruptCheckpoint`` on a mismatch, naming the object's URL
    (the temporary folder is removed).

    A multi-rank checkpoint is restored whole by default (DCP may reshard on load). With ``rank``,
    only the files a rank-specific naming rule gives that rank plus the files no rule claims (DCP's
    ``.metadata``, DeepSpeed's model states and ``latest``) are downloaded
    (:func:`kresume.store.parts.files_for_rank`).
    ``cache`` (the node-local tier, :class:`kresume.store.nodecache.NodeCache`): the checkpoint is copied from
    the node's cache instead when its entry matches the manifest (id, sizes, CRC-32C checked as it is copied),
    else downloaded. ``outcome``, when given, gets ``source`` (``cache`` or ``store``), ``checkpoint``, ``bytes``.
    The cache holds whole checkpoints: a restore with ``rank`` always downloads.
    """
    # A manifest the caller already resolved is used as it is (no second lookup; manifests are immutable).
    manifest = checkpoint if isinstance(checkpoint, Manifest) else reading.resolve_checkpoint(store, checkpoint)
    files = manifest.files if rank is None else tuple(parts.files_for_rank(manifest.files, rank))
    if on_start:
        on_start(manifest)
    dest_dir = Path(dest)
    staging = dest_dir / f".kresume-restore-{manifest.id}"
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as exc:
        raise errors.DestinationError(str(dest_dir), exc.strerror or str(exc),
                                      fix="DEST must be a writable folder (it is created if missing)") from exc
    try:
        hit = False
        if cache is not None and rank is None:
            try:
                hit = cache.restore_into(store.url, manifest, staging, progress)
            except OSError as exc:
                raise errors.DestinationError(str(dest_dir), exc.strerror or str(exc),
                                              fix="free space on the restore destination or choose another") from exc
        if outcome is not None:
            outcome.update(source="cache" if hit else "store", checkpoint=manifest.id, bytes=manifest.total_bytes)

        def fetch(f: FileEntry) -> None:
            key = manifest.object_key(f)  # an aliased file's bytes are its target's (docs/store-protocol.md "Aliases")
            local = staging / manifest.name if not f.path else staging / manifest.name / f.path
            local.parent.mkdir(parents=True, exist_ok=True)
            reported = [0]  # bytes passed to progress for this file (a retry re-reports nothing)
            counting = threading.Lock()  # a file's ranges report from their own threads

            def attempt() -> str:
                got = [0]

                def advance(n: int) -> None:
                    with counting:
                        got[0] += n
                        if got[0] > reported[0] and progress:
                            progress(got[0] - reported[0])
                            reported[0] = got[0]

                try:
                    return download.download_file(store.fs, store._path(key), str(local), f.size, store.settings,
                                                  url=store.key_url(key), progress=advance)
                except FileNotFoundError as exc:  # the manifest names an object that is gone
                    raise errors.CorruptCheckpoint(store.key_url(key), f"object is missing (manifest says {f.size} B)",
                                                   fix="restore another checkpoint; `kresume verify` lists the damage") from exc

            crc = store._retry(attempt, key)
            size = local.stat().st_size
            if size != f.size:
                raise errors.CorruptCheckpoint(store.key_url(key), f"downloaded {size} B, manifest says {f.size} B")
            if crc != f.crc32c:
                raise errors.CorruptCheckpoint(store.key_url(key), f"crc32c {crc} ≠ manifest {f.crc32c}")

        # On the native path the files' ranges share the process-wide ``ranges_in_flight`` slots. Twice as many
        # files are started, so a shard's request is already queued when another finishes (measured,
        # 64 x 16 MB: all slots busy 93 % of the time instead of 75 %); waiting files hold no buffers.
        width = max(store.settings.max_workers,
                    2 * store.settings.ranges_in_flight if native.is_native(store.fs) else 0)
        with ThreadPoolExecutor(max(1, min(width, len(files))), thread_name_prefix="kresume-restore") as pool:
            futures = [] if hit else [pool.submit(fetch, f) for f in files]
            try:
                for fut in futures:
                    fut.result()
            except BaseException:
                for fut in futures:  # fail fast: files not started yet are not downloaded
                    fut.cancel()
                raise
        if manifest.kind == "dir":  # a rank's restore may select no file of a folder
            (staging / manifest.name).mkdir(parents=True, exist_ok=True)
        # Give the copy the original's mtime: a sidecar watching ``dest`` (the restore init step
        # writes into the checkpoint folder) then recognises it as already committed.
        mtime_ns = manifest.source.get("mtime_ns")
        if isinstance(mtime_ns, int) and mtime_ns > 0:
            for f in files:
                local = staging / manifest.name if not f.path else staging / manifest.name / f.path
                os.utime(local, ns=(mtime_ns, mtime_ns))
        for ln in manifest.links:
            link = staging / manifest.name / ln.path
            link.parent.mkdir(parents=True, exist_ok=True)
            if not os.path.isabs(ln.target) and ".." not in Path(ln.target).parts:
                os.symlink(ln.target, link)
        final = dest_dir / manifest.name
        _replace(staging / manifest.name, final, dest_dir / f".kresume-old-{manifest.id}")
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace(new: Path, final: Path, aside: Path) -> None:
    """Put the restored ``new`` (file or folder) at ``final``, replacing whatever is there.

    A file over a file (or over a link) is one atomic ``rename(2)``. ``rename(2)`` cannot put a
    folder over a file or a link, nor anything over a non-empty folder, so the old copy is first
    moved to ``aside`` and removed afterwards (a link is removed, never followed).

    Raises ``DestinationError`` naming ``final`` when the file system refuses.
    """
    try:
        if os.path.lexists(final) and (new.is_dir() or (final.is_dir() and not final.is_symlink())):
            os.replace(final, aside)
            os.replace(new, final)
            if aside.is_dir() and not aside.is_symlink():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                aside.unlink(missing_ok=True)
        else:
            os.replace(new, final)
    except OSError as exc:
        raise errors.DestinationError(str(final), exc.strerror or str(exc),
                                      fix="make DEST/<checkpoint name> removable by this user, or restore into another DEST") from exc
