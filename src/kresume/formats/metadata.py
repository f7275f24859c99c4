"""What a checkpoint is and which step it holds, read cheaply and without executing anything.

Sources of each rule (writers.md, measured on this machine):
- Lightning ``.ckpt`` and ``torch.save`` files are zip archives whose ``*/data.pkl`` holds the
  top-level dict (or, saved with ``_use_new_zipfile_serialization=False``, a legacy stream whose
  fourth pickle holds it: :mod:`kresume.formats.legacy`); Lightning writes ``epoch`` and ``global_step`` keys. We scan the pickle's opcodes
  with :mod:`pickletools` (no unpickling, so no code runs) for a ``'global_step'`` key followed by an int.
- HF Trainer ``checkpoint-N/`` folders hold ``trainer_state.json`` with ``global_step`` and ``epoch``.
- DCP folders hold ``.metadata`` and ``__R_0.distcp`` shards; DeepSpeed ``global_stepN/`` folders
  hold ``mp_rank_00_model_states.pt``.
- Names: ``epoch=3-step=400.ckpt`` (Lightning), ``checkpoint-400`` (HF), ``global_step400``
  (DeepSpeed), ``step_400`` / ``step-400`` (common DCP loops).
"""

from __future__ import annotations

import json
import os
import pickletools
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from kresume.formats import legacy
from kresume.formats.units import MARKER_DEFAULT

_STEP_PATTERNS = [
    re.compile(r"(?:^|[^a-z])global_step[=_-]?(\d+)", re.I),
    re.compile(r"(?:^|[^a-z])step[=_-]?(\d+)", re.I),
    re.compile(r"^checkpoint-(\d+)$", re.I),
]
_EPOCH_PATTERN = re.compile(r"(?:^|[^a-z])epoch[=_-]?(\d+)", re.I)
_PICKLE_SCAN_LIMIT = 4 * 2**20  # bytes of data.pkl we scan at most


@dataclass(frozen=True)
class CheckpointInfo:
    """``format`` is one of lightning, torch, safetensors, hf, dcp, deepspeed, marker, unknown."""

    format: str
    step: int | None = None
    epoch: int | None = None


def parse_name(name: str) -> tuple[int | None, int | None]:
    """``(step, epoch)`` parsed from a file or folder name; ``None`` where absent."""
    stem = name.rsplit(".", 1)[0] if "." in name and not name.startswith(".") else name
    step = None
    for pat in _STEP_PATTERNS:
        m = pat.search(stem)
        if m:
            step = int(m.group(1))
            break
    m = _EPOCH_PATTERN.search(stem)
    return step, (int(m.group(1)) if m else None)


def pickle_counters(data: bytes) -> dict[str, int]:
    """``{"global_step": N, "epoch": E}`` (those found) from a pickle's opcodes, without unpickling:
    the first int that follows each key string (a memo put may sit between them)."""
    found: dict[str, int] = {}
    pending: str | None = None
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name in ("BINUNICODE", "SHORT_BINUNICODE", "UNICODE", "BINUNICODE8") and arg in ("global_step", "epoch"):
                pending = arg
                continue
            if pending and op.name in ("BININT", "BININT1", "BININT2", "LONG1", "INT", "LONG") and isinstance(arg, int):
                found.setdefault(pending, arg)
            if pending and op.name in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
                continue  # the key string may be memoized before its value follows
            pending = None
            if len(found) == 2:
                break
    except (ValueError, EOFError, KeyError, IndexError):
        pass  # truncated scan window or odd pickle: keep what was found
    return found


def _torch_format(found: dict[str, int]) -> tuple[str, int | None, int | None]:
    return ("lightning" if "global_step" in found else "torch"), found.get("global_step"), found.get("epoch")


def torch_zip_counters(path: str | os.PathLike[str]) -> tuple[str, int | None, int | None]:
    """Read ``(format, global_step, epoch)`` from a torch zip checkpoint without unpickling.

    Returns ``("unknown", None, None)`` when the file is not a torch zip archive.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = next((n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                return "unknown", None, None
            with zf.open(pkl) as f:
                data = f.read(_PICKLE_SCAN_LIMIT)
    except (OSError, zipfile.BadZipFile, ValueError):
        return "unknown", None, None
    return _torch_format(pickle_counters(data))


def legacy_counters(path: str | os.PathLike[str]) -> tuple[str, int | None, int | None]:
    """``(format, global_step, epoch)`` of a legacy (non-zip) ``torch.save`` file, read from its
    object pickle without unpickling (:mod:`kresume.formats.legacy`); ``("unknown", None, None)``
    when it is not one."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return "unknown", None, None
    try:
        data = legacy.object_pickle(fd, os.fstat(fd).st_size)
    except OSError:
        data = None
    finally:
        os.close(fd)
    if data is None:
        return "unknown", None, None
    return _torch_format(pickle_counters(data[:_PICKLE_SCAN_LIMIT]))


def describe(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Return the format and counters of the checkpoint at ``path`` (a file or a folder).

    Content wins over the name for the step (Lightning's ``last.ckpt`` has no step in its name).
    Never raises for unreadable or odd content; returns what it could learn.
    """
    p = Path(path)
    step, epoch = parse_name(p.name)
    if p.is_dir():
        state = p / "trainer_state.json"
        if state.is_file():
            try:
                doc = json.loads(state.read_text())
                gs = doc.get("global_step")
                ep = doc.get("epoch")
                return CheckpointInfo("hf", gs if isinstance(gs, int) else step,
                                      int(ep) if isinstance(ep, (int, float)) else epoch)
            except (OSError, ValueError):
                return CheckpointInfo("hf", step, epoch)
        if (p / ".metadata").is_file():
            return CheckpointInfo("dcp", step, epoch)
        if any(p.glob("*model_states.pt")):
            return CheckpointInfo("deepspeed", step, epoch)
        if (p / MARKER_DEFAULT).is_file():
            return CheckpointInfo("marker", step, epoch)
        return CheckpointInfo("unknown", step, epoch)
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        return CheckpointInfo("safetensors", step, epoch)
    if suffix in (".ckpt", ".pt", ".pth", ".bin"):
        fmt, gs, ep = torch_zip_counters(p)
        if fmt == "unknown":
            fmt, gs, ep = legacy_counters(p)
        if fmt == "unknown":
            return CheckpointInfo("unknown", step, epoch)
        return CheckpointInfo(fmt, gs if gs is not None else step, ep if ep is not None else epoch)
    return CheckpointInfo("unknown", step, epoch)
