"""Pure resolution rules: which committed checkpoint a run resumes from (DESIGN.md invariant 2).

A checkpoint is *valid* when its manifest parses, is not marked bad, and every data object it
lists exists with the recorded size. The newest valid checkpoint (by id order: step, then commit
start) wins. The pointer is a fast path: when it names the newest id and that checkpoint is valid,
one manifest read and one listing answer the question.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kresume.store import layout
from kresume.store.manifest import Manifest, alias_checkpoint


@dataclass(frozen=True)
class Resolved:
    """The checkpoint to resume from.

    ``url`` is what Lightning's ``ckpt_path`` takes (a file URL for a file checkpoint, a folder
    URL for a folder checkpoint). ``fallback_reason`` says why the pointer was not used, if it wasn't.
    """

    checkpoint_id: str
    url: str
    step: int | None
    epoch: int | None
    manifest: Manifest
    fallback_reason: str | None = None


def candidate_order(manifest_ids: Iterable[str], bad_ids: Iterable[str]) -> list[str]:
    """Checkpoint ids to try, newest first, without those marked bad."""
    bad = set(bad_ids)
    return [i for i in layout.sort_newest_first(list(manifest_ids)) if i not in bad]


def object_problems(manifest: Manifest, sizes: Mapping[str, int]) -> list[str]:
    """Problems of a checkpoint given ``sizes``: data key (relative to the run) → size in bytes.

    ``sizes`` must cover the checkpoint's own prefix and the prefix of every checkpoint an alias names
    (:func:`alias_targets`). Returns an empty list when every file's object (its own, or its alias
    target: docs/store-protocol.md "Aliases") exists with the recorded size.
    """
    problems = []
    for f in manifest.files:
        key = manifest.object_key(f)
        got = sizes.get(key)
        via = f" (alias of {layout.data_key(manifest.id, manifest.name, f.path or None)})" if f.alias else ""
        if got is None:
            problems.append(f"missing object {key}{via}")
        elif got != f.size:
            problems.append(f"object {key}{via} has {got} B, manifest says {f.size} B")
    return problems


def alias_targets(manifest: Manifest) -> list[str]:
    """Ids of the other checkpoints whose objects ``manifest``'s aliases name (sorted; ``[]`` without aliases):
    the prefixes that must be listed, besides its own, to validate it."""
    return sorted({a for f in manifest.files if f.alias and (a := alias_checkpoint(f.alias)) != manifest.id})


WRITE, KEEP, CHECK = "write", "keep", "check"
"""Answers of :func:`pointer_decision`."""


def pointer_decision(current_id: str | None, new_id: str) -> str:
    """Whether the pointer may move from ``current_id`` to ``new_id`` (docs/store-protocol.md "Pointer moves").

    Returns :data:`WRITE` when there is no (parseable) current target or ``new_id`` sorts after it;
    :data:`KEEP` when it already names ``new_id``; :data:`CHECK` when the current target is newer:
    the caller writes only if that target is missing, invalid or bad-marked (the pointer never moves
    backwards from a valid target).
    """
    if current_id is None:
        return WRITE
    if current_id == new_id:
        return KEEP
    current, new = layout.parse_checkpoint_id(current_id), layout.parse_checkpoint_id(new_id)
    if current is None or (new is not None and new > current):
        return WRITE
    return CHECK
