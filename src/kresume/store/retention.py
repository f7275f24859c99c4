"""Pure retention rules: which committed checkpoints a prune keeps.

Rules (DESIGN.md invariant 3 and the CheckpointPolicy's ``retention``; the bad-mark rules come from a
first-time user's report, where ``prune --keep-last 1`` with the newest checkpoint marked bad left
the run nothing to resume from):

- only *valid* checkpoints — committed and not marked bad (``kresume mark-bad``) — count toward
  ``keep_last`` and ``keep_every``;
- keep the ``keep_last`` newest valid checkpoints (by id order: step, then commit start);
- with ``keep_every=K``, also keep every valid checkpoint whose step is a multiple of K (a sparse
  history for evaluation or rollback); checkpoints with unknown step are not kept by this rule;
- always keep the newest valid checkpoint that :meth:`RunStore.latest` resolves to (it also checks
  that the objects exist, so it can be older than the newest valid id), the pointer's target and
  every protected id;
- keep every checkpoint a *live pin* names (a pod resumed from it and still runs; docs/store-protocol.md
  "Pins": a lease in the store, so a sidecar honours other pods' needs without Kubernetes credentials);
- keep one *fallback*: the newest *verified* valid checkpoint older than ``latest`` (verified: some
  manifest records it as ``source.resumed_from``, so a pod loaded it and then committed), or, when
  none is verified, the newest valid one older than ``latest`` (issue 11: with ``keepLast: 1`` a
  newest checkpoint that does not load left nothing to resume from);
- never delete a checkpoint marked bad: it is kept with reason ``"marked bad"``, so a mistaken mark
  can be undone (``kresume unmark-bad``), and removing bad checkpoints is a human decision;
- keep every checkpoint whose objects a kept checkpoint's aliases name (docs/store-protocol.md "Aliases"),
  whole (manifest and data), and so on for what it aliases in turn: a kept checkpoint stays restorable.

Deletion order is enforced by the caller: manifest first (un-commit), then data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from kresume.store import layout

MARKED_BAD = "marked bad"
"""Reason given for every bad-marked checkpoint (kept, never deleted by the keep rules)."""


@dataclass(frozen=True)
class PrunePlan:
    """Result of :func:`plan_prune`: ids to keep and delete (newest first) and why each is kept."""

    keep: list[str]
    delete: list[str]
    reasons: dict[str, str] = field(default_factory=dict)


def plan_prune(
    steps: Mapping[str, int | None],
    *,
    keep_last: int,
    keep_every: int | None = None,
    pointer_id: str | None = None,
    protect: Iterable[str] = (),
    bad: Iterable[str] = (),
    latest_id: str | None = None,
    pinned: Mapping[str, Iterable[str]] | None = None,
    verified: Iterable[str] = (),
    aliased: Mapping[str, Iterable[str]] | None = None,
) -> PrunePlan:
    """Decide what to delete (rules in the module docstring).

    Parameters
    ----------
    steps : mapping
        Committed checkpoint id → step (``None`` when unknown).
    keep_last : int
        ≥ 1: valid (not bad-marked) checkpoints to keep, newest first. Raises ``ValueError``
        otherwise (a prune that deletes everything is never what a user meant).
    keep_every : int, optional
        ≥ 1 when given.
    pointer_id : str, optional
        The pointer's target (kept).
    protect : iterable of str
        Ids to keep (checkpoints live pods resumed from).
    bad : iterable of str
        Ids marked bad: kept, and not counted toward ``keep_last``/``keep_every``.
    latest_id : str, optional
        The checkpoint resolution picks (:meth:`RunStore.latest`), kept; the fallback is chosen below it.
    pinned : mapping, optional
        Id → holders of *live* pins on it (the caller drops stale pins), kept.
    verified : iterable of str
        Ids some manifest records as ``source.resumed_from`` (preferred as the fallback).
    aliased : mapping, optional
        Id → ids of the other checkpoints whose objects its manifest's aliases name
        (:func:`kresume.store.selection.alias_targets`); the targets of a kept id are kept.

    Returns
    -------
    PrunePlan
        ``keep`` and ``delete`` newest first; ``reasons`` has one entry per kept id (several reasons
        joined by ``", "``).
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be ≥ 1, got {keep_last}")
    if keep_every is not None and keep_every < 1:
        raise ValueError(f"keep_every must be ≥ 1, got {keep_every}")
    protected = set(protect)
    marked = set(bad)
    pins = {cid: sorted(set(h)) for cid, h in (pinned or {}).items()}
    ordered = layout.sort_newest_first(list(steps))
    fallback, fallback_why = _fallback(ordered, marked, latest_id, set(verified))
    keep: list[str] = []
    delete: list[str] = []
    reasons: dict[str, str] = {}
    valid_seen = 0
    for cid in ordered:
        step = steps[cid]
        why = []
        if cid in marked:
            why.append(MARKED_BAD)
        else:
            if valid_seen < keep_last:
                why.append(f"one of the {keep_last} newest valid")
            elif keep_every and step is not None and step % keep_every == 0:
                why.append(f"step {step} is a multiple of {keep_every}")
            valid_seen += 1
        if cid == latest_id and not why:
            why.append("the newest valid checkpoint (`latest` resolves to it)")
        if cid == pointer_id:
            why.append("the pointer's target")
        if cid in protected:
            why.append("protected (a pod resumed from it)")
        if pins.get(cid):
            why.append("pinned by " + ", ".join(pins[cid]) + " (a live pod resumed from it)")
        if cid == fallback:
            why.append(fallback_why)
        if why:
            keep.append(cid)
            reasons[cid] = ", ".join(why)
        else:
            delete.append(cid)
    _keep_alias_targets(keep, delete, reasons, aliased or {})
    return PrunePlan(layout.sort_newest_first(keep), layout.sort_newest_first(delete), reasons)


def _keep_alias_targets(keep: list[str], delete: list[str], reasons: dict[str, str],
                        aliased: Mapping[str, Iterable[str]]) -> None:
    """Move to ``keep`` every checkpoint a kept one's aliases name, transitively, adding the reason."""
    todo = list(keep)
    while todo:
        cid = todo.pop()
        for target in sorted(set(aliased.get(cid, ()))):
            why = f"holds the bytes of {cid}'s alias"
            if target in delete:
                delete.remove(target)
                keep.append(target)
                reasons[target] = why
                todo.append(target)
            elif target in reasons and why not in reasons[target]:
                reasons[target] += ", " + why


def _fallback(ordered: list[str], bad: set[str], latest_id: str | None, verified: set[str]) -> tuple[str | None, str]:
    """The fallback of the module docstring: ``(id, reason)``, or ``(None, "")`` when ``latest_id``
    is unknown or nothing valid is older than it."""
    if latest_id is None or latest_id not in ordered:
        return None, ""
    older = [cid for cid in ordered[ordered.index(latest_id) + 1:] if cid not in bad]
    for cid in older:
        if cid in verified:
            return cid, "the fallback: newest verified checkpoint older than latest (a pod loaded it, then committed)"
    if older:
        return older[0], "the fallback: newest valid checkpoint older than latest (none is verified yet)"
    return None, ""


def orphan_is_old(newest_modified: datetime, store_now: datetime, older_than: float) -> bool:
    """Pure orphan rule: an uncommitted checkpoint may be deleted when its newest object (data or
    part), by the store's clock, is more than ``older_than`` seconds older than the store's now."""
    return (store_now - newest_modified).total_seconds() > older_than
