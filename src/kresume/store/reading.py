"""Reading a run: manifests, bad marks, the pointer, and resolution of ``latest`` (invariant 2).

Resolution never trusts the pointer alone: it returns the newest manifest (by id order, without
bad-marked ids) whose objects all exist with their recorded sizes, and says why when that is not
the pointer's target (:class:`kresume.store.selection.Resolved`).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from kresume import contract
from kresume.store import errors, layout, selection
from kresume.store.manifest import Manifest, ManifestInvalid, Pointer

if TYPE_CHECKING:
    from kresume.store.runstore import RunStore


MALFORMED_REREADS = 2
"""Times a manifest or the pointer that does not parse is read again before it counts as damaged.
Both are written whole in one request (a PUT is all or nothing), so a body that does not parse is
most likely one cut on the way: a 200 whose Content-Length matched the cut body, from a server or
middlebox that sends no checksum (tests/faults: without this, one such answer made ``latest`` skip
the only checkpoint of a run, and the next pod start from scratch)."""


def _reread_until_parsed(store: RunStore, key: str, parse):  # type: ignore[no-untyped-def]
    """``parse(bytes)`` of the object at ``key`` (``None`` when absent), read again up to
    :data:`MALFORMED_REREADS` times while it raises ``ManifestInvalid``; the last error is raised."""
    for attempt in range(MALFORMED_REREADS + 1):
        data = store._read(key)
        if data is None:
            return None
        try:
            return parse(data)
        except ManifestInvalid:
            if attempt == MALFORMED_REREADS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def read_pointer(store: RunStore) -> Pointer | None:
    """The pointer, or ``None`` when absent or unreadable (after :data:`MALFORMED_REREADS` re-reads)."""
    try:
        return _reread_until_parsed(store, contract.POINTER_NAME, Pointer.from_json)
    except ManifestInvalid:
        return None


def manifest_ids(store: RunStore) -> list[str]:
    """Ids of all committed checkpoints, newest first (one listing)."""
    return layout.ids_from_manifest_names(store._ls_names(contract.MANIFESTS_DIR))


def bad_ids(store: RunStore) -> set[str]:
    """Ids marked bad (one listing)."""
    return set(layout.ids_from_manifest_names(store._ls_names(contract.BAD_DIR)))


def is_bad(store: RunStore, checkpoint_id: str) -> bool:
    """True when ``checkpoint_id`` carries a bad mark: one GET of ``bad/<id>.json`` (a missing key costs one
    request, where an existence check costs HEAD + LIST on s3fs). For the operator's answers from memory."""
    return store._read(layout.bad_key(checkpoint_id)) is not None


def read_manifest(store: RunStore, checkpoint_id: str) -> Manifest | None:
    """The manifest of ``checkpoint_id``; ``None`` when absent. Raises CorruptCheckpoint when it
    stays malformed over :data:`MALFORMED_REREADS` re-reads."""
    try:
        return _reread_until_parsed(store, layout.manifest_key(checkpoint_id),
                                    lambda data: Manifest.from_json(data, expected_id=checkpoint_id))
    except ManifestInvalid as exc:
        raise errors.CorruptCheckpoint(store.key_url(layout.manifest_key(checkpoint_id)), str(exc)) from exc


def list_manifests(store: RunStore) -> list[Manifest]:
    """Every committed checkpoint's manifest, oldest first; malformed manifests are left out."""
    ids = manifest_ids(store)

    def load(cid: str) -> Manifest | None:
        try:
            return read_manifest(store, cid)
        except errors.CorruptCheckpoint:
            return None

    with ThreadPoolExecutor(8) as pool:
        found = [m for m in pool.map(load, ids) if m is not None]
    return list(reversed(found))


def load_valid(store: RunStore, checkpoint_id: str) -> tuple[Manifest, list[str]] | None:
    """``(manifest, [])`` when the checkpoint's manifest parses and every object it lists exists
    with its recorded size; ``None`` otherwise (absent, malformed or damaged)."""
    try:
        manifest = read_manifest(store, checkpoint_id)
    except errors.CorruptCheckpoint:
        return None
    if manifest is None:
        return None
    problems = selection.object_problems(manifest, store._manifest_object_sizes(manifest))
    return None if problems else (manifest, problems)


def latest(store: RunStore, *, deadline: float | None = None) -> selection.Resolved | None:
    """The newest valid committed checkpoint, or ``None`` when the run has none.

    Parameters
    ----------
    deadline : float, optional
        ``time.monotonic()`` value after which resolution stops and raises ``StoreUnreachable``
        (the webhook's hard time budget).
    """
    return resolve(store, *read_state(store), deadline=deadline)


_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """The process-wide pool for concurrent small reads (created on first use; its threads are reused,
    so a lookup pays no thread start-up on the webhook's latency path)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(16, thread_name_prefix="kresume-read")
        return _POOL


def read_state(store: RunStore) -> tuple[Pointer | None, list[str], set[str]]:
    """Pointer, committed ids (newest first) and bad ids, read concurrently: resolution sits on
    the webhook's latency path, and three sequential round trips become one."""
    pool = _pool()
    f_pointer, f_ids, f_bad = pool.submit(read_pointer, store), pool.submit(manifest_ids, store), \
        pool.submit(bad_ids, store)
    return f_pointer.result(), f_ids.result(), f_bad.result()


