"""Pure rules of multi-rank checkpoints: the part record, the union of parts, and when it commits
(docs/store-protocol.md "Part record" and "Commit of a multi-rank checkpoint"; DESIGN.md invariant 4).

Each rank's sidecar uploads its own files under the one shared prefix ``checkpoints/<id>/<name>/``
and then writes ``parts/<id>/<rank>.json``. :func:`plan_commit` decides from the records alone:

1. the union of every part's files; a path claimed by two parts with different size or CRC-32C is
   a conflict (never committed);
2. what is expected: every part's ``expects`` (``files``: relpath → minimum bytes, e.g. DCP's
   storage extents from ``.metadata``; ``ranks``: a part from each of ``0..W-1``), and, when the
   world size is known, a part from every rank;
3. nothing expected by any part → never committed through parts (no rank says what whole means);
4. otherwise the manifest is a pure function of the records (:func:`manifest_from_parts`), so two
   ranks committing at the same moment write identical bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from kresume import contract
from kresume.store.manifest import FileEntry, LinkEntry, Manifest, ManifestInvalid, check_relpath


@dataclass(frozen=True)
class Expects:
    """What one part says the whole checkpoint must contain.

    Attributes
    ----------
    files : dict
        Relative path inside the unit → minimum size in bytes (DCP: ``.metadata``'s storage extents).
    ranks : int or None
        A part from each of ranks ``0..ranks-1`` (``kresume.dev/parts: all-ranks`` units).
    """

    files: dict[str, int] = field(default_factory=dict)
    ranks: int | None = None

    @property
    def empty(self) -> bool:
        """True when this part expects nothing."""
        return not self.files and not self.ranks

    def to_doc(self) -> dict[str, Any]:
        """The JSON form: ``{"files": {...}}``, ``{"ranks": W}``, both, or ``{}``."""
        doc: dict[str, Any] = {}
        if self.files:
            doc["files"] = dict(sorted(self.files.items()))
        if self.ranks:
            doc["ranks"] = self.ranks
        return doc


@dataclass(frozen=True)
class PartRecord:
    """One rank's part of a multi-rank checkpoint (``parts/<id>/<rank>.json``; immutable once written).

    ``files`` are the rank's own data objects (relative to the unit, like a manifest's); ``source``
    holds ``pod``, ``namespace``, ``host``, ``path``, ``mtime_ns`` (newest local file, ns) and
    ``resumed_from``; ``created_at``/``recorded_at`` are ISO-8601 UTC (newest local mtime; when the
    record was written).
    """

    checkpoint: str
    rank: int
    world_size: int | None
    epoch: str
    name: str
    kind: str
    format: str
    step: int | None
    files: tuple[FileEntry, ...]
    links: tuple[LinkEntry, ...] = ()
    expects: Expects = field(default_factory=Expects)
    source: dict[str, Any] = field(default_factory=dict)
    epoch_of_training: int | None = None
    created_at: str = ""
    recorded_at: str = ""
    version: int = contract.MANIFEST_VERSION

    def to_json(self) -> bytes:
        """Serialise (UTF-8 JSON, sorted keys; ``epoch_of_training`` is written as ``train_epoch``)."""
        doc = asdict(self)
        doc["files"] = [{k: v for k, v in f.items() if k != "alias"} for f in doc["files"]]  # parts never alias
        doc["expects"] = self.expects.to_doc()
        doc["train_epoch"] = doc.pop("epoch_of_training")
        return json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes | str, *, expected_id: str | None = None,
                  expected_rank: int | None = None) -> PartRecord:
        """Parse and validate; raises :class:`~kresume.store.manifest.ManifestInvalid` naming the field."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestInvalid(f"part is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ManifestInvalid("part: not a JSON object")
        if doc.get("version") != contract.MANIFEST_VERSION:
            raise ManifestInvalid(f"part version: {doc.get('version')!r} is not {contract.MANIFEST_VERSION}")
        for key in ("checkpoint", "epoch", "name", "kind", "format"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise ManifestInvalid(f"part {key}: missing or not a string")
        if not isinstance(doc.get("rank"), int) or doc["rank"] < 0:
            raise ManifestInvalid("part rank: missing or not an integer ≥ 0")
        ws = doc.get("world_size")
        if ws is not None and (not isinstance(ws, int) or ws < 1):
            raise ManifestInvalid("part world_size: not an integer ≥ 1")
        if expected_id is not None and doc["checkpoint"] != expected_id:
            raise ManifestInvalid(f"part checkpoint: {doc['checkpoint']!r} does not match its key {expected_id!r}")
        if expected_rank is not None and doc["rank"] != expected_rank:
            raise ManifestInvalid(f"part rank: {doc['rank']} does not match its key {expected_rank}")
        check_relpath(doc["name"], "part name", allow_empty=False, single=True)
        files = []
        for i, f in enumerate(doc.get("files") or []):
            if not isinstance(f, dict) or not isinstance(f.get("size"), int) or f["size"] < 0 \
                    or not isinstance(f.get("crc32c"), str) or not isinstance(f.get("path"), str):
                raise ManifestInvalid(f"part files[{i}]: needs path (str), size (int ≥ 0), crc32c (str)")
            check_relpath(f["path"], f"part files[{i}].path", allow_empty=doc["kind"] == "file")
            files.append(FileEntry(f["path"], f["size"], f["crc32c"]))
        links = []
        for i, ln in enumerate(doc.get("links") or []):
            if not isinstance(ln, dict) or not isinstance(ln.get("path"), str) or not isinstance(ln.get("target"), str):
                raise ManifestInvalid(f"part links[{i}]: needs path and target strings")
            check_relpath(ln["path"], f"part links[{i}].path", allow_empty=False)
            links.append(LinkEntry(ln["path"], ln["target"]))
        exp = doc.get("expects") or {}
        if not isinstance(exp, dict):
            raise ManifestInvalid("part expects: not an object")
        exp_files = exp.get("files") or {}
        if not isinstance(exp_files, dict) or not all(isinstance(k, str) and isinstance(v, int) and v >= 0
                                                       for k, v in exp_files.items()):
            raise ManifestInvalid("part expects.files: needs relpath → minimum bytes (int ≥ 0)")
        for k in exp_files:
            check_relpath(k, "part expects.files key", allow_empty=False)
        exp_ranks = exp.get("ranks")
        if exp_ranks is not None and (not isinstance(exp_ranks, int) or exp_ranks < 1):
            raise ManifestInvalid("part expects.ranks: not an integer ≥ 1")
        for key in ("step", "train_epoch"):
            if doc.get(key) is not None and not isinstance(doc[key], int):
                raise ManifestInvalid(f"part {key}: not an integer")
        return cls(
            checkpoint=doc["checkpoint"], rank=doc["rank"], world_size=ws, epoch=doc["epoch"], name=doc["name"],
            kind=doc["kind"], format=doc["format"], step=doc.get("step"), files=tuple(files), links=tuple(links),
            expects=Expects(dict(exp_files), exp_ranks), source=dict(doc.get("source") or {}),
            epoch_of_training=doc.get("train_epoch"), created_at=str(doc.get("created_at", "")),
            recorded_at=str(doc.get("recorded_at", "")), version=doc["version"],
        )


@dataclass(frozen=True)
class Waiting:
    """An uncommitted multi-rank checkpoint and what it still needs (``missing_files``: relpath →
    why; ``missing_ranks``: ranks without a part; ``reason``: one line)."""

    checkpoint_id: str
    name: str
    step: int | None
    ranks: tuple[int, ...]
    world_size: int | None
    missing_ranks: tuple[int, ...] = ()
    missing_files: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    conflict: bool = False


@dataclass(frozen=True)
class Ready:
    """The union is whole: ``manifest`` is the commit to write (identical for every committer)."""

    manifest: Manifest


def expected_world_size(records: Iterable[PartRecord], world_size: int | None = None) -> int | None:
    """The world size the parts (and the caller) agree on; ``None`` when unknown. Raises
    ``ValueError`` when two disagree (a record from another job shape: never committed)."""
    sizes = {r.world_size for r in records if r.world_size is not None}
    if world_size is not None:
        sizes.add(world_size)
    if len(sizes) > 1:
        raise ValueError(f"parts disagree on the world size: {sorted(sizes)}")
    return next(iter(sizes), None)


def plan_commit(checkpoint_id: str, records: Mapping[int, PartRecord], *,
                world_size: int | None = None) -> Ready | Waiting:
    """Decide whether the parts in ``records`` (rank → record) commit (rules in the module docstring).

    Returns :class:`Ready` with the manifest, or :class:`Waiting` saying what is missing
    (``conflict=True`` when the parts can never commit as they are: two different files under one
    path, disagreeing names, world sizes or links).
    """
    ranks = tuple(sorted(records))
    first = records[ranks[0]] if ranks else None

    def waiting(reason: str, *, conflict: bool = False, missing_ranks: Iterable[int] = (),
                missing_files: Mapping[str, str] | None = None, ws: int | None = None) -> Waiting:
        return Waiting(checkpoint_id, first.name if first else "", first.step if first else None, ranks,
                       ws, tuple(missing_ranks), dict(missing_files or {}), reason, conflict)

    if first is None:
        return waiting("no part recorded yet", ws=world_size)
    try:
        ws = expected_world_size(records.values(), world_size)
    except ValueError as exc:
        return waiting(str(exc), conflict=True)
    for r in ranks:
        rec = records[r]
        if rec.checkpoint != checkpoint_id or rec.rank != r:
            return waiting(f"part of rank {r} names {rec.checkpoint!r} rank {rec.rank}", conflict=True, ws=ws)
        if (rec.name, rec.kind) != (first.name, first.kind):
            return waiting(f"ranks {ranks[0]} and {r} name different units: {first.name!r} ({first.kind}) "
                           f"vs {rec.name!r} ({rec.kind})", conflict=True, ws=ws)
        if ws is not None and r >= ws:
            return waiting(f"rank {r} is outside the world size {ws}", conflict=True, ws=ws)
    union: dict[str, tuple[FileEntry, int]] = {}
    links: dict[str, tuple[str, int]] = {}
    for r in ranks:
        for f in records[r].files:
            seen = union.get(f.path)
            if seen is not None and (seen[0].size, seen[0].crc32c) != (f.size, f.crc32c):
                return waiting(f"{f.path or records[r].name!r} differs between ranks {seen[1]} and {r} "
                               f"({seen[0].size} B crc32c {seen[0].crc32c} vs {f.size} B crc32c {f.crc32c}): "
                               "a unit rewritten in place within one epoch; never committed", conflict=True, ws=ws)
            union.setdefault(f.path, (f, r))
        for ln in records[r].links:
            seen_link = links.get(ln.path)
            if seen_link is not None and seen_link[0] != ln.target:
                return waiting(f"link {ln.path!r} differs between ranks {seen_link[1]} and {r}", conflict=True, ws=ws)
            links.setdefault(ln.path, (ln.target, r))
    need_files: dict[str, int] = {}
    need_ranks = 0
    for rec in records.values():
        for path, size in rec.expects.files.items():
            need_files[path] = max(need_files.get(path, 0), size)
        need_ranks = max(need_ranks, rec.expects.ranks or 0)
    if not need_files and not need_ranks:
        return waiting("no part says what the whole checkpoint holds (no DCP .metadata, DeepSpeed model states "
                       "or expected rank count yet)", ws=ws)
    rank_goal = max(need_ranks, ws or 0)
    missing_ranks = [r for r in range(rank_goal) if r not in records]
    missing_files = {}
    for path, size in sorted(need_files.items()):
        got = union.get(path)
        if got is None:
            missing_files[path] = f"no part has it (≥ {size} B expected)"
        elif got[0].size < size:
            missing_files[path] = f"{got[0].size} B, ≥ {size} B expected (rank {got[1]})"
    if missing_ranks or missing_files:
        bits = []
        if missing_ranks:
            bits.append(f"waiting for rank(s) {_ranges(missing_ranks)}")
        if missing_files:
            bits.append(f"{len(missing_files)} expected file(s) missing")
        return waiting("; ".join(bits), missing_ranks=missing_ranks, missing_files=missing_files, ws=ws)
    files = tuple(sorted((f for f, _ in union.values()), key=lambda f: f.path))
    link_entries = tuple(LinkEntry(p, t) for p, (t, _) in sorted(links.items()))
    return Ready(manifest_from_parts(checkpoint_id, [records[r] for r in ranks], files, link_entries, ws))


def manifest_from_parts(checkpoint_id: str, records: list[PartRecord], files: tuple[FileEntry, ...],
                        links: tuple[LinkEntry, ...], world_size: int | None) -> Manifest:
    """The manifest of a whole multi-rank checkpoint: a pure function of its part records (ordered
    by rank) so that racing committers write identical bytes.

    ``committed_at`` is the newest ``recorded_at``, ``created_at`` the newest ``created_at``;
    ``format``, ``step``, ``epoch`` come from the lowest rank that knows them (rank 0's
    ``.metadata``/model states); ``source`` keeps the lowest rank's ``pod``/``host``/``path``,
    the newest ``mtime_ns``, ``ranks`` (every part's rank, pod, host), ``epoch`` and ``world_size``.
    """
    def first_known(attr: str, default: Any = None) -> Any:
        return next((getattr(r, attr) for r in records if getattr(r, attr) not in (None, "", "unknown")), default)

    low = records[0]
    mtimes = [r.source.get("mtime_ns") for r in records if isinstance(r.source.get("mtime_ns"), int)]
    resumed = next((r.source.get("resumed_from") for r in records if r.source.get("resumed_from")), None)
    source: dict[str, Any] = {
        "pod": low.source.get("pod", ""), "namespace": low.source.get("namespace", ""),
        "host": low.source.get("host", ""), "path": low.source.get("path", ""),
        "mtime_ns": max(mtimes) if mtimes else 0, "epoch": low.epoch, "world_size": world_size,
        "ranks": [{"rank": r.rank, "pod": r.source.get("pod", ""), "host": r.source.get("host", "")} for r in records],
    }
    if resumed:
        source["resumed_from"] = resumed
    return Manifest(
        id=checkpoint_id, name=low.name, kind=low.kind, format=first_known("format", "unknown"),
        step=first_known("step"), epoch=first_known("epoch_of_training"), files=files, links=links,
        created_at=max((r.created_at for r in records), default=""),
        committed_at=max((r.recorded_at for r in records), default=""), source=source,
    )


def _ranges(ranks: list[int]) -> str:
    """``[0, 1, 2, 5]`` → ``"0-2, 5"`` (a stuck rank among thousands stays readable)."""
    out: list[str] = []
    start = prev = None
    for r in ranks:
        if start is None:
            start = prev = r
        elif r == prev + 1:
            prev = r
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = r
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(out)


# ---------------------------------------------------------------- rank-specific files (restore)
_RANK_RULES = (
    ("dcp", re.compile(r"^__(\d+)_\d+\.distcp$")),  # torch.distributed.checkpoint FileSystemWriter
    ("deepspeed", re.compile(r"^(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_\d+_")),  # DeepSpeed ZeRO shards (dp rank)
    # rank_3.pt, model-rank3.bin; not DeepSpeed's mp_rank_00 (model parallel) or pp_rank
    ("generic", re.compile(r"(?:^|[^a-z0-9])(?<!mp_)(?<!pp_)rank[_-]?(\d+)(?=[^0-9]|$)", re.I)),
)


def rank_of_file(path: str) -> int | None:
    """The rank a file belongs to by its name (DCP ``__R_S.distcp``, DeepSpeed ``zero_pp_rank_R_…``,
    or ``rank_R``/``rankR`` in the name), or ``None`` when no rank-specific rule claims it (DCP's
    ``.metadata``, DeepSpeed's ``mp_rank_00_model_states.pt`` and ``latest``): such files every rank needs."""
    base = path.rsplit("/", 1)[-1]
    for _, rule in _RANK_RULES:
        m = rule.search(base)
        if m:
            return int(m.group(1))
    return None


def files_for_rank(files: Iterable[FileEntry], rank: int) -> list[FileEntry]:
    """The files a restore for ``rank`` downloads: those a rank-specific rule gives to ``rank``
    plus those no rule claims (:func:`rank_of_file`)."""
    return [f for f in files if rank_of_file(f.path) in (None, rank)]


# ---------------------------------------------------------------- reconcile schedule
FIRST_TICK_SECONDS = 10.0
"""Delay before the first reconcile retry of an uncommitted part (docs/store-protocol.md)."""
MAX_TICK_SECONDS = 60.0
"""Longest delay between reconcile retries of one uncommitted part."""


def tick_delay(attempt: int) -> float:
    """Seconds before reconcile retry ``attempt`` (0-based) of :meth:`RunStore.try_commit`:
    10 s, then doubling, at most 60 s."""
    return min(MAX_TICK_SECONDS, FIRST_TICK_SECONDS * 2 ** max(0, attempt))
