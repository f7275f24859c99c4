"""Which file or folder is one checkpoint: a pure function over a :class:`Listing`.

Rules (writers.md §1–5), applied to folders top-down; the first match claims the folder and its
whole subtree:

======================================  ===========  ==============================================
folder contains / is named              format       one unit is
======================================  ===========  ==============================================
the marker file (``.kresume-complete``)  ``marker``   the folder
``trainer_state.json`` / ``checkpoint-N`` ``hf``       the folder (HF Trainer)
``.metadata`` or ``*.distcp``           ``dcp``      the folder (``dcp.save``)
``*.ckpt``-named folder with ``latest`` ``deepspeed`` the folder (Lightning DeepSpeed strategy)
or with a subfolder of DeepSpeed files               (ranks > 0 write no ``latest``: same unit name
                                                     on every rank)
``*_model_states.pt``/``*optim_states.pt`` ``deepspeed`` the tag folder (``global_stepN``); its
                                                     parent's ``latest`` announces it
======================================  ===========  ==============================================

Outside claimed folders, regular files named ``*.ckpt``, ``*.pt``, ``*.pth``, ``*.bin`` (format
``torch``) or ``*.safetensors`` are single-file units, and any other file matching an include glob
is an ``unknown`` unit (judged by the settle window). Symlinks there are :class:`Alias` records
(Lightning ``save_last="link"``), never units. Temp names (``*.tmp``, ``.tmp*``, ``*.partial``,
``*.part``, ``*~``) and kresume's own handshake files (``.kresume-trainer.*``) are ignored.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from dataclasses import dataclass, field

from kresume import contract
from kresume.formats.listing import Entry, Listing, children, descendants

MARKER_DEFAULT = ".kresume-complete"
TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
TEMP_PATTERNS = ("*.tmp", ".tmp*", "tmp*.tmp", "*.partial", "*.part", "*~", ".*.swp")
OWN_FILES = (contract.TRAINER_LOCK, contract.TRAINER_NOTICE, contract.RESTORE_RESULT)
"""kresume's own files in the checkpoint folder (the trainer/sidecar handshake of :mod:`kresume.preemption`,
the restore step's result): never checkpoints."""
_HF_NAME = re.compile(r"^checkpoint-\d+$")
_DS_FILE = re.compile(r"(^|_)(model_states|optim_states)\.pt$")


