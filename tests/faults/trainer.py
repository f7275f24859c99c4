"""The trainer side of a fault session: real checkpoints written into the watched folder, and a record of
exactly what each one holds (the truth the invariants compare the store with).

Checkpoints are written the way trainers write them (/work/shared/writers.md): ``torch.save`` files in place
(Lightning's ``epoch=E-step=N.ckpt`` names), ``dcp.save`` folders (``step_N/``: shards, then ``.metadata``
renamed in), and marker folders (files, then ``.kresume-complete`` last, built in a staging folder next to the
watched one and renamed in; no step in the name or content, so the store orders them by commit time). A write
that fails (a full disk) is recorded as failed, with whatever it left behind.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import warnings

import torch

from _fixtures.common import file_crc32c

MARKER = ".kresume-complete"


@dataclass
class Written:
    """One checkpoint the trainer wrote. ``files``: relpath (``""`` for a file checkpoint) → (size, crc32c,
    sha256) of the final content; ``ok``: the write finished (False: it raised, e.g. ENOSPC)."""

    name: str
    kind: str
    step: int | None
    files: dict[str, tuple[int, str, str]]
    ok: bool
    error: str = ""
    finished_at: float = 0.0
    """``time.monotonic()`` when the write ended."""

    @property
    def size(self) -> int:
        return sum(v[0] for v in self.files.values())


def _digest(path: Path) -> tuple[int, str, str]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return path.stat().st_size, file_crc32c(str(path)), h.hexdigest()


def record_files(path: Path) -> dict[str, tuple[int, str, str]]:
    """relpath → (size, crc32c, sha256) of a checkpoint on disk (symlinks left out: never uploaded)."""
    if path.is_file() and not path.is_symlink():
        return {"": _digest(path)}
    return {str(f.relative_to(path)): _digest(f) for f in sorted(path.rglob("*"))
            if f.is_file() and not f.is_symlink()}


@dataclass
class Trainer:
    """Writes checkpoints into ``watch``; ``written`` is the record, in write order (thread-safe to read
    with ``lock``). Sizes are MiB; ``dcp_every``/``marker_every``: every n-th checkpoint is of that kind
    (0: never)."""

    watch: Path
    rng: random.Random
    sizes_mib: tuple[float, float] = (1.0, 6.0)
    big_every: int = 0
    big_mib: float = 20.0
    dcp_every: int = 4
    marker_every: int = 0
    written: list[Written] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _step: int = 0
    _count: int = 0

    def write_one(self) -> Written:
        """Write the next checkpoint; returns its record (also appended to ``written``)."""
        self._count += 1
        self._step += 10
        n, step = self._count, self._step
        mib = self.big_mib if self.big_every and n % self.big_every == 0 else self.rng.uniform(*self.sizes_mib)
        numel = max(1, int(mib * 2**18))
        if self.marker_every and n % self.marker_every == 0:
            name, kind, rec_step = f"export-{n:04d}-{os.urandom(2).hex()}", "marker", None
        elif self.dcp_every and n % self.dcp_every == 0:
            name, kind, rec_step = f"step_{step}", "dcp", step
        else:
            name, kind, rec_step = f"epoch=0-step={step}.ckpt", "torch", step
        path = self.watch / name
        error = ""
        try:
            if kind == "torch":
                torch.save({"w": torch.randn(numel), "global_step": step, "epoch": 0}, path)
            elif kind == "dcp":
                import torch.distributed.checkpoint as dcp

                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="torch.distributed is disabled")
                    dcp.save({"w": torch.randn(numel // 2), "b": torch.randn(numel // 2),
                              "step": torch.tensor(step)}, checkpoint_id=str(path))
            else:  # built aside, then renamed in: written in place, its weights.pt would be committed alone
                # first (tests/faults/test_faults_findings.py)
                aside = self.watch.parent / f".{self.watch.name}-staging" / name
                aside.mkdir(parents=True)
                torch.save({"w": torch.randn(numel)}, aside / "weights.pt")
                (aside / "config.json").write_text('{"export": %d}' % n)
                (aside / MARKER).write_text("")
                os.rename(aside, path)
            ok = True
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - torch wraps ENOSPC in RuntimeError, DCP in CheckpointException
            # (a BaseException)
            ok, error = False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        files = record_files(path) if os.path.lexists(path) else {}
        rec = Written(name, kind, rec_step, files, ok, error, time.monotonic())
        with self.lock:
            self.written.append(rec)
        return rec

    def complete(self) -> list[Written]:
        """The checkpoints whose write finished, in write order."""
        with self.lock:
            return [w for w in self.written if w.ok]

    def by_name(self) -> dict[str, Written]:
        with self.lock:
            return {w.name: w for w in self.written}

    def remove(self, name: str) -> None:
        """Delete a checkpoint from the folder (what a trainer's rotation or a disk clean-up does)."""
        path = self.watch / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class Writing:
    """A thread that calls ``trainer.write_one()`` every ``interval`` s (±40 %, seeded) until stopped."""

    def __init__(self, trainer: Trainer, interval: float, rng: random.Random) -> None:
        self.trainer, self.interval, self.rng = trainer, interval, rng
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="fault-trainer", daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.trainer.write_one()
                self.stop.wait(self.interval * self.rng.uniform(0.6, 1.4))
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def __enter__(self) -> Writing:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.join()

    def join(self) -> None:
        """Stop after the current write; re-raise what the thread raised."""
        self.stop.set()
        self.thread.join(120)
        if self.error is not None:
            raise self.error