def load_known_or_valid(store: RunStore, checkpoint_id: str, listed: set[str] | None = None) -> Manifest | None:
    """The manifest of ``checkpoint_id`` when it is valid: from ``store.known`` when this handle has
    validated it, else read with its objects' listing concurrently (one round trip) and remembered
    when valid. ``None`` when absent, malformed or damaged. Callers pass only ids of a fresh
    ``manifests/`` listing (see :mod:`kresume.store.known`), and that listing as ``listed``: a manifest
    whose aliases name checkpoints listed there and known valid here needs no more requests (their
    objects exist while their manifests do, and retention keeps them while an alias names them); other
    alias targets cost one more round trip (their prefixes listed concurrently)."""
    known = store.known.get(checkpoint_id)
    if known is not None:
        return known
    pool = _pool()
    f_manifest = pool.submit(read_manifest, store, checkpoint_id)
    f_sizes = pool.submit(store._object_sizes, checkpoint_id)
    try:
        manifest = f_manifest.result()
    except errors.CorruptCheckpoint:
        f_sizes.cancel()
        return None
    sizes = f_sizes.result()
    if manifest is not None and manifest.aliases:  # the aliases' targets (docs/store-protocol.md "Aliases")
        sizes = dict(sizes)
        unknown = []
        for target in selection.alias_targets(manifest):
            seen = store.known.get(target) if listed is not None and target in listed else None
            if seen is None:
                unknown.append(target)
            else:
                sizes.update({seen.object_key(f): f.size for f in seen.files if not f.alias})
        if unknown:
            sizes = store._manifest_object_sizes(manifest, sizes, targets=unknown)
    if manifest is None or selection.object_problems(manifest, sizes):
        return None
    store.known.put(manifest)
    return manifest


def resolve(store: RunStore, pointer: Pointer | None, ids: list[str], bad: set[str], *,
            deadline: float | None = None) -> selection.Resolved | None:
    """The newest valid checkpoint among ``ids`` (not in ``bad``), with the reason the pointer was
    not used when it was not; ``None`` when none is valid. Raises ``StoreUnreachable`` past ``deadline``."""
    candidates = selection.candidate_order(ids, bad)
    listed = set(ids)
    skipped: list[str] = []
    for cid in candidates:
        if deadline is not None and time.monotonic() > deadline:
            raise errors.StoreUnreachable(store.url, "resolution exceeded its time budget")
        manifest = load_known_or_valid(store, cid, listed)
        if manifest is None:
            skipped.append(cid)
            continue
        reason = None
        if pointer is None:
            reason = "pointer missing"
        elif pointer.checkpoint != cid:
            reason = (f"pointer names {pointer.checkpoint}, "
                      + ("which is incomplete or bad" if pointer.checkpoint in skipped or
                         pointer.checkpoint not in candidates else "an older checkpoint"))
        return selection.Resolved(cid, store.checkpoint_url(manifest), manifest.step, manifest.epoch, manifest, reason)
    return None


def resolve_checkpoint(store: RunStore, checkpoint: str | None, *, unique: bool = False) -> Manifest:
    """The manifest for ``checkpoint``: an id, a local name, or ``None`` for :func:`latest`.

    A name matching several committed checkpoints (Lightning's ``last.ckpt`` is committed over
    and over) selects the newest, or with ``unique`` raises ``AmbiguousCheckpoint`` (exit 2)
    listing their ids: ``mark-bad`` must not guess. Bad-marked checkpoints match too. Raises
    ``NoCheckpoint`` when nothing matches (``BucketMissing`` for a missing bucket).
    """
    if checkpoint is None:
        found = latest(store)
        if found is None:
            raise store.no_checkpoint("no valid committed checkpoint to restore",
                                      fix="check the URL; `kresume ls` shows checkpoints marked bad")
        return found.manifest
    if layout.parse_checkpoint_id(checkpoint) is not None:
        manifest = read_manifest(store, checkpoint)
        if manifest is not None:
            return manifest
    manifests = list_manifests(store)
    named = [m for m in reversed(manifests) if m.name == checkpoint]
    if len(named) > 1 and unique:
        ids = ", ".join(f"{m.id} (step {'?' if m.step is None else m.step})" for m in named)
        raise errors.AmbiguousCheckpoint(store.url, f"{checkpoint!r} names {len(named)} committed checkpoints: {ids}",
                                         fix="give the id of the one you mean")
    if named:
        return named[0]
    detail, fix = f"no committed checkpoint with id or name {checkpoint!r}", "see `kresume ls` for ids and names"
    raise errors.NoCheckpoint(store.url, detail, fix=fix) if manifests else store.no_checkpoint(detail, fix=fix)
