"""Cheap content checks of one open file (an fd), each reading a few bytes.

Sources: writers.md §1 (torch writes the zip central directory and EOCD last, so an EOCD plus a
``zipfile.ZipFile`` open catches every truncation, 0.06 ms on 50 MB), torch's legacy format
(:mod:`kresume.formats.legacy`: the pickles declare every storage's size) and the safetensors format
(8-byte little-endian header length N, N bytes of JSON, then data whose largest ``data_offsets`` end
is exactly ``size - 8 - N``).
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile

from kresume.formats.verdicts import COMPLETE, Verdict, corrupt, incomplete

ZIP_LOCAL_MAGIC = b"PK\x03\x04"
EOCD_MAGIC = b"PK\x05\x06"
EOCD_MIN = 22
EOCD_SEARCH = 65535 + EOCD_MIN  # the EOCD comment is at most 64 KiB
SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # the safetensors crate's own limit


class FdReader(io.RawIOBase):
    """A seekable read-only file object over an fd using ``pread`` (does not own the fd)."""

    def __init__(self, fd: int, size: int):
        self._fd, self._size, self._pos = fd, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        data = os.pread(self._fd, len(b), self._pos)
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)


def sniff(fd: int) -> bytes:
    """The first 8 bytes of the file (fewer if it is shorter)."""
    return os.pread(fd, 8, 0)


def check_zip(fd: int, size: int) -> Verdict:
    """Torch zip checkpoint (``.ckpt``/``.pt``/``.pth``/``.bin``): EOCD at the end, then a
    ``ZipFile`` open that parses the central directory. A missing end record means the file is still
    being written or was truncated (``incomplete``; the caller turns a long-unchanged one into
    ``corrupt``)."""
    if size == 0:
        return incomplete("empty file (torch.save has not written yet)")
    if size < EOCD_MIN:
        return incomplete(f"{size} B is shorter than a zip end record")
    tail_len = min(size, EOCD_SEARCH)
    tail = os.pread(fd, tail_len, size - tail_len)
    if len(tail) < tail_len:
        return incomplete("file shrank while reading (being rewritten)")
    if tail.rfind(EOCD_MAGIC) < 0:
        return incomplete("no zip end-of-central-directory record (still being written or truncated)")
    try:
        with zipfile.ZipFile(io.BufferedReader(FdReader(fd, size))) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return incomplete(f"zip central directory unreadable ({exc})")
    if not names:
        return corrupt("zip archive has no members")
    return COMPLETE


def check_safetensors(fd: int, size: int) -> Verdict:
    """safetensors: the header's largest data end must equal ``size - 8 - N`` exactly."""
    if size < 8:
        return incomplete(f"{size} B is shorter than the 8-byte safetensors header length")
    (n,) = struct.unpack("<Q", os.pread(fd, 8, 0))
    if n > SAFETENSORS_MAX_HEADER:
        return corrupt(f"safetensors header length {n} exceeds {SAFETENSORS_MAX_HEADER}")
    if size < 8 + n:
        return incomplete(f"header needs {8 + n} B, file has {size} B")
    raw = os.pread(fd, n, 8)
    try:
        header = json.loads(raw)
    except ValueError as exc:
        return corrupt(f"safetensors header is not JSON ({exc})")
    if not isinstance(header, dict):
        return corrupt("safetensors header is not a JSON object")
    end = 0
    for key, val in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(val["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            return corrupt(f"tensor {key!r} has no valid data_offsets")
    want = 8 + n + end
    if size < want:
        return incomplete(f"data ends at {want} B, file has {size} B (truncated or still written)")
    if size > want:
        return corrupt(f"file has {size} B, header accounts for {want} B")
    return COMPLETE


def check_json(fd: int, size: int) -> Verdict:
    """A JSON document that parses (HF ``trainer_state.json``, ``config.json``)."""
    if size == 0:
        return incomplete("empty JSON file")
    try:
        json.loads(os.pread(fd, size, 0))
    except ValueError as exc:
        return incomplete(f"JSON does not parse yet ({exc})")
    return COMPLETE


def check_file(fd: int, size: int, name: str) -> Verdict | None:
    """Dispatch by name and magic; ``None`` means "no content rule for this file" (the caller
    decides, e.g. by the settle window or by the folder's marker)."""
    lower = name.lower()
    if lower.endswith(".safetensors"):
        return check_safetensors(fd, size)
    if lower.endswith(".json"):
        return check_json(fd, size)
    if lower.endswith((".ckpt", ".pt", ".pth", ".bin")):
        if size == 0:
            return incomplete("empty file (torch.save has not written yet)")
        if sniff(fd)[:4] == ZIP_LOCAL_MAGIC:
            return check_zip(fd, size)
        from kresume.formats import legacy

        return legacy.check(fd, size)  # None: neither torch format (the caller decides)
    return None
