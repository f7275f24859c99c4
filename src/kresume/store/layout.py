"""Pure naming rules of a run's remote layout (DESIGN.md "Store protocol").

::

    <run>/checkpoints/<id>/<name>[/<relpath>]   data objects (<name>: the local file or folder name)
    <run>/manifests/<id>.json                   the commit record; its existence IS the commit
    <run>/latest.json                           pointer to the newest committed checkpoint
    <run>/bad/<id>.json                         checkpoints marked bad

A checkpoint id is ``<step>-<UTC commit start>-<random>``, e.g. ``0000000400-20261129T103000123456Z-9f2c1a``
(``x`` instead of the step when unknown). Every commit gets a fresh id, so a local name rewritten
after commit (Lightning's ``last.ckpt``) lands under new keys and committed bytes are never
overwritten (invariant 3). Ids order checkpoints: by step, then commit start time.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kresume import contract
from kresume.store import clock

_ID_RE = re.compile(r"^(?P<step>\d{10,}|x)-(?P<ts>\d{8}T\d{12}Z)-(?P<rand>[0-9a-f]{6})$")
_TS_FORMAT = "%Y%m%dT%H%M%S%fZ"


@dataclass(frozen=True, order=True)
class CheckpointKey:
    """Sort key of a checkpoint id: newer compares greater. ``step`` is -1 when unknown."""

    step: int
    started: str
    rand: str


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


def parse_checkpoint_id(checkpoint_id: str) -> CheckpointKey | None:
    """Return the sort key of ``checkpoint_id``, or ``None`` when it is not a kresume id."""
    m = _ID_RE.match(checkpoint_id)
    if not m:
        return None
    step = -1 if m["step"] == "x" else int(m["step"])
    return CheckpointKey(step, m["ts"], m["rand"])


def id_started_at(checkpoint_id: str) -> datetime | None:
    """When the commit of ``checkpoint_id`` started (UTC), or ``None`` for a foreign name."""
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
