"""Is a unit complete? Per-format rules over the listing plus cheap content checks.

Rules and their sources (writers.md):

- ``torch`` file: zip end record + ``ZipFile`` open (§1), or a legacy (non-zip) ``torch.save``
  stream whose pickles declare every storage (:mod:`kresume.formats.legacy`). A file that stays
  unfinished longer than the settle window is ``corrupt`` (truncated), so the log says so once
  instead of "still writing" forever; a file that is neither torch format is refused as an
  unknown format once it has settled (it may still be being written before).
- ``safetensors`` file: header length vs size.
- ``unknown`` file: unmodified for the settle window.
- ``hf`` folder: ``trainer_state.json`` (written last, §4) parses, is at least as new as every other
  file, no temp file (``.tmpXXXX``) is left, and every member passes its own check.
- ``dcp`` folder: ``.metadata`` exists, no ``.metadata.tmp``, ``.metadata`` is at least as new as
  every shard (§3 pitfall: a re-save rewrites shards while the old ``.metadata`` exists), and every
  shard is at least as long as ``.metadata``'s storage extents say.
- ``deepspeed``: ``latest`` names this tag or a newer one, every rank's shard for
  ``dp_world_size`` (read from the model-states pickle) exists and is zip-valid (§5: ``latest`` is
  written before the last rank's shard).
- ``marker`` folder: the marker exists and is at least as new as every other file; every member
  passes its own check.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
from collections.abc import Callable
from typing import TypeVar

from kresume.formats import checks, peek
from kresume.formats.listing import Entry, Listing
from kresume.formats.safeopen import UnsafePath, open_beneath, unreadable_message
from kresume.formats.units import Rules, Unit, is_temp
from kresume.formats.verdicts import COMPLETE, Verdict, corrupt, incomplete, worst

T = TypeVar("T")
_DS_SHARD = re.compile(r"zero_pp_rank_(\d+)_mp_rank_(\d+)_(optim|model)_states\.pt$")
_DS_MP_MODEL = re.compile(r"^mp_rank_(\d+)_model_states\.pt$")
_TRAILING_INT = re.compile(r"(\d+)\D*$")


class ContentReader:
    """Reads files beneath ``root`` safely (:func:`open_beneath`) and caches content verdicts by
    ``Entry.fingerprint`` so an unchanged file is read once."""

    def __init__(self, root: str):
        self.root = os.fspath(root)
        self._cache: dict[tuple[str, int, int, int, int], Verdict | None] = {}

    def with_fd(self, entry: Entry, fn: Callable[[int, int], T]) -> T:
        """Call ``fn(fd, size)`` on the file; the fd's inode must still be the listed one,
        otherwise ``OSError(ESTALE)`` (the name was replaced since the scan)."""
        fd = open_beneath(self.root, entry.rel)
        try:
            st = os.fstat(fd)
            if entry.ino and st.st_ino != entry.ino:
                raise OSError(errno.ESTALE, f"{entry.rel} was replaced since the scan")
            return fn(fd, st.st_size)
        finally:
            os.close(fd)

    def check(self, entry: Entry) -> Verdict | None:
        """Content verdict of one file (``None``: no content rule applies)."""
        key = entry.fingerprint
        if key in self._cache:
            return self._cache[key]
        try:
            v = self.with_fd(entry, lambda fd, size: checks.check_file(fd, size, entry.name))
        except OSError as exc:
            return self.os_verdict(entry, exc)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = v
        return v

    def os_verdict(self, entry: Entry, exc: OSError) -> Verdict:
        """Translate an ``OSError`` while reading ``entry`` into a verdict."""
        path = os.path.join(self.root, entry.rel)
        if exc.errno in (errno.EACCES, errno.EPERM):
            return Verdict("unreadable", unreadable_message(path))
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EINVAL):
            return corrupt(f"{entry.rel}: a symlink or non-regular file on the path; not followed")
        return incomplete(f"{entry.rel} vanished or changed while checking ({exc.strerror or exc})")


def step_of(name: str) -> int | None:
    """The trailing integer of a tag/folder name (``global_step30`` → 30), else ``None``."""
    m = _TRAILING_INT.search(name)
    return int(m.group(1)) if m else None


def judge(
    unit: Unit,
    listing: Listing,
    reader: ContentReader,
    *,
    now_ns: int,
    settle_ns: int,
    rules: Rules = Rules(),
) -> Verdict:
    """Verdict for ``unit`` at time ``now_ns`` (ns since the epoch); ``settle_ns`` is the quiet
    period for files without a content rule and for declaring a stuck file truncated."""
    try:
        fn = _JUDGES[unit.format]
    except KeyError:
        return corrupt(f"unknown format {unit.format!r}")
    try:
        return fn(unit, listing, reader, now_ns, settle_ns, rules)
    except UnsafePath as exc:
        return corrupt(str(exc))


def _settled(e: Entry, now_ns: int, settle_ns: int) -> bool:
    return now_ns - e.mtime_ns >= settle_ns


def _file_verdict(e: Entry, reader: ContentReader, now_ns: int, settle_ns: int) -> Verdict:
    v = reader.check(e)
    if v is None:
        if _settled(e, now_ns, settle_ns):
            return COMPLETE
        return incomplete(f"{e.rel}: no content check for this type; waiting until unmodified for "
                          f"{settle_ns / 1e9:g} s")
    if v.state == "incomplete" and _settled(e, now_ns, settle_ns) and "vanished" not in v.reason:
        return corrupt(f"{e.rel}: truncated — {v.reason}; unchanged for {settle_ns / 1e9:g} s")
    if v.state != "complete" and not v.reason.startswith(e.rel) and v.state != "unreadable":
        return Verdict(v.state, f"{e.rel}: {v.reason}")
    return v


def _single(unit: Unit, listing: Listing, reader: ContentReader, now_ns: int, settle_ns: int,
            rules: Rules) -> Verdict:
    (e,) = unit.entries
    if unit.format == "unknown":
        if _settled(e, now_ns, settle_ns):
            return COMPLETE
        return incomplete(f"{e.rel}: modified less than {settle_ns / 1e9:g} s ago")
    if unit.format == "torch" and reader.check(e) is None:
        if not _settled(e, now_ns, settle_ns):
            return incomplete(f"{e.rel}: not a torch zip or legacy torch.save file (yet); waiting until "
                              f"unmodified for {settle_ns / 1e9:g} s")
        return corrupt(f"{e.rel}: unknown format — neither a torch zip archive nor a legacy torch.save stream, "
                       "so its completeness cannot be judged; not committed. Save it with torch.save, or put "
                       "other data in a folder with a .kresume-complete marker written last")
    return _file_verdict(e, reader, now_ns, settle_ns)


def _members(unit: Unit, reader: ContentReader, now_ns: int, settle_ns: int,
             skip: tuple[str, ...] = ()) -> Verdict:
    """Every member file passes its own check (files without a rule pass); temp files block."""
    out: list[Verdict] = []
    for e in unit.files:
        if is_temp(e.name):
            return incomplete(f"{e.rel}: temp file present (a write is in progress)")
        if e.rel in skip:
            continue
        v = reader.check(e)
        if v is not None and not v.ok:
            out.append(_file_verdict(e, reader, now_ns, settle_ns))
    return worst(out)


def _newest_last(unit: Unit, last: Entry, what: str) -> Verdict:
    """No temp file is left, and ``last`` (written last by the writer) is at least as new as every
    other file."""
    for e in unit.files:
        if is_temp(e.name):
            return incomplete(f"{e.rel}: temp file present (a write is in progress)")
    for e in unit.files:
        if e.rel != last.rel and e.mtime_ns > last.mtime_ns:
            return incomplete(f"{e.rel} is newer than {what} (being rewritten)")
    return COMPLETE


def _hf(unit: Unit, listing: Listing, reader: ContentReader, now_ns: int, settle_ns: int,
        rules: Rules) -> Verdict:
    state = listing.get(f"{unit.rel}/trainer_state.json")
    if state is None or state.kind != "file":
        return incomplete(f"{unit.rel}: no trainer_state.json yet (HF Trainer writes it last)")
    for v in (reader.check(state) or COMPLETE, _newest_last(unit, state, "trainer_state.json")):
        if not v.ok:
            return v
    return _members(unit, reader, now_ns, settle_ns)


def _dcp(unit: Unit, listing: Listing, reader: ContentReader, now_ns: int, settle_ns: int,
         rules: Rules) -> Verdict:
    if f"{unit.rel}/.metadata.tmp" in listing:
        return incomplete(f"{unit.rel}: .metadata.tmp present (dcp.save is finishing)")
    meta = listing.get(f"{unit.rel}/.metadata")
    if meta is None or meta.kind != "file":
        return incomplete(f"{unit.rel}: no .metadata yet (dcp.save renames it in last)")
    v = _newest_last(unit, meta, ".metadata")
    if not v.ok:
        return v
    extents = dcp_extents(unit, reader, meta)
    if isinstance(extents, Verdict):
        return extents
    for rel, need in sorted(extents.items()):
        e = listing.get(f"{unit.rel}/{rel}")
        if e is None or e.kind != "file":
            return corrupt(f"{unit.rel}: shard {rel} named by .metadata is missing")
        if e.size < need:
            return corrupt(f"{unit.rel}/{rel}: {e.size} B, .metadata needs {need} B")
    return _members(unit, reader, now_ns, settle_ns)


def dcp_extents(unit: Unit, reader: ContentReader, meta: Entry) -> dict[str, int] | Verdict:
    """The bytes each shard file must hold, read from the unit's DCP ``.metadata`` entry ``meta``
    (``{relative shard path: minimum size in B}``, :func:`peek.dcp_storage_extents`: no code executed), or the
    verdict that says why it cannot be read (an OS error; corrupt when it does not unpickle or has no
    ``storage_data``)."""
    try:
        extents = peek.dcp_storage_extents(reader.with_fd(meta, peek.read_all))
    except OSError as exc:
        return reader.os_verdict(meta, exc)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        return corrupt(f"{unit.rel}/.metadata does not unpickle ({exc})")
    if extents is None:
        return corrupt(f"{unit.rel}/.metadata has no storage_data (not a DCP checkpoint?)")
    return extents


def deepspeed_announced(unit: Unit, listing: Listing, reader: ContentReader) -> tuple[Verdict, str]:
    """``(verdict, shard_dir)``: whether DeepSpeed's ``latest`` names this tag (or a newer one, for a
    tag folder) and the folder holding the tag's files (writers.md §5: ``latest`` is written by global
    rank 0 after its own files)."""
    latest = listing.get(unit.latest_rel or "")
    if latest is None or latest.kind != "file":
        return incomplete(f"{unit.rel}: no `latest` file announces it yet"), unit.rel
    try:
        tag = reader.with_fd(latest, lambda fd, size: os.pread(fd, min(size, 4096), 0)).decode(
            "utf-8", "replace").strip()
    except OSError as exc:
        return reader.os_verdict(latest, exc), unit.rel
    if not tag or "/" in tag or tag in (".", ".."):
        return incomplete(f"{latest.rel} is empty or invalid ({tag!r}); being rewritten"), unit.rel
    if latest.rel.startswith(unit.rel + "/"):  # Lightning-style root: the tag lives inside the unit
        shard_dir = f"{unit.rel}/{tag}"
        if shard_dir not in listing:
            return incomplete(f"{latest.rel} names {tag}, which does not exist yet"), shard_dir
        return COMPLETE, shard_dir
    if tag != unit.name:
        mine, theirs = step_of(unit.name), step_of(tag)
        if mine is None or theirs is None or mine >= theirs:
            return incomplete(f"{latest.rel} names {tag}, not {unit.name} (yet)"), unit.rel
    return COMPLETE, unit.rel


def _deepspeed(unit: Unit, listing: Listing, reader: ContentReader, now_ns: int, settle_ns: int,
               rules: Rules) -> Verdict:
    announced, shard_dir = deepspeed_announced(unit, listing, reader)
    if not announced.ok:
        return announced
    return worst([_ds_shards(unit, shard_dir, listing, reader), _members(unit, reader, now_ns, settle_ns)])


def _ds_shards(unit: Unit, shard_dir: str, listing: Listing, reader: ContentReader) -> Verdict:
    files = [e for e in unit.files if e.parent == shard_dir]
    model = [e for e in files if _DS_MP_MODEL.match(e.name) or e.name.endswith("_model_states.pt")]
    if not model:
        return incomplete(f"{shard_dir}: no *_model_states.pt yet")
    ranks: dict[tuple[int, str], set[int]] = {}
    for e in files:
        m = _DS_SHARD.search(e.name)
        if m:
            ranks.setdefault((int(m.group(2)), m.group(3)), set()).add(int(m.group(1)))
    world = None
    for e in sorted(model, key=lambda e: e.name):
        v = reader.check(e)
        if v is not None and not v.ok:
            return Verdict(v.state, f"{e.rel}: {v.reason}")
        try:
            world = reader.with_fd(e, peek.deepspeed_world_size)
        except OSError as exc:
            return reader.os_verdict(e, exc)
        if world:
            break
    for (mp, kind), got in sorted(ranks.items()):
        want = world or (max(got) + 1)
        missing = sorted(set(range(want)) - got)
        if missing:
            src = "dp_world_size" if world else "highest rank"
            return incomplete(f"{shard_dir}: {kind} shards of ranks {missing} missing "
                              f"(mp_rank {mp}, {want} expected from {src})")
    return COMPLETE


def _marker(unit: Unit, listing: Listing, reader: ContentReader, now_ns: int, settle_ns: int,
            rules: Rules) -> Verdict:
    m = listing.get(f"{unit.rel}/{rules.marker}")
    if m is None or m.kind != "file":
        return incomplete(f"{unit.rel}: no {rules.marker} marker")
    v = _newest_last(unit, m, rules.marker)
    if not v.ok:
        return v
    return _members(unit, reader, now_ns, settle_ns)


_JUDGES = {
    "torch": _single,
    "safetensors": _single,
    "unknown": _single,
    "hf": _hf,
    "dcp": _dcp,
    "deepspeed": _deepspeed,
    "marker": _marker,
}
