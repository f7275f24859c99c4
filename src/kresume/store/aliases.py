"""Aliases: a file whose bytes an object already committed in the run holds is not uploaded again.

docs/store-protocol.md "Aliases" is the rule; this module is its commit side:

- :class:`CommittedObjects` — what one process knows is stored in its run: size → objects (key,
  CRC-32C, owning checkpoint, and the digest of its tail once known), from the manifests it committed
  or listed. In memory, bounded.
- :func:`choose` — for a captured checkpoint, which files are aliases: only a file of at least
  :data:`ALIAS_MIN_BYTES` whose size equals a known object's (or another file's of the same
  checkpoint) is looked at; its last :data:`TAIL_BYTES` are compared first (the target's tail is fetched
  with one ranged GET the first time), and only when they match is the file read whole for its CRC-32C
  (its own descriptor only, ``part_size`` pieces under the process-wide :mod:`kresume.store.inflight`
  budget). It becomes an alias only when size, tail AND CRC-32C equal the target's committed values, and
  it must be unchanged after the read (:meth:`~kresume.store.local.LocalFile.check_unchanged`: size,
  mtime, ctime, inode).

Why the tail too: CRC-32C is 32 bits, so two *different* same-size files collide with probability 2^-32
per pair, and restore's CRC check could not tell them apart afterwards. Every step file of a Lightning
run has the same size, so a long run compares many pairs. The tail of a torch/Lightning zip is its
central directory, which holds each record's own CRC-32 (IEEE) and size (PKWARE APPNOTE 4.3.12), an
independent check of every tensor's bytes; for other formats it compares the last 64 KiB byte for byte.
Only the :data:`CANDIDATES` newest same-size objects are compared (the copy a writer makes is of the file
it just wrote). The trigger (measured, bench/RESULTS.md "Aliases"): Lightning's
``ModelCheckpoint(save_last=True)`` re-saves the same state as ``last.ckpt``, byte-identical to the step
file from the second save on.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kresume.store import inflight, layout
from kresume.store.local import LocalCheckpoint, LocalFile
from kresume.store.manifest import FileEntry, Manifest, alias_checkpoint

__all__ = ["ALIAS_MIN_BYTES", "CommittedObjects", "Choice", "StoredObject", "alias_checkpoint", "choose"]

if TYPE_CHECKING:
    from kresume.store.storage import TransferSettings

ALIAS_MIN_BYTES = 2**20
"""Files smaller than this (bytes) are always uploaded: their upload costs about what the alias's checks
cost (a local read, a ranged GET, one listing of the target's prefix, one manifest read)."""

TAIL_BYTES = 2**16
"""Bytes at the end of a file compared with its target's before it becomes an alias (see the module docstring)."""

CANDIDATES = 8
"""Newest same-size committed objects a file is compared with."""

RemoteRange = Callable[[str, int, int], bytes]
"""``(key relative to the run, start, end) -> bytes [start, end)`` of a committed object."""


@dataclass(frozen=True)
class StoredObject:
    """One data object of the run: ``key`` relative to the run, ``size`` bytes, ``crc32c`` 8 hex digits,
    ``owner`` the checkpoint id whose prefix holds it."""

    key: str
    size: int
    crc32c: str
    owner: str


class CommittedObjects:
    """Thread-safe index size → :class:`StoredObject` of committed objects of one run, holding the objects
    of at most ``limit`` owning checkpoints (the newest by id order)."""

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._by_size: dict[int, dict[str, StoredObject]] = {}
        self._owners: dict[str, set[tuple[int, str]]] = {}
        self._tails: dict[str, bytes] = {}
        """Key → SHA-256 of the object's last :data:`TAIL_BYTES` (known for this process's uploads, else
        fetched once when first compared)."""

    def learn(self, manifests: Iterable[Manifest], tails: dict[str, bytes] | None = None) -> None:
        """Add every object ≥ :data:`ALIAS_MIN_BYTES` of committed ``manifests`` (an aliased file adds its
        target, so an alias never names another alias); ``tails``: key → digest of its tail (:func:`tail_digest`)
        where the caller knows it (the files it just uploaded)."""
        with self._lock:
            self._tails.update(tails or {})
            for m in manifests:
                for f in m.files:
                    if f.size < ALIAS_MIN_BYTES:
                        continue
                    key = m.object_key(f)
                    obj = StoredObject(key, f.size, f.crc32c, alias_checkpoint(key) or m.id)
                    self._by_size.setdefault(f.size, {})[key] = obj
                    self._owners.setdefault(obj.owner, set()).add((f.size, key))
            if len(self._owners) > self.limit:
                ranked = layout.sort_newest_first(list(self._owners))
                ranked += sorted(set(self._owners) - set(ranked))
                for owner in ranked[self.limit:]:
                    self._drop_locked(owner)

    def candidates(self, size: int) -> list[StoredObject]:
        """Known objects of exactly ``size`` bytes (newest owner first)."""
        with self._lock:
            found = list(self._by_size.get(size, {}).values())
        order = {cid: i for i, cid in enumerate(layout.sort_newest_first(list({o.owner for o in found})))}
        return sorted(found, key=lambda o: order.get(o.owner, len(order)))

    def tail(self, key: str, fetch: Callable[[], bytes]) -> bytes:
        """The digest of ``key``'s tail: remembered, or ``tail_digest(fetch())`` remembered from now on."""
        with self._lock:
            known = self._tails.get(key)
        if known is None:
            known = hashlib.sha256(fetch()).digest()
            with self._lock:
                self._tails[key] = known
        return known

    def sizes(self) -> set[int]:
        """Sizes of the known objects (bytes)."""
        with self._lock:
            return set(self._by_size)

    def forget(self, owner: str | None = None) -> None:
        """Drop the objects of checkpoint ``owner`` (pruned, or found missing), or all (``None``)."""
        with self._lock:
            for cid in ([owner] if owner is not None else list(self._owners)):
                self._drop_locked(cid)

    def _drop_locked(self, owner: str) -> None:
        for size, key in self._owners.pop(owner, set()):
            self._tails.pop(key, None)
            bucket = self._by_size.get(size, {})
            bucket.pop(key, None)
            if not bucket:
                self._by_size.pop(size, None)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(b) for b in self._by_size.values())


