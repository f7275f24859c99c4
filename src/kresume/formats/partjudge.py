"""Is one rank's share of a sharded checkpoint complete? What a rank's own folder can show.

In a multi-rank run every pod has its own checkpoint folder, so a rank sees only its own files of a
step (docs/store-protocol.md "Per-rank completeness"). The whole is judged at commit, from the
union of every rank's part (:func:`kresume.store.parts.plan_commit`); here only the rank's share:

Rank 0 hosts the coordinator of both writers (global rank 0 on the pod of node rank 0: DCP's
default ``coordinator_rank``; DeepSpeed writes ``latest`` on ``global_rank == 0``), whose last file
comes after every rank has written its own: so rank 0's share is complete only with that file, and
a rank-0 part never lacks it (a part is immutable; a later ``.metadata`` would be a rewrite).

- ``dcp``: no ``.metadata.tmp`` and no temp file; every local ``*.distcp`` shard readable and
  unmodified for the settle window (DCP shards have no footer; each rank's ``FileSystemWriter``
  writes, fsyncs and closes them, writers.md §3). ``.metadata`` is required on rank 0 only; where
  it is local it must be newer than every local shard (a re-save rewrites shards while the old
  ``.metadata`` exists, writers.md §3 pitfall), unpickle, and every LOCAL shard it names must hold
  its storage extents. Shards it names that live on other pods are expected at commit (the part's
  ``expects``, :mod:`kresume.store.expects`).
- ``deepspeed``: the rank's own files (``zero_pp_rank_R_*``, ``*_model_states.pt``) zip-valid and
  unmodified for the settle window; on rank 0 also ``latest`` naming this tag (or a newer one),
  as on a single pod (:func:`kresume.formats.judge.deepspeed_announced`). Other ranks never see a
  ``latest``.
- every other format: its own whole-unit rule (:func:`kresume.formats.judge.judge`), which a rank's
  folder satisfies by itself (``kresume.dev/parts: all-ranks`` units: a marker written last, …).
"""

from __future__ import annotations

from kresume.formats.judge import (ContentReader, _file_verdict, _newest_last, _settled, dcp_extents,
                                   deepspeed_announced, judge)
from kresume.formats.listing import Entry, Listing
from kresume.formats.safeopen import UnsafePath
from kresume.formats.units import Rules, Unit, is_temp
from kresume.formats.verdicts import COMPLETE, Verdict, corrupt, incomplete, worst

SHARDED_FORMATS = ("dcp", "deepspeed")
"""Formats whose checkpoint is written across ranks, each rank its own files (docs/store-protocol.md
"Which units go through parts")."""



def judge_part(unit: Unit, listing: Listing, reader: ContentReader, *, rank: int, now_ns: int, settle_ns: int,
               rules: Rules = Rules()) -> Verdict:
    """Verdict for rank ``rank``'s share of ``unit`` at ``now_ns`` (ns since the epoch); ``settle_ns``
    is the quiet period for files without a footer. Rules in the module docstring; same states as
    :func:`kresume.formats.judge.judge` (``complete`` means: this rank's part may be recorded)."""
    try:
        if unit.format == "dcp":
            return _dcp_part(unit, listing, reader, rank == 0, now_ns, settle_ns)
        if unit.format == "deepspeed":
            return _deepspeed_part(unit, listing, reader, rank == 0, now_ns, settle_ns)
    except UnsafePath as exc:
        return corrupt(str(exc))
    return judge(unit, listing, reader, now_ns=now_ns, settle_ns=settle_ns, rules=rules)


def _own_files(unit: Unit, reader: ContentReader, now_ns: int, settle_ns: int, why: str,
               checked: tuple[str, ...] = ()) -> Verdict:
    """No temp file; every file readable, passing its content check, and settled (except ``checked``:
    files already proven whole, e.g. a ``.metadata`` that unpickled)."""
    out: list[Verdict] = []
    for e in unit.files:
        if is_temp(e.name):
            return incomplete(f"{e.rel}: temp file present (a write is in progress)")
        if e.rel in checked:
            continue
        v = _file_verdict(e, reader, now_ns, settle_ns) if reader.check(e) is not None else COMPLETE
        if not v.ok:
            out.append(v)
        elif not _settled(e, now_ns, settle_ns):
            out.append(incomplete(f"{e.rel}: {why}; waiting until unmodified for {settle_ns / 1e9:g} s"))
    return worst(out)


def _dcp_part(unit: Unit, listing: Listing, reader: ContentReader, coordinator: bool, now_ns: int,
              settle_ns: int) -> Verdict:
    if f"{unit.rel}/.metadata.tmp" in listing:
        return incomplete(f"{unit.rel}: .metadata.tmp present (dcp.save is finishing)")
    shards = [e for e in unit.files if e.name.endswith(".distcp")]
    meta = listing.get(f"{unit.rel}/.metadata")
    if meta is not None and meta.kind != "file":
        return corrupt(f"{unit.rel}/.metadata is not a regular file")
    if meta is None and coordinator:
        return incomplete(f"{unit.rel}: no .metadata yet (rank 0 coordinates dcp.save and renames it in last, "
                          "once every rank has written its shards)")
    if not shards and meta is None:
        return incomplete(f"{unit.rel}: no shard (*.distcp) of this rank yet")
    if meta is not None:
        v = _newest_last(unit, meta, ".metadata")
        if not v.ok:
            return v
        v = _local_extents(unit, listing, reader, meta)
        if not v.ok:
            return v
    return _own_files(unit, reader, now_ns, settle_ns, "DCP shards have no footer",
                      checked=(meta.rel,) if meta is not None else ())


def _local_extents(unit: Unit, listing: Listing, reader: ContentReader, meta: Entry) -> Verdict:
    """The local shards ``.metadata`` names hold their storage extents (the others live on other pods)."""
    extents = dcp_extents(unit, reader, meta)
    if isinstance(extents, Verdict):
        return extents
    for rel, need in sorted(extents.items()):
        e = listing.get(f"{unit.rel}/{rel}")
        if e is not None and e.kind == "file" and e.size < need:
            return corrupt(f"{unit.rel}/{rel}: {e.size} B, .metadata needs {need} B")
    return COMPLETE


def _deepspeed_part(unit: Unit, listing: Listing, reader: ContentReader, coordinator: bool, now_ns: int,
                    settle_ns: int) -> Verdict:
    if not unit.files:
        return incomplete(f"{unit.rel}: no DeepSpeed file of this rank yet")
    if coordinator:
        announced, _ = deepspeed_announced(unit, listing, reader)
        if not announced.ok:
            return announced
    return _own_files(unit, reader, now_ns, settle_ns, "DeepSpeed shards are checked once settled")
