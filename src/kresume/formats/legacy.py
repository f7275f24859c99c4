"""Legacy ``torch.save`` files (``_use_new_zipfile_serialization=False``), judged from content.

Layout (torch/serialization.py ``_legacy_save``, torch 2.13): five pickles, then the raw storages:

1. ``MAGIC_NUMBER`` (0x1950a86a20f9469cfc6c), 2. ``PROTOCOL_VERSION`` (1001), 3. ``sys_info`` (a dict),
4. the object, whose tensors refer to storages by persistent id
   ``("storage", <torch.XStorage>, key, location, numel, view_metadata)``,
5. the sorted list of storage keys;

then, for each key in that order, the storage as an 8-byte little-endian element count followed by
``count * element_size`` bytes (``UntypedStorage._write_file``; the count is little-endian whatever
the host). So a whole file is exactly ``end of pickle 5 + Σ (8 + numel × element_size)`` bytes long,
and each record's count equals the ``numel`` its persistent id declares.

Nothing is unpickled: :func:`scan` walks the opcodes with :mod:`pickletools` and keeps a symbolic
stack (ints, strings, tuples, lists, globals as names; everything else opaque), enough to read the
persistent ids and the key list. No class is looked up and no code from the file runs.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
from dataclasses import dataclass

from kresume.formats.verdicts import COMPLETE, Verdict, corrupt, incomplete

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

#: Bytes per element of each legacy storage type (torch.storage ``_dtype_to_storage_type_map``:
#: the dtype each name stands for; ``UntypedStorage`` counts bytes).
ELEMENT_SIZES: dict[str, int] = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8, "QUInt8Storage": 1, "QInt8Storage": 1,
    "QInt32Storage": 4, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1, "UntypedStorage": 1,
}


#: The first pickle of a legacy file as each pickle protocol writes it (torch.save's
#: ``pickle_protocol``, default 2): a file is legacy torch only if it starts with one of these.
MAGIC_PICKLES = tuple(sorted({pickle.dumps(MAGIC_NUMBER, protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)}))


def identify(head: bytes) -> bool | None:
    """Does ``head`` (the first bytes of a file) start like a legacy torch file? ``None``: it is
    too short to tell (a proper prefix of the magic pickle; still being written)."""
    if any(head.startswith(p) for p in MAGIC_PICKLES):
        return True
    if any(p.startswith(head) for p in MAGIC_PICKLES):
        return None
    return False


class NotLegacy(ValueError):
    """The stream does not start like a legacy torch file (another format, or not torch at all)."""


class Truncated(ValueError):
    """The stream ends before what it declares (still being written, or cut short)."""


@dataclass(frozen=True)
class Storage:
    """One storage record a legacy file declares: its key, type name, element count and size."""

    key: str
    type_name: str
    numel: int

    @property
    def nbytes(self) -> int:
        """Bytes of data (without the 8-byte count); raises KeyError for an unknown type name."""
        return self.numel * ELEMENT_SIZES[self.type_name]


@dataclass(frozen=True)
class LegacyLayout:
    """What the pickles of a legacy file declare: where each part starts, the storages in file order.

    ``object_start``/``object_end``: byte range of pickle 4 (the saved object); ``data_start``: where
    the first storage record begins; ``expected_size``: bytes of the whole file.
    """

    object_start: int
    object_end: int
    data_start: int
    storages: tuple[Storage, ...]

    @property
    def expected_size(self) -> int:
        return self.data_start + sum(8 + s.nbytes for s in self.storages)


class _Mark:
    """The MARK sentinel on the symbolic stack."""


class _Opaque:
    """A value the scan does not model (a dict, an object being built …)."""


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


_MARK = _Mark()
_OPAQUE = _Opaque()
_INT_OPS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}
_STR_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}


def _pop_to_mark(stack: list[object]) -> list[object]:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1:]
            del stack[i:]
            return items
    raise ValueError("pickle pops a MARK that was never pushed")


def _pop(stack: list[object], n: int) -> list[object]:
    if n > len(stack):
        raise ValueError("pickle pops more than it pushed")
    if n == 0:
        return []
    items = stack[-n:]
    del stack[-n:]
    return items


def _run(stream: io.BufferedIOBase, on_persistent_id: list[object] | None = None) -> object:
    """Walk one pickle from ``stream``'s position to its STOP; return the top value (symbolic).

    Persistent ids (BINPERSID/PERSID) are appended to ``on_persistent_id`` when given. Raises
    ``Truncated`` when the stream ends first, ``ValueError`` for a stream that is not a pickle.
    """
    stack: list[object] = []
    memo: dict[int, object] = {}
    try:
        for op, arg, _pos in pickletools.genops(stream):
            name = op.name
            if name in _INT_OPS or name in _STR_OPS:
                stack.append(arg)
            elif name == "NONE":
                stack.append(None)
            elif name in ("NEWTRUE", "NEWFALSE"):
                stack.append(name == "NEWTRUE")
            elif name == "MARK":
                stack.append(_MARK)
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "TUPLE":
                stack.append(tuple(_pop_to_mark(stack)))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                stack.append(tuple(_pop(stack, int(name[-1]))))
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "LIST":
                stack.append(_pop_to_mark(stack))
            elif name == "APPEND":
                (value,) = _pop(stack, 1)
                if stack and isinstance(stack[-1], list):
                    stack[-1].append(value)
            elif name == "APPENDS":
                items = _pop_to_mark(stack)
                if stack and isinstance(stack[-1], list):
                    stack[-1].extend(items)
            elif name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                stack.append(_Global(module, attr))
            elif name == "STACK_GLOBAL":
                module, attr = _pop(stack, 2)
                stack.append(_Global(str(module), str(attr)))
            elif name in _PUT_OPS:
                memo[int(arg)] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in _GET_OPS:
                stack.append(memo.get(int(arg), _OPAQUE))
            elif name == "BINPERSID":
                (pid,) = _pop(stack, 1)
                if on_persistent_id is not None:
                    on_persistent_id.append(pid)
                stack.append(_OPAQUE)
            elif name == "PERSID":
                if on_persistent_id is not None:
                    on_persistent_id.append(arg)
                stack.append(_OPAQUE)
            elif name == "STOP":
                return stack[-1] if stack else None
            else:  # generic stack effect from pickletools' own opcode table
                before = op.stack_before
                if pickletools.markobject in before:
                    _pop_to_mark(stack)
                    _pop(stack, before.index(pickletools.markobject))
                else:
                    _pop(stack, len(before))
                stack.extend(_OPAQUE for _ in op.stack_after)
    except ValueError as exc:
        if "exhausted" in str(exc) or "not enough data" in str(exc) or "expected" in str(exc):
            raise Truncated(f"pickle cut short ({exc})") from exc
        raise
    raise Truncated("pickle ended before its STOP")


def scan(stream: io.BufferedIOBase) -> LegacyLayout:
    """Read the five pickles of a legacy torch file from ``stream`` (at offset 0).

    Raises
    ------
    NotLegacy
        The first pickle is not torch's magic number (or the stream is not a pickle at all).
    Truncated
        The stream ends inside one of the pickles.
    ValueError
        The pickles do not have the shape ``_legacy_save`` writes.
    """
    try:
        magic = _run(stream)
    except Truncated:
        raise
    except ValueError as exc:
        raise NotLegacy(f"not a pickle ({exc})") from exc
    if magic != MAGIC_NUMBER:
        raise NotLegacy("the first pickle is not torch's magic number")
    version = _run(stream)
    if version != PROTOCOL_VERSION:
        raise ValueError(f"legacy protocol version {version!r}, expected {PROTOCOL_VERSION}")
    _run(stream)  # sys_info
    object_start = stream.tell()
    pids: list[object] = []
    _run(stream, pids)
    object_end = stream.tell()
    keys = _run(stream)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("the storage key list is not a list of strings")
    declared: dict[str, Storage] = {}
    for pid in pids:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            continue  # ("module", cls, source_file, source) and other ids hold no data
        _, stype, key, _location, numel = pid[:5]
        if not isinstance(stype, _Global) or not isinstance(key, str) or not isinstance(numel, int):
            raise ValueError(f"storage persistent id of an unexpected shape: {pid!r}"[:200])
        declared.setdefault(key, Storage(key, stype.name, numel))
    missing = [k for k in keys if k not in declared]
    if missing or len(set(keys)) != len(declared):
        raise ValueError(f"the storage key list ({len(keys)}) does not match the {len(declared)} storages "
                         "the object refers to")
    return LegacyLayout(object_start, object_end, stream.tell(), tuple(declared[k] for k in keys))


def check(fd: int, size: int) -> Verdict | None:
    """Verdict for a legacy torch file on ``fd`` (``size`` bytes); ``None`` when it is not one.

    Complete only when the file is exactly as long as its pickles declare and every storage record's
    8-byte count equals its declared ``numel``; shorter is ``incomplete`` (being written, or cut:
    the judge calls it truncated once it stays so for the settle window); longer, or a count that
    disagrees, is ``corrupt``.
    """
    from kresume.formats.checks import FdReader

    known = identify(os.pread(fd, max(len(p) for p in MAGIC_PICKLES), 0))
    if known is False:
        return None
    if known is None:
        return incomplete(f"{size} B: too short to tell whether it is a torch.save file yet")
    stream = io.BufferedReader(FdReader(fd, size), buffer_size=1 << 16)
    try:
        layout = scan(stream)
    except NotLegacy:
        return None
    except Truncated as exc:
        return incomplete(f"legacy torch.save file cut short in its pickles ({exc})")
    except ValueError as exc:
        return corrupt(f"legacy torch.save file with an unexpected structure: {exc}")
    offset = layout.data_start
    for i, s in enumerate(layout.storages):
        if s.type_name not in ELEMENT_SIZES:
            return corrupt(f"legacy torch.save file with storage type {s.type_name!r}, whose element size "
                           "kresume does not know; save with the zip format (the default) instead")
        head = os.pread(fd, 8, offset) if offset + 8 <= size else b""
        if len(head) < 8:
            return incomplete(f"legacy torch.save file cut short at storage {i + 1} of {len(layout.storages)} "
                              f"({size} of {layout.expected_size} B)")
        (count,) = struct.unpack("<q", head)
        if count != s.numel:
            return corrupt(f"legacy torch.save storage {i + 1} records {count} elements, its tensor "
                           f"declares {s.numel}")
        offset += 8 + s.nbytes
    if size < offset:
        return incomplete(f"legacy torch.save file cut short: {size} of {offset} B")
    if size > offset:
        return corrupt(f"legacy torch.save file has {size - offset} B after its last storage")
    return COMPLETE


def object_pickle(fd: int, size: int) -> bytes | None:
    """The bytes of the saved object's pickle (pickle 4) of a legacy file, or ``None`` when ``fd``
    is not a readable legacy file (for reading counters such as ``global_step``)."""
    from kresume.formats.checks import FdReader

    if not identify(os.pread(fd, max(len(p) for p in MAGIC_PICKLES), 0)):
        return None
    stream = io.BufferedReader(FdReader(fd, size), buffer_size=1 << 16)
    try:
        layout = scan(stream)
    except ValueError:
        return None
    return os.pread(fd, layout.object_end - layout.object_start, layout.object_start)
