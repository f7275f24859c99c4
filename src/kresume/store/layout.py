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
from dataclasses import dataclass
from datetime import UTC, datetime

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


def new_checkpoint_id(step: int | None, now: datetime | None = None, rand: str | None = None) -> str:
    """Return a fresh checkpoint id for a commit of a checkpoint at ``step`` starting ``now`` (UTC)."""
    now = now or clock.now()
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