def local_crc32c(local: LocalFile, settings: TransferSettings) -> str:
    """CRC-32C (8 hex digits) of a captured file's ``size`` bytes, read from its descriptor with ``os.pread`` in
    ``part_size`` pieces while holding one buffer of the process-wide in-flight budget.

    Raises ``SourceChanged`` when the file was truncated or changed during the read (size, mtime, ctime, inode;
    a metadata change alone whose bytes still have the CRC computed is accepted, as for an upload).
    """
    from kresume.store import errors

    with inflight.budget(settings.parts_in_flight).hold(1):
        crc = local.content_crc32c(settings.part_size)
    if crc is None:
        raise errors.SourceChanged(local.display, f"fewer than {local.size} B could be read (truncated)")
    local.check_unchanged(crc)  # a chmod/copystat alone is not a change when the bytes still have this CRC
    return crc


@dataclass(frozen=True)
class Choice:
    """An aliased file of a commit: its ``crc32c`` (of the local bytes) and ``alias``, the target's key."""

    crc32c: str
    alias: str


def tail_of(local: LocalFile) -> bytes:
    """The last :data:`TAIL_BYTES` (or fewer) bytes of a captured file, read from its descriptor."""
    start = max(0, local.size - TAIL_BYTES)
    return os.pread(local.fd, local.size - start, start)


def tail_digest(data: bytes) -> bytes:
    """SHA-256 of a tail (what :class:`CommittedObjects` remembers instead of 64 KiB per object)."""
    return hashlib.sha256(data).digest()


def choose(objects: CommittedObjects, checkpoint: LocalCheckpoint, checkpoint_id: str,
           settings: TransferSettings, remote_range: RemoteRange) -> dict[str, Choice]:
    """Which files of ``checkpoint`` (to be committed as ``checkpoint_id``) are aliases: relpath → :class:`Choice`.

    Only a file of at least :data:`ALIAS_MIN_BYTES` whose size equals a known committed object's (or another
    file's of this checkpoint) is looked at. Its tail is compared first (a 64 KiB local read; a committed
    object's tail digest is remembered, or fetched once with ``remote_range``), and only a file whose tail
    matches is read whole for its CRC-32C (:func:`local_crc32c`): a same-size file that is no copy (every
    step file of a run has one size) costs one small read, not a second pass over its bytes. It is an alias
    when size, tail and CRC-32C all equal the target's. A file of the same checkpoint is a target only when
    it is stored (earlier in ``checkpoint.files`` order). Raises ``SourceChanged`` (nothing is committed)
    when a file changed while it was read; store errors of ``remote_range`` propagate.
    """
    counts: dict[int, int] = {}
    for f in checkpoint.files:
        counts[f.size] = counts.get(f.size, 0) + 1
    known = objects.sizes()
    chosen: dict[str, Choice] = {}
    stored_here: dict[tuple[int, bytes], list[tuple[LocalFile, list[str]]]] = {}  # (size, tail) → files, [crc]
    for f in checkpoint.files:
        if f.size < ALIAS_MIN_BYTES or (f.size not in known and counts[f.size] < 2):
            continue
        tail = tail_of(f)
        digest = tail_digest(tail)
        start = f.size - len(tail)
        matches = [o for o in objects.candidates(f.size)[:CANDIDATES]
                   if o.size == f.size and objects.tail(o.key, lambda o=o: remote_range(o.key, start, f.size)) == digest]
        twins = stored_here.setdefault((f.size, digest), [])
        if not matches and not twins:
            twins.append((f, []))
            continue
        crc = local_crc32c(f, settings)
        target = next((o.key for o in matches if o.crc32c == crc), None)
        for twin, twin_crc in twins if target is None else []:
            if not twin_crc:
                twin_crc.append(local_crc32c(twin, settings))
            if twin_crc[0] == crc:
                target = layout.data_key(checkpoint_id, checkpoint.name, twin.relpath or None)
                break
        if target is not None:
            f.check_unchanged(crc)
            chosen[f.relpath] = Choice(crc, target)
        else:
            twins.append((f, [crc]))
    return chosen


def uploaded_tails(checkpoint: LocalCheckpoint, entries: Iterable[FileEntry], checkpoint_id: str) -> dict[str, bytes]:
    """Key → tail digest of every file of ``checkpoint`` uploaded (not aliased) at or above
    :data:`ALIAS_MIN_BYTES`: remembered so that the next same-size commit compares without a GET."""
    by_path = {f.relpath: f for f in checkpoint.files}
    return {layout.data_key(checkpoint_id, checkpoint.name, e.path or None): tail_digest(tail_of(by_path[e.path]))
            for e in entries if not e.alias and e.size >= ALIAS_MIN_BYTES and e.path in by_path}
