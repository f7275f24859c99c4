"""A run's store: commit, list, resolve, verify, restore, prune (DESIGN.md "Store protocol").

Invariants this class keeps (DESIGN.md, numbered as there):

1. Data objects are uploaded first, then the manifest is written (the commit), then the pointer
   is moved — only forward, to a checkpoint newer than its current target.
2. :meth:`latest` returns only a checkpoint whose manifest parses and whose objects all exist
   with the recorded sizes; a broken pointer falls back to the newest valid manifest.
3. Every commit writes under a fresh checkpoint id, so committed bytes are never overwritten;
   :meth:`prune` deletes the manifest before the data and never the pointer's target.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kresume import contract
from kresume.formats import checks
from kresume.formats.metadata import CheckpointInfo, describe
from kresume.store import download, errors, layout, retention, selection, transfer
from kresume.store.local import LocalCheckpoint, snapshot
from kresume.store.manifest import FileEntry, LinkEntry, Manifest, ManifestInvalid, Pointer
from kresume.store.storage import TransferSettings, missing_bucket, open_fs, retrying

Progress = Callable[[int], None] | None


@dataclass(frozen=True)
class Problem:
    """One finding of :meth:`RunStore.verify`: which checkpoint, and what is wrong."""

    checkpoint_id: str
    message: str


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`RunStore.check` looked at: checkpoints, files and bytes (recorded sizes; all
    downloaded when checksums were asked for), and the problems found (empty when clean)."""

    problems: list[Problem]
    checkpoints: int
    files: int
    bytes: int


def _check_content(checkpoint: LocalCheckpoint) -> None:
    """Run each captured file's format check (torch zip footer, safetensors header, JSON) on the
    captured descriptor: the bytes about to be uploaded, not whatever the path names now."""
    for f in checkpoint.files:
        name = f.relpath.rsplit("/", 1)[-1] if f.relpath else checkpoint.name
        verdict = checks.check_file(f.fd, f.size, name)
        if verdict is not None and not verdict.ok:
            raise errors.SourceIncomplete(f.display, verdict.reason,
                                          fix="commit it once the writer has finished; a truncated file never becomes valid")


def _now() -> str:
    return datetime.now(UTC).isoformat()


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


