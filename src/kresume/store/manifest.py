"""The manifest (a checkpoint's commit record) and the pointer, and their JSON form.

A manifest lists every data object of one checkpoint with its size and CRC-32C (Castagnoli,
RFC 3720 §12.1; the checksum GCS and S3 use), encoded as 8 lowercase hex digits of the
big-endian value. Readers reject a manifest that is not valid JSON, has another version, or
whose paths escape the checkpoint (``..``, absolute), so a damaged or hostile manifest can never
make a restore write outside its destination.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from kresume import contract
from kresume.store import layout


class ManifestInvalid(ValueError):
    """A manifest or pointer document is malformed; the message names the field."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a checkpoint: ``path`` relative to the checkpoint (``""`` for a single-file checkpoint),
    ``size`` in bytes, ``crc32c`` 8 hex digits.

    ``alias`` is ``""`` for a file stored under the checkpoint's own prefix, else the key (relative to
    the run) of an object with the same size and CRC-32C that holds its bytes:
    ``checkpoints/<id>/<name>[/<relpath>]`` of an earlier committed checkpoint of the run, or of another
    file of this one (docs/store-protocol.md "Aliases"). Such a manifest is written as version
    :data:`~kresume.contract.MANIFEST_VERSION_ALIASES`.
    """

    path: str
    size: int
    crc32c: str
    alias: str = ""


@dataclass(frozen=True)
class LinkEntry:
    """A symlink inside a checkpoint, recorded (never followed, never uploaded)."""

    path: str
    target: str


@dataclass(frozen=True)
class Manifest:
    """Commit record of one checkpoint.

    Attributes
    ----------
    id : str
        Checkpoint id (see :mod:`kresume.store.layout`).
    name : str
        Local file or folder name (``epoch=3-step=400.ckpt``, ``checkpoint-400``).
    kind : str
        ``"file"`` or ``"dir"``.
    format : str
        ``lightning``, ``torch``, ``safetensors``, ``hf``, ``dcp``, ``deepspeed``, ``marker`` or ``unknown``.
    step, epoch : int or None
        Parsed from the name or the format's metadata.
    files : tuple of FileEntry
    links : tuple of LinkEntry
    created_at : str
        ISO-8601 UTC time the local checkpoint was last written (newest file mtime).
    committed_at : str
        ISO-8601 UTC time the manifest was written.
    source : dict
        ``host``, ``pod``, ``namespace``, ``path``, ``mtime_ns`` — where it came from.
    """

    id: str
    name: str
    kind: str
    format: str
    step: int | None
    epoch: int | None
    files: tuple[FileEntry, ...]
    links: tuple[LinkEntry, ...] = ()
    created_at: str = ""
    committed_at: str = ""
    source: dict[str, Any] = field(default_factory=dict)
    version: int = contract.MANIFEST_VERSION

    @property
    def total_bytes(self) -> int:
        """Sum of the files' sizes (what a restore writes), bytes; aliased files included."""
        return sum(f.size for f in self.files)

    @property
    def stored_bytes(self) -> int:
        """Bytes stored under this checkpoint's own prefix (aliased files excluded), bytes."""
        return sum(f.size for f in self.files if not f.alias)

    @property
    def aliases(self) -> bool:
        """Whether some file's bytes are another object's (:attr:`FileEntry.alias`)."""
        return any(f.alias for f in self.files)

    def object_key(self, entry: FileEntry) -> str:
        """Key (relative to the run) of the object holding ``entry``'s bytes: its alias target, or its own key."""
        return entry.alias or layout.data_key(self.id, self.name, entry.path or None)

    def to_json(self) -> bytes:
        """Serialise (UTF-8 JSON, sorted keys). A manifest with an alias is written as version
        :data:`~kresume.contract.MANIFEST_VERSION_ALIASES`, one without as version 1 (byte-identical
        to what readers without aliases write and read); ``alias`` appears only on aliased files."""
        doc = asdict(self)
        doc["files"] = [{k: v for k, v in f.items() if k != "alias" or v} for f in doc["files"]]
        doc["version"] = contract.MANIFEST_VERSION_ALIASES if self.aliases else contract.MANIFEST_VERSION
        doc["totalBytes"] = self.total_bytes
        return json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes | str, *, expected_id: str | None = None) -> Manifest:
        """Parse and validate; raises :class:`ManifestInvalid` naming the bad field."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestInvalid(f"not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ManifestInvalid("not a JSON object")
        version = doc.get("version")
        if version not in (contract.MANIFEST_VERSION, contract.MANIFEST_VERSION_ALIASES):
            raise ManifestInvalid(f"version: {version!r} is not {contract.MANIFEST_VERSION} or "
                                  f"{contract.MANIFEST_VERSION_ALIASES} (written by a newer kresume? upgrade this one)")
        for key in ("id", "name", "kind", "format"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise ManifestInvalid(f"{key}: missing or not a string")
        if expected_id is not None and doc["id"] != expected_id:
            raise ManifestInvalid(f"id: {doc['id']!r} does not match its key {expected_id!r}")
        if doc["kind"] not in ("file", "dir"):
            raise ManifestInvalid(f"kind: {doc['kind']!r} is not 'file' or 'dir'")
        check_relpath(doc["name"], "name", allow_empty=False, single=True)
        files = []
        for i, f in enumerate(doc.get("files") or []):
            if not isinstance(f, dict) or not isinstance(f.get("size"), int) or f["size"] < 0 \
                    or not isinstance(f.get("crc32c"), str) or not isinstance(f.get("path"), str):
                raise ManifestInvalid(f"files[{i}]: needs path (str), size (int ≥ 0), crc32c (str)")
            check_relpath(f["path"], f"files[{i}].path", allow_empty=doc["kind"] == "file")
            alias = f.get("alias", "")
            if alias:
                if version != contract.MANIFEST_VERSION_ALIASES:
                    raise ManifestInvalid(f"files[{i}].alias: only a version {contract.MANIFEST_VERSION_ALIASES} "
                                          "manifest may hold aliases (a reader without them would restore a hole)")
                check_alias_key(alias, f"files[{i}].alias")
            files.append(FileEntry(f["path"], f["size"], f["crc32c"], alias))
        if not files:
            raise ManifestInvalid("files: empty")
        own = {layout.data_key(doc["id"], doc["name"], f.path or None): f for f in files}
        for i, f in enumerate(files):
            if not f.alias:
                continue
            twin = own.get(f.alias)  # an alias into this checkpoint names a stored file of it, same size and CRC
            if f.alias in own and (twin is None or twin.alias or (twin.size, twin.crc32c) != (f.size, f.crc32c)):
                raise ManifestInvalid(f"files[{i}].alias: {f.alias!r} is not another stored file of this "
                                      "checkpoint with the same size and crc32c")
            if twin is None and alias_checkpoint(f.alias) == doc["id"]:
                raise ManifestInvalid(f"files[{i}].alias: {f.alias!r} names no file of this checkpoint")
        links = []
        for i, ln in enumerate(doc.get("links") or []):
            if not isinstance(ln, dict) or not isinstance(ln.get("path"), str) or not isinstance(ln.get("target"), str):
                raise ManifestInvalid(f"links[{i}]: needs path and target strings")
            check_relpath(ln["path"], f"links[{i}].path", allow_empty=False)
            links.append(LinkEntry(ln["path"], ln["target"]))
        for key in ("step", "epoch"):
            if doc.get(key) is not None and not isinstance(doc[key], int):
                raise ManifestInvalid(f"{key}: not an integer")
        return cls(
            id=doc["id"], name=doc["name"], kind=doc["kind"], format=doc["format"],
            step=doc.get("step"), epoch=doc.get("epoch"), files=tuple(files), links=tuple(links),
            created_at=str(doc.get("created_at", "")), committed_at=str(doc.get("committed_at", "")),
            source=dict(doc.get("source") or {}), version=doc["version"],
        )


@dataclass(frozen=True)
class Pointer:
    """The run's ``latest.json``: a hint naming the newest committed checkpoint."""

    checkpoint: str
    url: str
    step: int | None
    updated_at: str
    version: int = contract.MANIFEST_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Pointer:
        """Parse; raises :class:`ManifestInvalid` when malformed."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestInvalid(f"pointer is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("checkpoint"), str):
            raise ManifestInvalid("pointer: checkpoint missing")
        return cls(doc["checkpoint"], str(doc.get("url", "")), doc.get("step"), str(doc.get("updated_at", "")))


def alias_checkpoint(key: str) -> str:
    """The checkpoint id an alias key names (``checkpoints/<id>/…`` → ``<id>``; ``""`` when malformed)."""
    parts = key.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == contract.CHECKPOINTS_DIR else ""


def check_alias_key(key: str, fld: str) -> None:
    """Raise :class:`ManifestInvalid` naming ``fld`` unless ``key`` is ``checkpoints/<kresume id>/<safe path>``:
    an alias can only name a data object of the same run (never a pointer, part, manifest or another run)."""
    if not isinstance(key, str):
        raise ManifestInvalid(f"{fld}: not a string")
    check_relpath(key, fld, allow_empty=False)
    cid = alias_checkpoint(key)
    if not cid or layout.parse_checkpoint_id(cid) is None:
        raise ManifestInvalid(f"{fld}: {key!r} is not checkpoints/<checkpoint id>/<name>[/<path>]")


def check_relpath(path: str, fld: str, *, allow_empty: bool, single: bool = False) -> None:
    if path == "":
        if allow_empty:
            return
        raise ManifestInvalid(f"{fld}: empty")
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts) or "\x00" in path:
        raise ManifestInvalid(f"{fld}: {path!r} is not a safe relative path")
    if single and len(parts) != 1:
        raise ManifestInvalid(f"{fld}: {path!r} must be a single name")
