"""Pure naming rules of a run's remote layout (DESIGN.md "Store protocol").

::

    <run>/checkpoints/<id>/<name>[/<relpath>]   data objects (<name>: the local file or folder name)
    <run>/parts/<id>/<rank>.json                a rank's part record (multi-rank checkpoints)
    <run>/manifests/<id>.json                   the commit record; its existence IS the commit
    <run>/latest.json                           pointer to the newest committed checkpoint
    <run>/bad/<id>.json                         checkpoints marked bad
    <run>/pins/<holder>.json                    a live pod's lease on the checkpoint it resumed from

Two id forms (docs/store-protocol.md "Checkpoint ids"):

- single-rank ``<step>-<UTC commit start>-<random>``, e.g. ``0000000400-20261129T103000123456Z-9f2c1a``
  (``x`` instead of the step when unknown). Every commit gets a fresh id, so a local name rewritten
  after commit (Lightning's ``last.ckpt``) lands under new keys and committed bytes are never
  overwritten (invariant 3);
- multi-rank ``<step from the name>-<epoch ts>-<epoch random>-<tag>``, where the epoch token
  (``KRESUME_EPOCH=<ts>-<random>``) is the same for every rank admitted into one resume epoch and
  ``<tag>`` is the first 6 hex digits of SHA-256 of the unit's name: every rank names the same
  prefix without talking to the others.

Ids order checkpoints: by step, then time stamp, then random part, then tag (a single-rank id has
an empty tag).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kresume import contract
from kresume.store import clock

_ID_RE = re.compile(r"^(?P<step>\d{10,}|x)-(?P<ts>\d{8}T\d{12}Z)-(?P<rand>[0-9a-f]{6})(?:-(?P<tag>[0-9a-f]{6}))?$")
_EPOCH_RE = re.compile(r"^(?P<ts>\d{8}T\d{12}Z)-(?P<rand>[0-9a-f]{6})$")
_TS_FORMAT = "%Y%m%dT%H%M%S%fZ"


@dataclass(frozen=True, order=True)
class CheckpointKey:
    """Sort key of a checkpoint id: newer compares greater. ``step`` is -1 when unknown; ``tag``
    is ``""`` for a single-rank id."""

    step: int
    started: str
    rand: str
    tag: str = ""

    @property
    def multi_rank(self) -> bool:
        """Whether the id is of the multi-rank form (committed through parts)."""
        return bool(self.tag)


_floor_lock = threading.Lock()
_floor: datetime | None = None
"""The newest id time this process issued or saw (:func:`observe_checkpoint_ids`)."""


def observe_checkpoint_ids(ids: Iterable[str]) -> None:
    """Raise this process's id-time floor to the newest time among ``ids`` (foreign names ignored).

    The sidecar calls it with the run's committed ids when it starts, so that its new ids sort after them
    even when the node's clock now reads earlier (stepped back, or ahead when they were written)."""
    global _floor
    times = [t for t in map(id_started_at, ids) if t is not None]
    if times:
        with _floor_lock:
            _floor = max([t for t in (_floor, *times) if t is not None])


def new_checkpoint_id(step: int | None, now: datetime | None = None, rand: str | None = None) -> str:
    """Return a fresh checkpoint id for a commit of a checkpoint at ``step`` starting ``now`` (UTC).

    Without ``now`` the time is the wall clock (:mod:`kresume.store.clock`), but never earlier than 1 µs
    after the newest id this process issued or observed (:func:`observe_checkpoint_ids`), like a hybrid
    logical clock: ids of checkpoints without a step are ordered by this time, and a clock stepped back by
    an hour made every new one sort older than the last, so retention deleted the newest right after its
    commit (tests/faults ``clock_jump``)."""
    global _floor
    if now is None:
        with _floor_lock:
            now = clock.now()
            if _floor is not None and now <= _floor:
                now = _floor + timedelta(microseconds=1)
            _floor = now
    ts = now.astimezone(UTC).strftime(_TS_FORMAT)
    step_part = f"{step:010d}" if step is not None and step >= 0 else "x"
    return f"{step_part}-{ts}-{rand or secrets.token_hex(3)}"


def new_epoch_token(now: datetime | None = None, rand: str | None = None) -> str:
    """A fresh resume-epoch token ``<UTC ts>-<6 hex>`` (``KRESUME_EPOCH``), e.g.
    ``20261129T103000123456Z-9f2c1a``: the operator gives it to every pod of one epoch."""
    now = now or clock.now()
    return f"{now.astimezone(UTC).strftime(_TS_FORMAT)}-{rand or secrets.token_hex(3)}"


def check_epoch_token(token: str) -> str:
    """Return ``token`` when it has the ``<UTC ts>-<6 hex>`` form; raise ``ValueError`` naming
    ``KRESUME_EPOCH`` and the expected form otherwise."""
    if not isinstance(token, str) or not _EPOCH_RE.match(token):
        raise ValueError(f"KRESUME_EPOCH: {token!r} is not <UTC %Y%m%dT%H%M%S%fZ>-<6 hex> "
                         "(the operator sets it; by hand use e.g. 20260101T000000000000Z-000001)")
    return token


