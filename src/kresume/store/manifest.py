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


class ManifestInvalid(ValueError):
    """A manifest or pointer document is malformed; the message names the field."""


@dataclass(frozen=True)
class FileEntry:
    """One data object: ``path`` relative to the checkpoint (``""`` for a single-file checkpoint)."""

    path: str
    size: int
    crc32c: str


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
        """Sum of the data objects' sizes, bytes."""
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        """Serialise (UTF-8 JSON, sorted keys)."""
        doc = asdict(self)
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
        if doc.get("version") != contract.MANIFEST_VERSION:
            raise ManifestInvalid(f"version: {doc.get('version')!r} is not {contract.MANIFEST_VERSION}")
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
            files.append(FileEntry(f["path"], f["size"], f["crc32c"]))
        if not files:
            raise ManifestInvalid("files: empty")
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