class RunStore:
    """The remote store of one run, at ``<base>/<namespace>/<run>/``.

    Thread-safe for concurrent reads; commits of one run should come from one process (the
    run's sidecar). Every method raises :class:`~kresume.store.errors.StoreError` subclasses,
    never raw backend exceptions.
    """

    def __init__(self, fs: Any, root: str, url: str, settings: TransferSettings) -> None:
        self.fs = fs
        self.root = root
        self.url = url.rstrip("/") + "/"
        self.settings = settings

    @classmethod
    def open(cls, url: str, storage_options: Mapping[str, Any] | None = None,
             settings: TransferSettings | None = None) -> RunStore:
        """Open the run at ``url`` (no request is made until an operation needs one)."""
        fs, root = open_fs(url, storage_options)
        return cls(fs, root, url, settings or TransferSettings())

    # ---------------------------------------------------------------- helpers
    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def key_url(self, key: str) -> str:
        """Full URL of a relative key (``checkpoints/<id>/<name>`` → ``s3://b/p/…``)."""
        return self.url + key

    def checkpoint_url(self, manifest: Manifest) -> str:
        """The resume URL of a checkpoint: its file, or its folder for folder checkpoints."""
        return self.key_url(layout.data_key(manifest.id, manifest.name, None))

    def _retry(self, fn: Callable[[], Any], what: str = "") -> Any:
        return retrying(fn, url=self.url + what, settings=self.settings)

    def no_checkpoint(self, detail: str, *, fix: str = "check the URL; runs live at "
                      "<policy storage>/<namespace>/<run>/") -> errors.StoreError:
        """The error for a run found empty (or without the checkpoint asked for).

        ``BucketMissing`` naming the bucket when the bucket/container does not exist (one extra
        request, made only here: a missing bucket lists like an empty prefix), else ``NoCheckpoint``
        with ``detail`` and ``fix``.
        """
        bucket = missing_bucket(self.fs, self.root)
        if bucket is not None:
            return errors.BucketMissing(self.url, repr(bucket), fix="create it first, or fix its name in the URL")
        return errors.NoCheckpoint(self.url, detail, fix=fix)

    def _ls_names(self, key: str) -> list[str]:
        path = self._path(key)

        def ls() -> list[str]:
            self.fs.invalidate_cache(path)
            try:
                return [n.rstrip("/").rsplit("/", 1)[-1] for n in self.fs.ls(path, detail=False)]
            except FileNotFoundError:
                return []

        return self._retry(ls, key)

    def _read(self, key: str) -> bytes | None:
        path = self._path(key)

        def cat() -> bytes | None:
            try:
                return self.fs.cat_file(path)
            except FileNotFoundError:
                return None

        return self._retry(cat, key)

    # ---------------------------------------------------------------- commit
    def commit(self, checkpoint: LocalCheckpoint | str | os.PathLike[str], *, info: CheckpointInfo | None = None,
               source: Mapping[str, Any] | None = None, progress: Progress = None,
               move_pointer: bool = True) -> Manifest:
        """Upload a local checkpoint and commit it.

        Parameters
        ----------
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
                return self.commit(captured, info=info, source=source, progress=progress, move_pointer=move_pointer)
        _check_content(checkpoint)
        info = info or describe(checkpoint.path)
        cid = layout.new_checkpoint_id(info.step)
        name = checkpoint.name
        keys = {f.relpath: layout.data_key(cid, name, f.relpath or None) for f in checkpoint.files}

        def upload(f: Any) -> FileEntry:
            crc = self._retry(lambda: transfer.upload_file(self.fs, f, self._path(keys[f.relpath]), self.settings,
                                                           progress), keys[f.relpath])
            return FileEntry(f.relpath, f.size, crc)

        workers = max(1, min(self.settings.max_workers, len(checkpoint.files)))
        with ThreadPoolExecutor(workers, thread_name_prefix="kresume-upload") as pool:
            entries = list(pool.map(upload, checkpoint.files))
        # Every file is re-checked after all uploads: a rewrite of an early file during a later
        # upload must also abandon the commit.
        for f in checkpoint.files:
            f.check_unchanged()
        sizes = self._object_sizes(cid)
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
            raise errors.CorruptCheckpoint(self.key_url(layout.data_prefix(cid)),
                                           "upload did not land: " + "; ".join(problems[:3]))
        manifest = Manifest(**{**manifest.__dict__, "committed_at": _now()})
        self._retry(lambda: transfer.write_small(self.fs, self._path(layout.manifest_key(cid)), manifest.to_json()),
                    layout.manifest_key(cid))
        if move_pointer:
            self._advance_pointer(manifest)
        return manifest

    def _advance_pointer(self, manifest: Manifest) -> None:
        current = self.read_pointer()
        if current is not None:
            cur_key = layout.parse_checkpoint_id(current.checkpoint)
            new_key = layout.parse_checkpoint_id(manifest.id)
            if cur_key is not None and new_key is not None and cur_key > new_key \
                    and self._load_valid(current.checkpoint) is not None \
                    and current.checkpoint not in self.bad_ids():
                return  # never move the pointer backwards from a newer usable checkpoint
        self.write_pointer(manifest)

    def repair_pointer(self) -> str | None:
        """Move the pointer to the newest valid checkpoint when it names an older or broken one.

        A committer killed between writing a manifest and moving the pointer leaves the pointer
        stale (resolution still finds the newer manifest, invariant 2); a restarted sidecar calls
        this so the pointer, which humans and ``resume_from`` read first, catches up. Returns the
        id the pointer was moved to, or ``None`` when nothing changed.
        """
        found = self.latest()
        if found is None or found.fallback_reason is None:
            return None
        self.write_pointer(found.manifest)
        return found.checkpoint_id

    def write_pointer(self, manifest: Manifest) -> None:
        """Point ``latest.json`` at ``manifest`` (unconditionally)."""
        ptr = Pointer(manifest.id, self.checkpoint_url(manifest), manifest.step, _now())
        self._retry(lambda: transfer.write_small(self.fs, self._path(contract.POINTER_NAME), ptr.to_json()),
                    contract.POINTER_NAME)

    def read_pointer(self) -> Pointer | None:
        """The pointer, or ``None`` when absent or unreadable."""
        data = self._read(contract.POINTER_NAME)
        if data is None:
            return None
        try:
            return Pointer.from_json(data)
        except ManifestInvalid:
            return None

    # ---------------------------------------------------------------- reading
    def manifest_ids(self) -> list[str]:
        """Ids of all committed checkpoints, newest first (one listing)."""
        return layout.ids_from_manifest_names(self._ls_names(contract.MANIFESTS_DIR))

    def bad_ids(self) -> set[str]:
        """Ids marked bad."""
        return set(layout.ids_from_manifest_names(self._ls_names(contract.BAD_DIR)))

    def read_manifest(self, checkpoint_id: str) -> Manifest | None:
        """The manifest of ``checkpoint_id``; ``None`` when absent. Raises CorruptCheckpoint when malformed."""
        data = self._read(layout.manifest_key(checkpoint_id))
        if data is None:
            return None
        try:
            return Manifest.from_json(data, expected_id=checkpoint_id)
        except ManifestInvalid as exc:
            raise errors.CorruptCheckpoint(self.key_url(layout.manifest_key(checkpoint_id)), str(exc)) from exc

    def list(self) -> list[Manifest]:
        """Every committed checkpoint's manifest, oldest first; malformed manifests are left out."""
        ids = self.manifest_ids()

        def load(cid: str) -> Manifest | None:
            try:
                return self.read_manifest(cid)
            except errors.CorruptCheckpoint:
                return None

        with ThreadPoolExecutor(8) as pool:
            found = [m for m in pool.map(load, ids) if m is not None]
        return list(reversed(found))

    def _object_sizes(self, checkpoint_id: str) -> dict[str, int]:
        prefix = self._path(layout.data_prefix(checkpoint_id))

        def find() -> dict[str, Any]:
            self.fs.invalidate_cache(prefix)
            try:
                return self.fs.find(prefix, detail=True)
            except FileNotFoundError:
                return {}

        found = self._retry(find, layout.data_prefix(checkpoint_id))
        strip = len(self.fs._strip_protocol(self.root).rstrip("/")) + 1
        out = {}
        for path, meta in found.items():
            if meta.get("type", "file") != "directory":
                out[self.fs._strip_protocol(path)[strip:]] = int(meta.get("size") or 0)
        return out

    def _load_valid(self, checkpoint_id: str) -> tuple[Manifest, list[str]] | None:
        try:
            manifest = self.read_manifest(checkpoint_id)
        except errors.CorruptCheckpoint:
            return None
        if manifest is None:
            return None
        problems = selection.object_problems(manifest, self._object_sizes(checkpoint_id))
        return None if problems else (manifest, problems)

    def latest(self, *, deadline: float | None = None) -> selection.Resolved | None:
        """The newest valid committed checkpoint, or ``None`` when the run has none.

        Parameters
        ----------
        deadline : float, optional
            ``time.monotonic()`` value after which resolution stops and raises ``StoreUnreachable``
            (the webhook's hard time budget).
        """
        return self._resolve(*self._read_state(), deadline=deadline)

    def _read_state(self) -> tuple[Pointer | None, list[str], set[str]]:
        """Pointer, committed ids (newest first) and bad ids, read concurrently: resolution sits on
        the webhook's latency path, and three sequential round trips become one."""
        with ThreadPoolExecutor(3, thread_name_prefix="kresume-resolve") as pool:
            f_pointer, f_ids, f_bad = pool.submit(self.read_pointer), pool.submit(self.manifest_ids), \
                pool.submit(self.bad_ids)
            return f_pointer.result(), f_ids.result(), f_bad.result()

    def _resolve(self, pointer: Pointer | None, ids: list[str], bad: set[str], *,
                 deadline: float | None = None) -> selection.Resolved | None:
        candidates = selection.candidate_order(ids, bad)
        skipped: list[str] = []
        for cid in candidates:
            if deadline is not None and time.monotonic() > deadline:
                raise errors.StoreUnreachable(self.url, "resolution exceeded its time budget")
            loaded = self._load_valid(cid)
            if loaded is None:
                skipped.append(cid)
                continue
            manifest = loaded[0]
            reason = None
            if pointer is None:
                reason = "pointer missing"
            elif pointer.checkpoint != cid:
                reason = (f"pointer names {pointer.checkpoint}, "
                          + ("which is incomplete or bad" if pointer.checkpoint in skipped or
                             pointer.checkpoint not in candidates else "an older checkpoint"))
            return selection.Resolved(cid, self.checkpoint_url(manifest), manifest.step, manifest.epoch, manifest, reason)
        return None

    # ---------------------------------------------------------------- verify
    def verify(self, checkpoint_id: str | None = None, *, checksums: bool = False) -> list[Problem]:
        """The problems :meth:`check` finds (empty when clean). A run with nothing committed has no
        problems (``[]``: e.g. a sidecar killed during its first upload); ``NoCheckpoint`` is raised
        only for a ``checkpoint_id`` that is not committed."""
        return self.check(checkpoint_id, checksums=checksums, allow_empty=True).problems

    def check(self, checkpoint_id: str | None = None, *, checksums: bool = False,
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
        ids = [checkpoint_id] if checkpoint_id else self.manifest_ids()
        if not ids and not allow_empty:
            raise self.no_checkpoint("nothing is committed under this URL")
        problems: list[Problem] = []
        n_files = n_bytes = 0
        for cid in ids:
            try:
                manifest = self.read_manifest(cid)
            except errors.CorruptCheckpoint as exc:
                problems.append(Problem(cid, str(exc)))
                continue
            if manifest is None:
                raise self.no_checkpoint(f"checkpoint {cid!r} is not committed", fix="see `kresume ls` for ids")
            n_files += len(manifest.files)
            n_bytes += manifest.total_bytes
            size_problems = selection.object_problems(manifest, self._object_sizes(cid))
            problems += [Problem(cid, p) for p in size_problems]
            if checksums and not size_problems:
                def check(f: FileEntry, m: Manifest = manifest) -> str | None:
                    key = layout.data_key(m.id, m.name, f.path or None)
                    got = self._retry(lambda: transfer.remote_crc32c(self.fs, self._path(key), f.size, self.settings), key)
                    return None if got == f.crc32c else f"object {key} crc32c {got} ≠ manifest {f.crc32c}"

                with ThreadPoolExecutor(self.settings.max_workers) as pool:
                    problems += [Problem(cid, p) for p in pool.map(check, manifest.files) if p]
        return VerifyReport(problems, len(ids), n_files, n_bytes)

    # ---------------------------------------------------------------- restore
    def resolve_checkpoint(self, checkpoint: str | None, *, unique: bool = False) -> Manifest:
        """The manifest for ``checkpoint``: an id, a local name, or ``None`` for :meth:`latest`.

        A name matching several committed checkpoints (Lightning's ``last.ckpt`` is committed over
        and over) selects the newest, or with ``unique`` raises ``AmbiguousCheckpoint`` (exit 2)
        listing their ids: ``mark-bad`` must not guess. Bad-marked checkpoints match too. Raises
        ``NoCheckpoint`` when nothing matches (``BucketMissing`` for a missing bucket).
        """
        if checkpoint is None:
            found = self.latest()
            if found is None:
                raise self.no_checkpoint("no valid committed checkpoint to restore",
                                         fix="check the URL; `kresume ls` shows checkpoints marked bad")
            return found.manifest
        if layout.parse_checkpoint_id(checkpoint) is not None:
            manifest = self.read_manifest(checkpoint)
            if manifest is not None:
                return manifest
        manifests = self.list()
        named = [m for m in reversed(manifests) if m.name == checkpoint]
        if len(named) > 1 and unique:
            ids = ", ".join(f"{m.id} (step {'?' if m.step is None else m.step})" for m in named)
            raise errors.AmbiguousCheckpoint(self.url, f"{checkpoint!r} names {len(named)} committed checkpoints: {ids}",
                                             fix="give the id of the one you mean")
        if named:
            return named[0]
        detail, fix = f"no committed checkpoint with id or name {checkpoint!r}", "see `kresume ls` for ids and names"
        raise errors.NoCheckpoint(self.url, detail, fix=fix) if manifests else self.no_checkpoint(detail, fix=fix)

    def restore(self, dest: str | os.PathLike[str], checkpoint: str | None = None, *,
                progress: Progress = None, on_start: Callable[[Manifest], None] | None = None) -> Path:
        """Download a committed checkpoint into folder ``dest``; return the local path of the
        checkpoint (``dest/<name>``).

        Files are downloaded into ``dest/.kresume-restore-<id>/`` (:func:`kresume.store.download.download_file`:
        on S3 concurrent ranges of all files share ``TransferSettings.ranges_in_flight``), each
        checked against its size and the CRC-32C computed as its bytes arrived, and only then
        renamed to ``dest/<name>``, replacing an older copy; a half restore never looks complete.
        A file whose download fails transiently is restarted from scratch (``TransferSettings.attempts``).
        ``progress`` is called with bytes downloaded (never more than each file's size in total,
        retries included). Raises ``CorruptCheckpoint`` on a mismatch, naming the object's URL
        (the temporary folder is removed).
        """
        manifest = self.resolve_checkpoint(checkpoint)
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
            def fetch(f: FileEntry) -> None:
                key = layout.data_key(manifest.id, manifest.name, f.path or None)
                local = staging / manifest.name if not f.path else staging / manifest.name / f.path
                local.parent.mkdir(parents=True, exist_ok=True)
                reported = [0]  # bytes passed to progress for this file (a retry re-reports nothing)

                def attempt() -> str:
                    got = [0]

                    def advance(n: int) -> None:
                        got[0] += n
                        if got[0] > reported[0] and progress:
                            progress(got[0] - reported[0])
                            reported[0] = got[0]

                    try:
                        return download.download_file(self.fs, self._path(key), str(local), f.size, self.settings,
                                                      url=self.key_url(key), progress=advance)
                    except FileNotFoundError as exc:  # the manifest names an object that is gone
                        raise errors.CorruptCheckpoint(self.key_url(key), f"object is missing (manifest says {f.size} B)",
                                                       fix="restore another checkpoint; `kresume verify` lists the damage") from exc

                crc = self._retry(attempt, key)
                size = local.stat().st_size
                if size != f.size:
                    raise errors.CorruptCheckpoint(self.key_url(key), f"downloaded {size} B, manifest says {f.size} B")
                if crc != f.crc32c:
                    raise errors.CorruptCheckpoint(self.key_url(key), f"crc32c {crc} ≠ manifest {f.crc32c}")

            # On S3 the files' ranges share the process-wide ``ranges_in_flight`` slots. Twice as many
            # files are started, so a shard's request is already queued when another finishes (measured,
            # 64 x 16 MB: all slots busy 93 % of the time instead of 75 %); waiting files hold no buffers.
            width = max(self.settings.max_workers,
                        2 * self.settings.ranges_in_flight if transfer.is_s3_async(self.fs) else 0)
            with ThreadPoolExecutor(max(1, min(width, len(manifest.files))), thread_name_prefix="kresume-restore") as pool:
                futures = [pool.submit(fetch, f) for f in manifest.files]
                try:
                    for fut in futures:
                        fut.result()
                except BaseException:
                    for fut in futures:  # fail fast: files not started yet are not downloaded
                        fut.cancel()
                    raise
            # Give the copy the original's mtime: a sidecar watching ``dest`` (the restore init step
            # writes into the checkpoint folder) then recognises it as already committed.
            mtime_ns = manifest.source.get("mtime_ns")
            if isinstance(mtime_ns, int) and mtime_ns > 0:
                for f in manifest.files:
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

    # ---------------------------------------------------------------- retention
    def mark_bad(self, checkpoint_id: str, reason: str) -> str | None:
        """Mark a committed checkpoint bad: resolution skips it from now on. When the pointer named
        it, the pointer is moved to the newest valid checkpoint (returned; None when it did not
        move), so readers of ``latest.json`` stop landing on it."""
        doc = json.dumps({"checkpoint": checkpoint_id, "reason": reason, "at": _now()}).encode()
        self._retry(lambda: transfer.write_small(self.fs, self._path(layout.bad_key(checkpoint_id)), doc),
                    layout.bad_key(checkpoint_id))
        return self.repair_pointer()

    def prune(self, keep_last: int, keep_every: int | None = None, *, protect: Iterable[str] = (),
              dry_run: bool = False, orphans_older_than: float | None = None) -> retention.PrunePlan:
        """Delete old checkpoints by the rules of :mod:`kresume.store.retention`.

        Only checkpoints not marked bad count toward ``keep_last``/``keep_every``; bad-marked ones,
        the pointer's target and the checkpoint :meth:`latest` resolves to are never deleted.
        Each deletion removes the manifest first (so the checkpoint is no longer committed), then
        its data objects. With ``orphans_older_than`` (seconds), data folders without a manifest
        whose commit started longer ago than that (interrupted commits) are deleted too and listed
        in the plan's ``delete`` with reason ``orphan``.
        """
        pointer, ids, bad = self._read_state()
        found = self._resolve(pointer, ids, bad)
        steps = {cid: (k.step if k.step >= 0 else None) for cid in ids if (k := layout.parse_checkpoint_id(cid))}
        plan = retention.plan_prune(steps, keep_last=keep_last, keep_every=keep_every,
                                    pointer_id=pointer.checkpoint if pointer else None, protect=protect,
                                    bad=bad, latest_id=found.checkpoint_id if found else None)
        orphans: list[str] = []
        if orphans_older_than is not None:
            committed = set(ids)
            cutoff = time.time() - orphans_older_than
            for cid in self._ls_names(contract.CHECKPOINTS_DIR):
                started = layout.id_started_at(cid)
                if cid not in committed and started is not None and started.timestamp() < cutoff:
                    orphans.append(cid)
        if not dry_run:
            for cid in plan.delete:
                self._retry(lambda c=cid: self._rm(layout.manifest_key(c)), layout.manifest_key(cid))
                self._retry(lambda c=cid: self._rm(layout.data_prefix(c), recursive=True), layout.data_prefix(cid))
            for cid in orphans:
                self._retry(lambda c=cid: self._rm(layout.data_prefix(c), recursive=True), layout.data_prefix(cid))
        reasons = dict(plan.reasons)
        reasons.update({cid: "orphan" for cid in orphans})
        return retention.PrunePlan(plan.keep, plan.delete + orphans, reasons)

    def _rm(self, key: str, recursive: bool = False) -> None:
        try:
            self.fs.rm(self._path(key), recursive=recursive)
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache(self._path(key))
