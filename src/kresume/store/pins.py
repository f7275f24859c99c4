"""Pins: a live pod's lease on the checkpoint it resumed from (docs/store-protocol.md "Pins, verified
fallbacks and retention"; DESIGN.md invariant 3: retention never deletes a checkpoint a live pod
resumed from).

A sidecar whose pod resumed from checkpoint X writes ``pins/<holder>.json`` (``holder``: its pod's
name) at start, rewrites it every ``ttl/3`` and deletes it on a clean exit. Nobody needs Kubernetes
credentials to honour it: a pin is live while ``store_now − LastModified(pin) < ttl_seconds``, both
from the store's clock (:class:`kresume.store.clock.StoreClock`), so a crashed holder's pin simply
goes stale.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from kresume import contract
from kresume.store import clock, errors, layout, transfer

if TYPE_CHECKING:
    from kresume.store.runstore import RunStore

DEFAULT_TTL_SECONDS = 600
"""Default lease of a pin, seconds: renewed every ``ttl/3`` (200 s), it survives two missed renewals."""

_HOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


@dataclass(frozen=True)
class Pin:
    """One pin as read from the store.

    ``modified`` is its LastModified (store clock; ``None`` when the backend reports none);
    ``age_seconds`` and ``live`` are filled in against the store's ``now`` (``live`` is ``True``
    when either time is unknown: a pin of unknown age protects).
    """

    holder: str
    checkpoint: str
    ttl_seconds: float
    pod: str = ""
    namespace: str = ""
    modified: datetime | None = None
    age_seconds: float | None = None
    live: bool = True


def key(holder: str) -> str:
    """Relative key of ``holder``'s pin."""
    return f"{contract.PINS_DIR}/{holder}{contract.MANIFEST_SUFFIX}"


def is_live(modified: datetime | None, now: datetime | None, ttl_seconds: float) -> bool:
    """Pure lease rule: live while ``now - modified < ttl_seconds`` (unknown times: live)."""
    if modified is None or now is None:
        return True
    return (now - modified).total_seconds() < ttl_seconds


def judge(found: Iterable[Pin], now: datetime | None) -> list[Pin]:
    """``found`` with ``age_seconds`` and ``live`` computed against the store's ``now``."""
    return [replace(p, age_seconds=(now - p.modified).total_seconds() if now and p.modified else None,
                    live=is_live(p.modified, now, p.ttl_seconds)) for p in found]


def pin(store: RunStore, holder: str, checkpoint: str, ttl_seconds: float = DEFAULT_TTL_SECONDS, *,
        pod: str = "", namespace: str = "") -> None:
    """Write (or renew) ``holder``'s pin on ``checkpoint`` (an id, or the resume URL
    ``KRESUME_RESUME_FROM`` names) for ``ttl_seconds``.

    Raises ``UsageError`` for a holder that is not a pod-name-like token, a checkpoint that is
    neither a kresume id nor a URL holding one, or a ttl ≤ 0.
    """
    if not _HOLDER.match(holder or ""):
        raise errors.UsageError(store.url, f"pin holder {holder!r} is not a name of [A-Za-z0-9._-] (≤ 253)",
                                fix="use the pod's name (KRESUME_POD_NAME)")
    cid = layout.checkpoint_id_of(checkpoint)
    if cid is None:
        raise errors.UsageError(store.url, f"{checkpoint!r} names no checkpoint id",
                                fix="pass an id from `kresume ls` or the URL KRESUME_RESUME_FROM holds")
    if not ttl_seconds > 0:
        raise errors.UsageError(store.url, f"pin ttl_seconds {ttl_seconds!r} is not > 0")
    doc = json.dumps({"checkpoint": cid, "pod": pod or holder, "namespace": namespace, "ttl_seconds": ttl_seconds,
                      "written_at": clock.now_iso()}, sort_keys=True).encode()
    store._retry(lambda: transfer.write_small(store.fs, store._path(key(holder)), doc), key(holder))


def unpin(store: RunStore, holder: str) -> None:
    """Delete ``holder``'s pin (absent is fine)."""
    store._retry(lambda: store._rm(key(holder)), key(holder))


def read_pins(store: RunStore, now: datetime | None = None) -> list[Pin]:
    """Every pin of the run, by holder, with liveness against ``now`` (the store's time; pass
    :meth:`StoreClock.now`). One LIST for the LastModified of all pins, one GET per pin.
    Unreadable pin documents are skipped (a half-written pin cannot exist: writes are atomic)."""
    entries = [e for e in store._ls(contract.PINS_DIR, detail=True)
               if e.get("type", "file") != "directory" and str(e["name"]).endswith(contract.MANIFEST_SUFFIX)]

    def load(entry: dict) -> Pin | None:
        holder = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1][: -len(contract.MANIFEST_SUFFIX)]
        data = store._read(key(holder))
        try:
            doc = json.loads(data) if data else None
            cid, ttl = doc["checkpoint"], float(doc["ttl_seconds"])
        except (ValueError, TypeError, KeyError):
            return None
        return Pin(holder, str(cid), ttl, str(doc.get("pod", "")), str(doc.get("namespace", "")),
                   clock.modified_at(entry))

    if not entries:
        return []
    with ThreadPoolExecutor(min(8, len(entries)), thread_name_prefix="kresume-pins") as pool:
        found = [p for p in pool.map(load, entries) if p is not None]
    return judge(sorted(found, key=lambda p: p.holder), now)
