"""What the demo watches: the run's committed manifests (with the time each was first seen) and the
trainer's JSON event lines (``start``, ``progress``, ``done`` from examples/lightning/train.py)."""

from __future__ import annotations

import codecs
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.2
"""Period of the store listing, seconds: the bound on how late a commit is noticed."""


@dataclass(frozen=True)
class Seen:
    """One committed checkpoint as the demo saw it. ``first_seen``: epoch seconds of the first listing that
    held its manifest (the commit became visible at or before it)."""

    id: str
    step: int | None
    url: str
    committed_at: str
    first_seen: float
    source_pod: str
    total_bytes: int | None = None
    """The checkpoint's data bytes (manifest), read when first seen: retention (the demo keeps 5) may delete the
    manifest before the demo's end, where the time line wants the size."""


class StorePoller:
    """Lists ``<run>/manifests/`` every :data:`POLL_SECONDS` on a thread; ``seen`` grows in commit order."""

    def __init__(self, run_url: str, storage_options: dict[str, Any]) -> None:
        from kresume.store.runstore import RunStore

        self.store = RunStore.open(run_url, storage_options=storage_options)
        self.seen: dict[str, Seen] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-store-poller", daemon=True)

    def start(self) -> StorePoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def poll_once(self) -> None:
        """One listing; new manifests are read and recorded with the listing's start time."""
        t = time.time()
        self.store.fs.invalidate_cache()
        for cid in self.store.manifest_ids():
            if cid in self.seen:
                continue
            m = self.store.read_manifest(cid)
            if m is None:
                continue
            self.seen[cid] = Seen(cid, m.step, self.store.checkpoint_url(m), m.committed_at, t,
                                  str((m.source or {}).get("pod") or ""), m.total_bytes)  # fmt: skip

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the store may be briefly unreachable; count and go on
                self.errors += 1

    def newest_step(self) -> int | None:
        """Highest committed step so far."""
        steps = [s.step for s in self.seen.values() if s.step is not None]
        return max(steps) if steps else None


@dataclass
class TrainerLog:
    """Incremental reader of one trainer container's log: JSON event lines, other lines kept as ``tail``."""

    path: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    _offset: int = 0
    _partial: str = ""
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"), repr=False)
    """UTF-8 across reads: a character whose bytes straddle two reads is decoded whole, not as two U+FFFD."""

    def read(self) -> list[dict[str, Any]]:
        """New events since the last call."""
        lines = (self._partial + self._new_text()).split("\n")
        self._partial = lines.pop()
        return self._take(lines)

    def _new_text(self) -> str:
        """The file's bytes after those already read, decoded ("" while the file does not exist)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return ""
        self._offset += len(data)
        return self._decoder.decode(data)

    def _take(self, lines: list[str]) -> list[dict[str, Any]]:
        """Whole log lines: JSON objects become events (returned, and kept in ``events``), others the tail."""
        new = []
        for line in lines:
            if line.startswith("{"):
                try:
                    new.append(json.loads(line))
                    continue
                except ValueError:
                    pass
            self.tail = (self.tail + [line])[-20:]
        self.events += new
        return new

    def first(self, kind: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("event") == kind), None)

    def last_step(self) -> int | None:
        """The newest step the trainer reported: its progress events' ``global_step`` and its final save's
        ``step`` (the ``preempted`` event: a save at SIGTERM can follow the last progress line, and without it a
        resume from that save read as "resumed 1 step after the last step reported" — new-user trial)."""
        steps = [e["global_step"] for e in self.events if isinstance(e.get("global_step"), int)]
        steps += [e["step"] for e in self.events if e.get("event") == "preempted" and isinstance(e.get("step"), int)]
        return max(steps) if steps else None


def error_line(path: Path, max_bytes: int = 65536) -> str:
    """The last line of a container log that says something: not empty, not the node agent's ``--- kresume dev
    node: start`` header, not a JSON event (for a Python traceback: the exception line). Empty if none."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - max_bytes))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        text = line.strip()
        if text and not text.startswith(("{", "--- kresume dev node: start")):
            return text
    return ""