@dataclass(frozen=True)
class Rules:
    """User-tunable discovery rules.

    ``include`` / ``exclude``: fnmatch globs tested against a unit's relative path and its name
    (``*`` also matches ``/``); exclude wins; a non-empty include keeps only matching units and
    makes matching files of unknown type units judged by the settle window.
    ``marker``: file name that declares a folder complete (written last by the user's code).
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    marker: str = MARKER_DEFAULT


@dataclass(frozen=True)
class Unit:
    """One checkpoint: a single file or a folder under the watched root.

    ``entries`` holds the file itself, or every descendant of the folder (files, links, dirs).
    ``latest_rel`` is the DeepSpeed ``latest`` file announcing tags (``None`` for other formats).
    """

    rel: str
    kind: str  # "file" | "folder"
    format: str  # torch | safetensors | unknown | hf | dcp | deepspeed | marker
    entries: tuple[Entry, ...]
    latest_rel: str | None = None

    @property
    def name(self) -> str:
        """The file or folder name (the store's ``Manifest.name``)."""
        return self.rel.rsplit("/", 1)[-1]

    @property
    def files(self) -> tuple[Entry, ...]:
        """Regular files of the unit."""
        return tuple(e for e in self.entries if e.kind == "file")

    @property
    def total_bytes(self) -> int:
        """Sum of regular file sizes, bytes."""
        return sum(e.size for e in self.files)

    @property
    def max_mtime_ns(self) -> int:
        """Newest modification time among its files, ns (0 for an empty folder)."""
        return max((e.mtime_ns for e in self.files), default=0)

    @property
    def fingerprint(self) -> tuple[tuple[str, int, int, int, int], ...]:
        """Changes whenever any file of the unit is written, replaced, added or removed."""
        return tuple(sorted(e.fingerprint for e in self.entries if e.kind in ("file", "link")))


@dataclass(frozen=True)
class Alias:
    """A symlink outside checkpoint folders, e.g. Lightning's ``last.ckpt -> epoch=2-step=30.ckpt``.

    ``resolved`` is the normalised target relative to the root, ``None`` when the target is
    absolute or climbs out of the root (``outside`` is then True). Never read, never uploaded.
    """

    rel: str
    target: str
    resolved: str | None
    outside: bool


@dataclass(frozen=True)
class Discovery:
    """Result of :func:`find_units`: units sorted by rel path, aliases, and ignored names."""

    units: tuple[Unit, ...]
    aliases: tuple[Alias, ...] = ()
    ignored: tuple[str, ...] = field(default=())


def matches(rel: str, patterns: tuple[str, ...]) -> bool:
    """True when ``rel`` or its last component matches any fnmatch pattern (case-sensitive)."""
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def is_temp(name: str) -> bool:
    """Temp names writers use before a rename (HF ``.tmpXXXX``, DCP ``.metadata.tmp``)."""
    return any(fnmatch.fnmatchcase(name, p) for p in TEMP_PATTERNS)


def resolve_link(rel: str, target: str) -> str | None:
    """Normalise a link target relative to the root; ``None`` if absolute or outside."""
    if not target or target.startswith("/"):
        return None
    parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
    norm = posixpath.normpath(posixpath.join(parent, target))
    if norm == "." or norm == ".." or norm.startswith("../"):
        return None
    return norm


def classify_folder(listing: Listing, folder: str, rules: Rules) -> tuple[str, str | None] | None:
    """``(format, latest_rel)`` when ``folder`` is a checkpoint folder, else ``None``."""
    kids = children(listing, folder)
    names = {e.name: e for e in kids}
    fname = folder.rsplit("/", 1)[-1]
    parent = folder.rsplit("/", 1)[0] if "/" in folder else ""
    if rules.marker in names:
        return ("marker", None)
    if "trainer_state.json" in names or _HF_NAME.match(fname):
        return ("hf", None)
    if ".metadata" in names or ".metadata.tmp" in names or any(n.endswith(".distcp") for n in names):
        return ("dcp", None)
    latest = names.get("latest")
    if fname.endswith(TORCH_SUFFIXES) and latest is not None and latest.kind == "file":
        return ("deepspeed", f"{folder}/latest")
    if fname.endswith(TORCH_SUFFIXES) and any(
            e.kind == "dir" and any(k.kind == "file" and _DS_FILE.search(k.name) for k in children(listing, e.rel))
            for e in kids):
        return ("deepspeed", f"{folder}/latest")  # Lightning's DeepSpeed root on a rank that writes no `latest`
    if any(e.kind == "file" and _DS_FILE.search(e.name) for e in kids):
        return ("deepspeed", f"{parent}/latest" if parent else "latest")
    return None


def find_units(listing: Listing, rules: Rules = Rules()) -> Discovery:
    """Decide the checkpoint units of a listing (pure; see the module table for the rules)."""
    units: list[Unit] = []
    aliases: list[Alias] = []
    ignored: list[str] = []

    def visit(folder: str) -> None:
        for e in children(listing, folder):
            if e.kind == "dir":
                cls = classify_folder(listing, e.rel, rules)
                if cls is None:
                    visit(e.rel)
                else:
                    units.append(Unit(e.rel, "folder", cls[0], tuple(descendants(listing, e.rel)), cls[1]))
            elif e.kind == "link":
                res = resolve_link(e.rel, e.target or "")
                aliases.append(Alias(e.rel, e.target or "", res, res is None))
            elif e.kind == "file":
                if is_temp(e.name) or e.name in OWN_FILES:
                    ignored.append(e.rel)
                    continue
                low = e.name.lower()
                if low.endswith(".safetensors"):
                    units.append(Unit(e.rel, "file", "safetensors", (e,)))
                elif low.endswith(TORCH_SUFFIXES):
                    units.append(Unit(e.rel, "file", "torch", (e,)))
                elif rules.include and matches(e.rel, rules.include):
                    units.append(Unit(e.rel, "file", "unknown", (e,)))
                else:
                    ignored.append(e.rel)

    visit("")
    kept: list[Unit] = []
    for u in units:
        if matches(u.rel, rules.exclude) or (rules.include and not matches(u.rel, rules.include)):
            ignored.append(u.rel)
        else:
            kept.append(u)
    return Discovery(tuple(sorted(kept, key=lambda u: u.rel)), tuple(aliases), tuple(sorted(ignored)))
