"""Pure retention rules: which committed checkpoints a prune keeps.

Rules (DESIGN.md invariant 3 and the CheckpointPolicy's ``retention``):
- keep the ``keep_last`` newest checkpoints (by id order);
- with ``keep_every=K``, also keep every checkpoint whose step is a multiple of K (a sparse
  history for evaluation or rollback); checkpoints with unknown step are not kept by this rule;
- always keep the pointer's target and every protected id (a checkpoint a live pod resumed from).
Deletion order is enforced by the caller: manifest first (un-commit), then data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kresume.store import layout


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
) -> PrunePlan:
    """Decide what to delete.

    Parameters
    ----------
    steps : mapping
        Committed checkpoint id → step (``None`` when unknown).
    keep_last : int
        ≥ 1. Raises ``ValueError`` otherwise (a prune that deletes everything is never what a user meant).
    keep_every : int, optional
        ≥ 1 when given.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be ≥ 1, got {keep_last}")
    if keep_every is not None and keep_every < 1:
        raise ValueError(f"keep_every must be ≥ 1, got {keep_every}")
    protected = set(protect)
    ordered = layout.sort_newest_first(list(steps))
    keep: list[str] = []
    delete: list[str] = []
    reasons: dict[str, str] = {}
    for n, cid in enumerate(ordered):
        step = steps[cid]
        if n < keep_last:
            reasons[cid] = f"one of the {keep_last} newest"
        elif cid == pointer_id:
            reasons[cid] = "the pointer's target"
        elif cid in protected:
            reasons[cid] = "protected (a pod resumed from it)"
        elif keep_every and step is not None and step % keep_every == 0:
            reasons[cid] = f"step {step} is a multiple of {keep_every}"
        else:
            delete.append(cid)
            continue
        keep.append(cid)
    return PrunePlan(keep, delete, reasons)
