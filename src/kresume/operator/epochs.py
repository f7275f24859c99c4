"""Resume epochs, pure (docs/store-protocol.md "Resume epochs"; issue 14 item 4): every rank resumes from the same step.

For a run with world size > 1 the operator keeps one *epoch* per run: ``{token, checkpoint, ranks admitted,
world size, started}``, mirrored to ``CheckpointRun.status.epoch`` (the shell, :mod:`kresume.operator.epochbook`,
reads and writes it with the API server's optimistic concurrency, so replicas of the operator agree). The
admission of rank r **joins** the current epoch — the same checkpoint and ``KRESUME_EPOCH`` token, even when a
newer checkpoint was committed since — when (:func:`decide`):

* there is a current epoch of the same world size, whose checkpoint is not marked bad,
* r has not been admitted in it yet (a repeated rank is a restart of that rank: the others restart too) — or
  r's pod in it is still live or was never seen inside the join window (a retried creation; :func:`decide`), and
* it is still open: a pod of it is live, or it started less than ``epochJoinSeconds`` ago.

Otherwise it starts a **new** epoch: the newest valid whole checkpoint now and a fresh token
``<UTC %Y%m%dT%H%M%S%fZ>-<6 hex>`` (the timestamp and random part multi-rank checkpoint ids are made of).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kresume.injection import Resume
from kresume.operator import decisions

JOIN, NEW = "join", "new"
#: What the pod watch knows of a rank's pod in the current epoch (:func:`decide`'s ``rank_pod``).
LIVE, ENDED, UNSEEN = "live", "ended", "unseen"
RANK_POD_STATES = (LIVE, ENDED, UNSEEN)
#: Why :func:`decide` started a new epoch.
FIRST, REPEATED_RANK, CLOSED, BAD_MARK, WORLD_CHANGED = "first", "repeated-rank", "closed", "bad-mark", "world-size"


@dataclass(frozen=True)
class Epoch:
    """One resume epoch of a run: ``token``, the ``resume`` checkpoint (None: a fresh start), the ranks
    admitted, the world size, and when it ``started`` (RFC 3339 UTC)."""

    token: str
    resume: Resume | None
    world_size: int
    started: str
    ranks: tuple[int, ...] = field(default_factory=tuple)

    @property
    def checkpoint(self) -> str | None:
        return self.resume.checkpoint if self.resume is not None else None

    def to_status(self) -> dict[str, Any]:
        """``CheckpointRun.status.epoch`` (camelCase; the resume checkpoint's url/id/name/step)."""
        out: dict[str, Any] = {"token": self.token, "worldSize": self.world_size, "started": self.started,
                               "ranks": sorted(self.ranks)}
        if self.resume is not None:
            out.update(checkpoint=self.resume.checkpoint, url=self.resume.url, name=self.resume.name)
            if self.resume.step is not None:
                out["step"] = self.resume.step
        return out

    @classmethod
    def from_status(cls, doc: dict[str, Any] | None) -> Epoch | None:
        """The epoch of ``status.epoch``, or None when absent or malformed."""
        if not doc or not doc.get("token") or not isinstance(doc.get("worldSize"), int):
            return None
        resume = None
        if doc.get("checkpoint") and doc.get("url"):
            resume = Resume(url=str(doc["url"]), checkpoint=str(doc["checkpoint"]), name=str(doc.get("name") or ""),
                            step=doc["step"] if isinstance(doc.get("step"), int) else None)
        ranks = tuple(int(r) for r in doc.get("ranks") or [] if isinstance(r, int))
        return cls(str(doc["token"]), resume, int(doc["worldSize"]), str(doc.get("started") or ""), ranks)

    def joined(self, rank: int) -> Epoch:
        """This epoch with ``rank`` admitted."""
        return Epoch(self.token, self.resume, self.world_size, self.started, tuple(sorted({*self.ranks, rank})))


def new_token(now: datetime, rand: str | None = None) -> str:
    """``<UTC %Y%m%dT%H%M%S%fZ>-<6 hex>`` (the store protocol's epoch token)."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{rand or secrets.token_hex(3)}"


def decide(current: Epoch | None, rank: int, world_size: int, now: datetime, *, live: bool, bad: bool,
           join_seconds: float, rank_pod: str = "ended") -> tuple[str, str]:
    """``(JOIN, "")`` or ``(NEW, why)`` for the admission of ``rank`` of a run of ``world_size`` (module rules).

    ``live``: a pod of ``current`` is live (the pod watch); ``bad``: ``current``'s checkpoint is marked bad.
    ``rank_pod``: what the pod watch knows of ``rank``'s pod in ``current`` (:data:`RANK_POD_STATES`): ``live``
    (running, not being deleted), ``ended`` (seen, then finished or deleted) or ``unseen``. An admission is not
    a pod: the creation can fail after it (a StatefulSet recreating ``name-1`` gets ``AlreadyExists`` while the
    old object is not gone yet, and retries; a controller may create twice). A repeated rank is a restart only
    when its pod in the epoch has ended; while that pod is live, or inside the join window when no pod of it was
    ever seen, the admission is such a retry and joins (else each retry would start an epoch and split the
    ranks' epochs, so their parts could never meet).
    """
    if current is None:
        return NEW, FIRST
    if current.world_size != world_size:
        return NEW, WORLD_CHANGED
    if bad:
        return NEW, BAD_MARK
    started = decisions.parse_time(current.started)
    recent = started is not None and (now - started).total_seconds() < join_seconds
    if rank in current.ranks:
        retry = rank_pod == LIVE or (rank_pod == UNSEEN and recent)
        return (JOIN, "") if retry else (NEW, REPEATED_RANK)
    return (JOIN, "") if live or recent else (NEW, CLOSED)
