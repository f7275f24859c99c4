"""Verify: check committed checkpoints against their manifests (sizes; optionally CRC-32C).

A checkpoint is sound when every object its manifest lists exists with the recorded size (one
listing of its prefix) and, with ``checksums``, streams to the recorded CRC-32C.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kresume.store import errors, layout, reading, selection, transfer
from kresume.store.manifest import FileEntry, Manifest

if TYPE_CHECKING:
    from kresume.store.runstore import RunStore


@dataclass(frozen=True)
class Problem:
    """One finding of :func:`check`: which checkpoint, and what is wrong."""

    checkpoint_id: str
    message: str


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`check` looked at: checkpoints, files and bytes (recorded sizes; all
    downloaded when checksums were asked for), and the problems found (empty when clean)."""

    problems: list[Problem]
    checkpoints: int
    files: int
    bytes: int


def check(store: RunStore, checkpoint_id: str | None = None, *, checksums: bool = False,
          allow_empty: bool = False) -> VerifyReport:
    """Check committed checkpoints (all, or one): objects exist with recorded sizes; with
    ``checksums`` also download-stream every object and compare CRC-32C.

    Raises
    ------
    NoCheckpoint
        The run has no committed checkpoint (unless ``allow_empty``: then an empty report), or
        ``checkpoint_id`` is not committed (``kresume verify`` never reports a run that holds
        nothing as clean: the URL is probably mistyped).
    BucketMissing
        The URL's bucket/container does not exist.
    """
    ids = [checkpoint_id] if checkpoint_id else reading.manifest_ids(store)
    if not ids and not allow_empty:
        raise store.no_checkpoint("nothing is committed under this URL")
    problems: list[Problem] = []
    n_files = n_bytes = 0
    for cid in ids:
        try:
            manifest = reading.read_manifest(store, cid)
        except errors.CorruptCheckpoint as exc:
            problems.append(Problem(cid, str(exc)))
            continue
        if manifest is None:
            raise store.no_checkpoint(f"checkpoint {cid!r} is not committed", fix="see `kresume ls` for ids")
        n_files += len(manifest.files)
        n_bytes += manifest.total_bytes
        size_problems = selection.object_problems(manifest, store._manifest_object_sizes(manifest))
        problems += [Problem(cid, p) for p in size_problems]
        if checksums and not size_problems:
            problems += [Problem(cid, p) for p in _checksum_problems(store, manifest)]
    return VerifyReport(problems, len(ids), n_files, n_bytes)


def _checksum_problems(store: RunStore, manifest: Manifest) -> list[str]:
    """Stream every file's object of ``manifest`` (``max_workers`` at once; an aliased file's is its target's)
    and compare its CRC-32C with the file's entry."""
    def one(f: FileEntry) -> str | None:
        key = manifest.object_key(f)
        got = store._retry(lambda: transfer.remote_crc32c(store.fs, store._path(key), f.size, store.settings), key)
        via = f" (alias of {layout.data_key(manifest.id, manifest.name, f.path or None)})" if f.alias else ""
        return None if got == f.crc32c else f"object {key}{via} crc32c {got} ≠ manifest {f.crc32c}"

    with ThreadPoolExecutor(store.settings.max_workers) as pool:
        return [p for p in pool.map(one, manifest.files) if p]