def name_tag(name: str) -> str:
    """The multi-rank id's tag of a unit name: the first 6 hex digits of SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(name.encode()).hexdigest()[:6]


def multi_rank_checkpoint_id(name: str, step: int | None, epoch: str) -> str:
    """The id every rank of epoch ``epoch`` gives the unit ``name`` (step parsed from the name by
    the caller: every rank sees the name, not every rank sees the content). Raises ``ValueError``
    for a malformed epoch token (:func:`check_epoch_token`)."""
    ts, rand = check_epoch_token(epoch).split("-")
    step_part = f"{step:010d}" if step is not None and step >= 0 else "x"
    return f"{step_part}-{ts}-{rand}-{name_tag(name)}"


def parse_checkpoint_id(checkpoint_id: str) -> CheckpointKey | None:
    """Return the sort key of ``checkpoint_id`` (either form), or ``None`` when it is not a kresume id."""
    m = _ID_RE.match(checkpoint_id)
    if not m:
        return None
    step = -1 if m["step"] == "x" else int(m["step"])
    return CheckpointKey(step, m["ts"], m["rand"], m["tag"] or "")


def checkpoint_id_of(value: str) -> str | None:
    """The checkpoint id in ``value``: an id itself, or a resume URL ``…/checkpoints/<id>/<name>``
    (what ``KRESUME_RESUME_FROM`` holds); ``None`` when it holds none."""
    if parse_checkpoint_id(value or "") is not None:
        return value
    parts = (value or "").split("/")
    for i, part in enumerate(parts[:-1]):
        if part == contract.CHECKPOINTS_DIR and parse_checkpoint_id(parts[i + 1]) is not None:
            return parts[i + 1]
    return None


def id_started_at(checkpoint_id: str) -> datetime | None:
    """The time stamp of ``checkpoint_id`` (UTC; a multi-rank id's is its epoch's), or ``None`` for a
    foreign name. An ordering hint only (the id-time floor): no age rule uses it."""
    key = parse_checkpoint_id(checkpoint_id)
    if key is None:
        return None
    return datetime.strptime(key.started, _TS_FORMAT).replace(tzinfo=UTC)


def manifest_key(checkpoint_id: str) -> str:
    """Relative key of a checkpoint's manifest."""
    return f"{contract.MANIFESTS_DIR}/{checkpoint_id}{contract.MANIFEST_SUFFIX}"


def bad_key(checkpoint_id: str) -> str:
    """Relative key of a checkpoint's bad mark."""
    return f"{contract.BAD_DIR}/{checkpoint_id}{contract.MANIFEST_SUFFIX}"


def parts_prefix(checkpoint_id: str) -> str:
    """Relative prefix of a multi-rank checkpoint's part records."""
    return f"{contract.PARTS_DIR}/{checkpoint_id}"


def part_key(checkpoint_id: str, rank: int) -> str:
    """Relative key of rank ``rank``'s part record."""
    return f"{parts_prefix(checkpoint_id)}/{rank}{contract.MANIFEST_SUFFIX}"


def ranks_from_part_names(names: list[str]) -> list[int]:
    """Ranks of part-record object names (``<rank>.json``, basename or path), ascending; others ignored."""
    ranks = set()
    for name in names:
        base = name.rstrip("/").rsplit("/", 1)[-1]
        stem = base[: -len(contract.MANIFEST_SUFFIX)] if base.endswith(contract.MANIFEST_SUFFIX) else ""
        if stem.isdigit() and (stem == "0" or not stem.startswith("0")):
            ranks.add(int(stem))
    return sorted(ranks)


def data_prefix(checkpoint_id: str) -> str:
    """Relative prefix under which a checkpoint's data objects live."""
    return f"{contract.CHECKPOINTS_DIR}/{checkpoint_id}"


def data_key(checkpoint_id: str, name: str, relpath: str | None) -> str:
    """Relative key of one data object: ``relpath`` is ``None`` for a single-file checkpoint."""
    base = f"{data_prefix(checkpoint_id)}/{name}"
    return base if not relpath else f"{base}/{relpath}"


def ids_from_manifest_names(names: list[str]) -> list[str]:
    """Checkpoint ids from manifest object names (basename or full path), newest first.

    Names that are not kresume ids are ignored (a user's stray file does not break a run).
    """
    ids = []
    for name in names:
        base = name.rstrip("/").rsplit("/", 1)[-1]
        if not base.endswith(contract.MANIFEST_SUFFIX):
            continue
        cid = base[: -len(contract.MANIFEST_SUFFIX)]
        if parse_checkpoint_id(cid) is not None:
            ids.append(cid)
    return sort_newest_first(ids)


def sort_newest_first(ids: list[str]) -> list[str]:
    """Sort valid checkpoint ids newest first (by :class:`CheckpointKey`)."""
    keyed = [(parse_checkpoint_id(i), i) for i in ids]
    return [i for k, i in sorted((kv for kv in keyed if kv[0] is not None), reverse=True)]
