"""A run's store: the face the CLI, sidecar, operator and ``resume_from`` use (DESIGN.md "Store protocol").

``RunStore`` owns the run's filesystem, its root and the small shared reads (keys, listings, one
small document); each operation lives in its own module and receives the store:

- :mod:`kresume.store.commit`  — upload a captured checkpoint, write its manifest, move the pointer;
- :mod:`kresume.store.partcommit` — one rank's part of a multi-rank checkpoint, and the commit of the whole;
- :mod:`kresume.store.reading` — list manifests, bad marks, the pointer; resolve ``latest``; pick a checkpoint by id or name;
- :mod:`kresume.store.verify`  — check committed checkpoints (sizes, optionally CRC-32C);
- :mod:`kresume.store.restore` — download a checkpoint into a folder, atomically;
- :mod:`kresume.store.prune`   — bad marks and retention (manifest first, then data; orphans).

Invariants kept (DESIGN.md, numbered as there):

1. Data objects are uploaded first, then the manifest is written (the commit), then the pointer
   is moved — only forward, to a checkpoint newer than its current target.
2. :meth:`RunStore.latest` returns only a checkpoint whose manifest parses and whose objects all
   exist with the recorded sizes; a broken pointer falls back to the newest valid manifest.
3. Every commit writes under a fresh checkpoint id, so committed bytes are never overwritten;
   :meth:`RunStore.prune` deletes the manifest before the data and never the pointer's target.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kresume.store import conditional, errors, layout, pins, reading, selection
from kresume.store.known import Known
from kresume.store.manifest import Manifest, Pointer
from kresume.store.storage import TransferSettings, missing_bucket, open_fs, retrying, transfer_settings

if TYPE_CHECKING:
    from kresume.formats.metadata import CheckpointInfo
    from kresume.store.aliases import CommittedObjects
    from kresume.store import partcommit, parts, retention
    from kresume.store.local import LocalCheckpoint
    from kresume.store.transfer import Progress
    from kresume.store.verify import Problem, VerifyReport

__all__ = ["Problem", "RunStore", "VerifyReport"]

# The operation modules (commit, partcommit, verify, restore, prune, clock) are imported by the method
# that needs them: a one-shot ``kresume restore`` or ``latest`` then loads only reading and restore, not the
# commit path's format checks (bench/RESULTS.md "CLI start-up"; tests/cli/test_cli_startup_imports.py).


def __getattr__(name: str) -> Any:
    """``Problem`` and ``VerifyReport`` (re-exported from :mod:`kresume.store.verify`), imported on first use."""
    if name in ("Problem", "VerifyReport"):
        from kresume.store import verify

        return getattr(verify, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class RunStore:
    """The remote store of one run, at ``<base>/<namespace>/<run>/``.

    Thread-safe for concurrent reads; commits of one run should come from one process (the
    run's sidecar). Every method raises :class:`~kresume.store.errors.StoreError` subclasses,
    never raw backend exceptions.

    Attributes
    ----------
    fs : fsspec.AbstractFileSystem
        The run's filesystem (from :func:`kresume.store.storage.open_fs`).
    root : str
        The run's path on ``fs`` (no trailing slash).
    url : str
        The run's URL, with a trailing slash.
    settings : TransferSettings
        Transfer sizes, concurrency and retry budget.
    """

    def __init__(self, fs: Any, root: str, url: str, settings: TransferSettings) -> None:
        self.fs = fs
        self.root = root
        self.url = url.rstrip("/") + "/"
        self.settings = settings
        self.known = Known()
        """Checkpoints this handle has validated (:mod:`kresume.store.known`); resolution reads only the rest."""
        self._part_cache: partcommit.PartCache | None = None
        self._part_cache_lock = threading.Lock()
        self._objects: CommittedObjects | None = None

    @property
    def _parts(self) -> partcommit.PartCache:
        """Part records already read (:class:`kresume.store.partcommit.PartCache`), made on first use."""
        with self._part_cache_lock:
            if self._part_cache is None:
                from kresume.store import partcommit

                self._part_cache = partcommit.PartCache()
            return self._part_cache

    @property
    def objects(self) -> CommittedObjects:
        """Objects this handle knows are committed in the run, by size: alias targets
        (:class:`kresume.store.aliases.CommittedObjects`), made on first use."""
        with self._part_cache_lock:
            if self._objects is None:
                from kresume.store.aliases import CommittedObjects

                self._objects = CommittedObjects()
            return self._objects

    @objects.setter
    def objects(self, value: CommittedObjects) -> None:
        self._objects = value

    @classmethod
    def open(cls, url: str, storage_options: Mapping[str, Any] | None = None,
             settings: TransferSettings | None = None) -> RunStore:
        """Open the run at ``url`` (no request is made until an operation needs one)."""
        settings = settings or transfer_settings()
        fs, root = open_fs(url, storage_options, deadline=settings.deadline)
        return cls(fs, root, url, settings)

    # ------------------------------------------------------- keys and small shared reads
    def _path(self, key: str) -> str:
        """The ``fs`` path of a key relative to the run (``""`` is the run's root)."""
        return f"{self.root}/{key}" if key else self.root

    def key_url(self, key: str) -> str:
        """Full URL of a relative key (``checkpoints/<id>/<name>`` → ``s3://b/p/…``)."""
        return self.url + key

    def checkpoint_url(self, manifest: Manifest) -> str:
        """The resume URL of a checkpoint: its file, or its folder for folder checkpoints."""
        return self.key_url(layout.data_key(manifest.id, manifest.name, None))

    def _retry(self, fn: Callable[[], Any], what: str = "") -> Any:
        """``fn()`` with the store's retries (:func:`kresume.store.storage.retrying`); ``what`` is the key."""
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

    def _ls(self, key: str, *, detail: bool = False) -> list[Any]:
        """One listing directly under ``key`` that never answers from the filesystem's listing cache
        (``[]`` when absent). s3fs and gcsfs take ``refresh=True``, adlfs ``invalidate_cache=True``;
        invalidating first is not enough when threads of one process list concurrently (another
        thread may refill the cache with an older listing in between)."""
        path = self._path(key)
        kind = conditional.backend(self.fs)
        kwargs = {"refresh": True} if kind in ("s3", "gcs") else {"invalidate_cache": True} if kind == "azure" else {}

        def ls() -> list[Any]:
            if not kwargs:
                self.fs.invalidate_cache(path)
            try:
                return self.fs.ls(path, detail=detail, **kwargs)
            except FileNotFoundError:
                return []

        return self._retry(ls, key)

    def _ls_names(self, key: str) -> list[str]:
        """Base names directly under ``key`` (one uncached listing; ``[]`` when absent)."""
        return [str(n).rstrip("/").rsplit("/", 1)[-1] for n in self._ls(key)]

    def _read(self, key: str) -> bytes | None:
        """The bytes of the object at ``key``, or ``None`` when it does not exist."""
        path = self._path(key)

        def cat() -> bytes | None:
            try:
                return self.fs.cat_file(path)
            except FileNotFoundError:
                return None

        return self._retry(cat, key)

    def _object_sizes(self, checkpoint_id: str) -> dict[str, int]:
        """Data key (relative to the run) → size in bytes of every object under the checkpoint's prefix."""
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

    def _manifest_object_sizes(self, manifest: Manifest, own: dict[str, int] | None = None, *,
                               targets: list[str] | None = None) -> dict[str, int]:
        """:meth:`_object_sizes` of ``manifest``'s own prefix (``own`` when the caller listed it already) and of
        every checkpoint its aliases name (:func:`kresume.store.selection.alias_targets`; listed concurrently,
        so a manifest with aliases costs one more round trip; ``targets`` lists only those): what
        :func:`~kresume.store.selection.object_problems` needs."""
        sizes = dict(self._object_sizes(manifest.id) if own is None else own)
        targets = selection.alias_targets(manifest) if targets is None else targets
        if len(targets) == 1:
            sizes.update(self._object_sizes(targets[0]))
        elif targets:
            for found in reading._pool().map(self._object_sizes, targets):
                sizes.update(found)
        return sizes

    def _rm(self, key: str, recursive: bool = False) -> None:
        """Delete ``key`` (with ``recursive``: everything under it); absent is not an error."""
        try:
            self.fs.rm(self._path(key), recursive=recursive)
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache(self._path(key))

    # ---------------------------------------------------------------- commit
    def commit(self, checkpoint: LocalCheckpoint | str | os.PathLike[str], *, info: CheckpointInfo | None = None,
               source: Mapping[str, Any] | None = None, progress: Progress = None,
               move_pointer: bool = True, resumed_from: str | None = None) -> Manifest:
        """Upload a local checkpoint and commit it (:func:`kresume.store.commit.commit`); ``resumed_from``
        (id or URL of the checkpoint this pod resumed from) is recorded as ``source.resumed_from``."""
        from kresume.store import commit

        return commit.commit(self, checkpoint, info=info, source=source, progress=progress,
                             move_pointer=move_pointer, resumed_from=resumed_from)

    def commit_part(self, checkpoint: LocalCheckpoint | str | os.PathLike[str], *, rank: int,
                    world_size: int | None, epoch: str, info: CheckpointInfo | None = None,
                    expect: parts.Expects | None = None, source: Mapping[str, Any] | None = None,
                    progress: Progress = None, resumed_from: str | None = None) -> partcommit.PartOutcome:
        """Upload this rank's files of a multi-rank unit, record its part, try the commit.

        ``store.commit_part(snap, rank=R, world_size=W, epoch=KRESUME_EPOCH)`` returns a
        :class:`~kresume.store.partcommit.PartOutcome`: ``.committed`` with ``.manifest``, or
        ``.waiting`` (missing ranks/files); call :meth:`try_commit` on reconcile ticks until
        committed (:func:`kresume.store.parts.tick_delay`). Details and errors:
        :func:`kresume.store.partcommit.commit_part`.
        """
        from kresume.store import partcommit

        outcome = partcommit.commit_part(self, checkpoint, rank=rank, world_size=world_size, epoch=epoch, info=info,
                                         expect=expect, source=source, progress=progress, resumed_from=resumed_from)
        if outcome.manifest is not None:
            self.objects.learn([outcome.manifest])  # its objects may be alias targets of single-rank commits
        return outcome

    def try_commit(self, checkpoint_id: str, *, world_size: int | None = None) -> partcommit.PartOutcome:
        """Commit a multi-rank checkpoint whose parts are whole (:func:`kresume.store.partcommit.try_commit`)."""
        from kresume.store import partcommit

        outcome = partcommit.try_commit(self, checkpoint_id, world_size=world_size)
        if outcome.manifest is not None:
            self.objects.learn([outcome.manifest])
        return outcome

    def pending(self) -> list[parts.Waiting]:
        """Uncommitted multi-rank checkpoints with parts, newest first, and what each still needs
        (:func:`kresume.store.partcommit.pending`)."""
        from kresume.store import partcommit

        return partcommit.pending(self)

    def repair_pointer(self) -> str | None:
        """Move the pointer to the newest valid checkpoint when it names an older or broken one
        (:func:`kresume.store.commit.repair_pointer`); the id moved to, or ``None``."""
        from kresume.store import commit

        return commit.repair_pointer(self)

    def write_pointer(self, manifest: Manifest) -> None:
        """Point ``latest.json`` at ``manifest`` (unconditionally)."""
        from kresume.store import commit

        commit.write_pointer(self, manifest)

    def read_pointer(self) -> Pointer | None:
        """The pointer, or ``None`` when absent or unreadable."""
        return reading.read_pointer(self)

    # ---------------------------------------------------------------- reading
    def manifest_ids(self) -> list[str]:
        """Ids of all committed checkpoints, newest first (one listing)."""
        return reading.manifest_ids(self)

    def bad_ids(self) -> set[str]:
        """Ids marked bad."""
        return reading.bad_ids(self)

    def is_bad(self, checkpoint_id: str) -> bool:
        """Whether one checkpoint is marked bad (one request; :func:`kresume.store.reading.is_bad`)."""
        return reading.is_bad(self, checkpoint_id)

    def read_manifest(self, checkpoint_id: str) -> Manifest | None:
        """The manifest of ``checkpoint_id``; ``None`` when absent. Raises CorruptCheckpoint when malformed."""
        return reading.read_manifest(self, checkpoint_id)

    def list(self) -> list[Manifest]:
        """Every committed checkpoint's manifest, oldest first; malformed manifests are left out. Their objects
        become alias targets of this handle's commits (:attr:`objects`)."""
        found = reading.list_manifests(self)
        self.objects.learn(found)
        return found

    def latest(self, *, deadline: float | None = None) -> selection.Resolved | None:
        """The newest valid committed checkpoint, or ``None`` (:func:`kresume.store.reading.latest`)."""
        return reading.latest(self, deadline=deadline)

    def resolve_checkpoint(self, checkpoint: str | None, *, unique: bool = False) -> Manifest:
        """The manifest for an id, a local name, or ``None`` for :meth:`latest`
        (:func:`kresume.store.reading.resolve_checkpoint`)."""
        return reading.resolve_checkpoint(self, checkpoint, unique=unique)

    # ---------------------------------------------------------------- verify
    def verify(self, checkpoint_id: str | None = None, *, checksums: bool = False) -> list[Problem]:
        """The problems :meth:`check` finds (empty when clean; ``[]`` for a run with nothing committed)."""
        from kresume.store import verify

        return verify.check(self, checkpoint_id, checksums=checksums, allow_empty=True).problems

    def check(self, checkpoint_id: str | None = None, *, checksums: bool = False,
              allow_empty: bool = False) -> VerifyReport:
        """Check committed checkpoints, all or one (:func:`kresume.store.verify.check`)."""
        from kresume.store import verify

        return verify.check(self, checkpoint_id, checksums=checksums, allow_empty=allow_empty)

    # ---------------------------------------------------------------- restore
    def restore(self, dest: str | os.PathLike[str], checkpoint: str | Manifest | None = None, *,
                progress: Progress = None, on_start: Callable[[Manifest], None] | None = None,
                rank: int | None = None, cache: Any = None, outcome: dict[str, Any] | None = None) -> Path:
        """Download a committed checkpoint into folder ``dest`` (or copy it from the node-local ``cache``); the
        local path of the checkpoint (``dest/<name>``). With ``rank``, only that rank's files and those no
        rank-specific rule claims (:func:`kresume.store.parts.files_for_rank`) (:func:`kresume.store.restore.restore`)."""
        from kresume.store import restore

        return restore.restore(self, dest, checkpoint, progress=progress, on_start=on_start, rank=rank, cache=cache,
                               outcome=outcome)

    # ---------------------------------------------------------------- retention
    def mark_bad(self, checkpoint_id: str, reason: str) -> str | None:
        """Mark a committed checkpoint bad (:func:`kresume.store.prune.mark_bad`); the id the pointer
        moved to, or ``None``."""
        from kresume.store import prune

        return prune.mark_bad(self, checkpoint_id, reason)

    def unmark_bad(self, checkpoint_id: str) -> str | None:
        """Remove a bad mark (:func:`kresume.store.prune.unmark_bad`); the id the pointer moved to, or ``None``."""
        from kresume.store import prune

        return prune.unmark_bad(self, checkpoint_id)

    # ---------------------------------------------------------------- pins and the store clock
    def pin(self, holder: str, checkpoint_id: str, ttl_seconds: float = pins.DEFAULT_TTL_SECONDS, *,
            pod: str = "", namespace: str = "") -> None:
        """Write or renew ``pins/<holder>.json`` on a checkpoint (id or resume URL) for ``ttl_seconds``
        (:func:`kresume.store.pins.pin`): retention keeps it while the pin is live. Renew every ``ttl/3``."""
        pins.pin(self, holder, checkpoint_id, ttl_seconds, pod=pod, namespace=namespace)

    def unpin(self, holder: str) -> None:
        """Delete ``holder``'s pin (a clean exit)."""
        pins.unpin(self, holder)

    def pins(self) -> list[pins.Pin]:
        """Every pin with its age and liveness by the store's clock (:func:`kresume.store.pins.read_pins`)."""
        found = pins.read_pins(self)
        return pins.judge(found, self.store_now()) if found else []

    def store_now(self) -> datetime | None:
        """The store's own time (:class:`kresume.store.clock.StoreClock`: one PUT + one HEAD)."""
        from kresume.store import clock

        return clock.StoreClock(self).now()

    def prune(self, keep_last: int, keep_every: int | None = None, *, protect: Iterable[str] = (),
              dry_run: bool = False, orphans_older_than: float | None = None) -> retention.PrunePlan:
        """Delete old checkpoints by the rules of :mod:`kresume.store.retention` (:func:`kresume.store.prune.prune`)."""
        from kresume.store import prune

        return prune.prune(self, keep_last, keep_every, protect=protect, dry_run=dry_run,
                           orphans_older_than=orphans_older_than)
