"""Read plain data out of a pickle WITHOUT executing it: every global becomes an inert stub.

Used for two format facts that only live inside pickles:

- DCP ``.metadata`` (a plain ``pickle.dump`` of ``Metadata``, torch.distributed.checkpoint) lists,
  per stored item, ``_StorageInfo(relative_path, offset, length)``: every shard must exist and be
  at least ``offset + length`` bytes long.
- DeepSpeed ``*_model_states.pt`` (a torch zip whose ``data.pkl`` is the state dict) records
  ``dp_world_size``: the number of ``zero_pp_rank_R_*`` shards to expect (writers.md §5: ``latest``
  is written before the last rank's shard exists).

No code from the file runs: ``find_class`` returns a :class:`Stub` subclass for any name, and
tensor storages (persistent ids) load as ``None``.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from typing import Any

from kresume.formats.checks import FdReader


class Stub:
    """Stand-in for any pickled class instance; keeps args and state for inspection."""

    _qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        self._args = args
        self._kwargs = kwargs

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) from __reduce_ex__
            for part in state:
                if isinstance(part, dict):
                    self.__dict__.update({str(k): v for k, v in part.items()})
        elif isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items()})
        else:
            self.__dict__["_state"] = state

    # REDUCE on a stub *instance* (e.g. OrderedDict-like builders) must not fail
    def __call__(self, *args: Any, **kwargs: Any) -> Stub:
        return Stub(*args, **kwargs)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("_list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("_list", []).extend(values)


class _Dict(dict):  # type: ignore[type-arg]
    """Stand-in for ``dict``/``OrderedDict`` that keeps BUILD state as attributes: a torch ``state_dict()`` is
    an ``OrderedDict`` with a ``_metadata`` attribute (DeepSpeed's model states hold one as ``module``)."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("collections", "OrderedDict"), ("builtins", "dict")):
            return _Dict
        if (module, name) in (("builtins", "set"), ("builtins", "frozenset")):
            return frozenset
        return type(name, (Stub,), {"_qualname": f"{module}.{name}"})

    def persistent_load(self, pid: Any) -> Any:
        return None


def loads_inert(data: bytes) -> Any:
    """Unpickle ``data`` with every class replaced by a stub (raises ``pickle.UnpicklingError``,
    ``EOFError`` etc. for truncated or invalid data)."""
    return _Unpickler(io.BytesIO(data)).load()


def dcp_storage_extents(data: bytes) -> dict[str, int] | None:
    """From DCP ``.metadata`` bytes, map each shard's relative path to the bytes it must hold
    (max ``offset + length``). ``None`` when the pickle does not have the expected shape."""
    meta = loads_inert(data)
    storage = getattr(meta, "storage_data", None)
    if not isinstance(storage, dict):
        return None
    need: dict[str, int] = {}
    for info in storage.values():
        rel = getattr(info, "relative_path", None)
        off = getattr(info, "offset", None)
        length = getattr(info, "length", None)
        if not isinstance(rel, str) or not isinstance(off, int) or not isinstance(length, int):
            return None
        need[rel] = max(need.get(rel, 0), off + length)
    return need


def torch_zip_pickle(fd: int, size: int, limit: int = 64 * 1024 * 1024) -> Any:
    """The inert object of a torch zip's ``*/data.pkl`` (tensors as ``None``); ``None`` if the
    archive has no ``data.pkl`` or it is larger than ``limit`` bytes."""
    with zipfile.ZipFile(io.BufferedReader(FdReader(fd, size))) as zf:
        for info in zf.infolist():
            if info.filename.endswith("/data.pkl") or info.filename == "data.pkl":
                if info.file_size > limit:
                    return None
                return loads_inert(zf.read(info))
    return None


def deepspeed_world_size(fd: int, size: int) -> int | None:
    """``dp_world_size`` recorded in a DeepSpeed ``*_model_states.pt`` (``None`` if absent)."""
    try:
        obj = torch_zip_pickle(fd, size)
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, OSError):
        return None
    if isinstance(obj, dict):
        ws = obj.get("dp_world_size")
        if isinstance(ws, int) and ws > 0:
            return ws
    return None


def read_all(fd: int, size: int) -> bytes:
    """``size`` bytes from offset 0 of ``fd`` (short if the file shrank)."""
    return os.pread(fd, size, 0)
