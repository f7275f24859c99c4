"""What must hold after a fault, checked from what the store and the API server hold — never from what the
code under test says it did (the sidecar's log is used only to know what it *claimed*, to hold it to that).

Each check returns :class:`Violation`s; their ``kind`` is one of :data:`VIOLATIONS`. The store is read through
a :class:`RunStore` opened directly on the server (no fault proxy): the truth.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from faults.trainer import Written, record_files
from kresume.store import layout, reading
from kresume.store.errors import StoreError
from kresume.store.runstore import RunStore

VIOLATIONS = {
    "incomplete_manifest": "a manifest names data that is missing, short, or not what the trainer wrote",
    "incomplete_pointer": "the pointer named a checkpoint that was not completely committed",
    "pointer_backwards": "the pointer moved to an older checkpoint while the newer one was valid",
    "lost_commit": "a commit the sidecar reported is gone (and retention had no right to delete it)",
    "missed_checkpoint": "a checkpoint the trainer finished was neither committed nor reported abandoned",
    "restore_mismatch": "a committed checkpoint did not restore byte-exact (or a restore returned wrong bytes)",
    "outside_read": "bytes of a file outside the watched folder reached the store",
    "pod_blocked": "a pod create failed or took longer than the webhook timeout allows",
    "bad_injected": "a pod was given a checkpoint that is bad-marked, uncommitted or incomplete",
    "stale_injected": "a pod was given an older checkpoint than the newest valid one committed before it, or none",
    "deadline_missed": "the sidecar outlived its SIGTERM deadline",
    "silent_outage": "an opted-in pod kresume never saw got no Warning saying kresume is off for it",
}
"""Violation kinds → what each means (the table's legend)."""


@dataclass(frozen=True)
class Violation:
    kind: str
    detail: str

    def __post_init__(self) -> None:
        if self.kind not in VIOLATIONS:
            raise ValueError(f"unknown violation kind {self.kind!r}")


def checked(check: Callable[[], list[Violation]]) -> list[Violation]:
    """``check()``; a store error while reading the truth is itself a finding: the run cannot be read
    (reported as ``incomplete_manifest`` with the error), since a reader would fail the same way."""
    try:
        return check()
    except StoreError as exc:
        return [Violation("incomplete_manifest", f"the run cannot be read: {exc}")]


def manifest_violations(truth: RunStore, written: Mapping[str, Written]) -> list[Violation]:
    """Every manifest's objects exist with their sizes and CRC-32C (``verify(checksums=True)``), and its
    files are exactly what the trainer wrote under that name (sizes and CRC-32C)."""
    out = [Violation("incomplete_manifest", f"verify: {p}") for p in truth.verify(checksums=True)]
    for m in truth.list():
        w = written.get(m.name)
        got = {f.path: (f.size, f.crc32c) for f in m.files}
        if w is None:
            out.append(Violation("incomplete_manifest", f"{m.id} names {m.name!r}, which the trainer never wrote"))
        elif not w.ok:
            out.append(Violation("incomplete_manifest", f"{m.id} commits {m.name!r}, whose write failed ({w.error})"))
        elif got != {k: v[:2] for k, v in w.files.items()}:
            out.append(Violation("incomplete_manifest", f"{m.id} ({m.name}) files {sorted(got)} differ from the "
                                                        f"trainer's {sorted(w.files)}"))
    return out


def final_pointer_violations(truth: RunStore) -> list[Violation]:
    """The pointer, if any, names a checkpoint whose manifest and objects are all there."""
    ptr = truth.read_pointer()
    if ptr is not None and reading.load_valid(truth, ptr.checkpoint) is None:
        return [Violation("incomplete_pointer", f"at the end the pointer names {ptr.checkpoint}, not valid")]
    return []


def lost_commit_violations(truth: RunStore, reported: Mapping[str, str], *, keep_last: int | None = None,
                           order: list[str] | None = None) -> list[Violation]:
    """Every commit the sidecar reported (id → unit) still has its manifest — unless retention may have
    deleted it: with ``keep_last`` N, only the N newest reported commits *in the trainer's write order*
    (``order``: unit names oldest first; the truth about which is newest) must survive."""
    ids = set(truth.manifest_ids())
    must = dict(reported)
    if keep_last is not None:
        rank = {name: i for i, name in enumerate(order or [])}
        newest = sorted(reported.items(), key=lambda kv: rank.get(kv[1], -1), reverse=True)
        keep_units = {u for _, u in newest[:keep_last]}
        must = {cid: u for cid, u in reported.items() if u in keep_units}
    return [Violation("lost_commit", f"{cid} ({unit}) was reported committed and is gone")
            for cid, unit in sorted(must.items()) if cid not in ids]


def newest_resolves(truth: RunStore, order: list[str]) -> list[Violation]:
    """``latest`` resolves to the newest checkpoint the store holds by the trainer's write order."""
    names = {m.name for m in truth.list()}
    newest = next((n for n in reversed(order) if n in names), None)
    found = truth.latest()
    if newest is not None and (found is None or found.manifest.name != newest):
        got = found.manifest.name if found else None
        return [Violation("lost_commit", f"latest resolves to {got!r}, not the newest committed {newest!r}")]
    return []


def missed_violations(truth: RunStore, complete: Iterable[Written], abandoned_units: set[str]) -> list[Violation]:
    """Every checkpoint the trainer finished is committed, or the sidecar said it abandoned it."""
    names = {m.name for m in truth.list()}
    return [Violation("missed_checkpoint", f"{w.name} was written completely, never committed, never reported")
            for w in complete if w.name not in names and w.name not in abandoned_units]


def restore_violations(store: RunStore, truth: RunStore, written: Mapping[str, Written], dest: Path,
                       ) -> tuple[list[Violation], int]:
    """Restore every committed checkpoint through ``store`` (maybe faulty) and compare with what the trainer
    wrote (sha256 per file). A restore that raises is repeated directly on the truth; one that returns wrong
    bytes, or fails twice, is a violation. Returns (violations, restores that raised and were repeated)."""
    out: list[Violation] = []
    repeated = 0
    for i, m in enumerate(truth.list()):
        w = written.get(m.name)
        if w is None or not w.ok:
            continue  # reported by manifest_violations
        where = dest / f"r{i}"
        try:
            path = store.restore(where, m.id)
        except Exception:  # noqa: BLE001 - the restore refused (loudly): repeat without faults
            repeated += 1
            try:
                path = truth.restore(where, m.id)
            except Exception as exc:  # noqa: BLE001
                out.append(Violation("restore_mismatch", f"{m.id} ({m.name}) does not restore: {exc}"))
                continue
        got = {k: (v[0], v[2]) for k, v in record_files(path).items()}
        want = {k: (v[0], v[2]) for k, v in w.files.items()}
        if got != want:
            out.append(Violation("restore_mismatch", f"{m.id} ({m.name}) restored other bytes than were written"))
    return out, repeated


def outside_read_violations(truth: RunStore, token: bytes) -> list[Violation]:
    """No object under the run (committed or not) holds ``token``, the content of a file outside the folder."""
    out = []
    for path in truth.fs.find(truth.root):
        if token in truth.fs.cat_file(path):
            out.append(Violation("outside_read", f"{path} holds bytes of a file outside the watched folder"))
    return out


class PointerMonitor:
    """Reads ``latest.json`` from the truth every ``period`` s on a thread. On each change it checks, at that
    moment, that the new target is valid (re-reading the pointer before blaming it, since retention may
    delete an old target once the pointer has moved on) and that it does not sort older than the previous
    target while that one is still valid and not bad-marked."""

    def __init__(self, truth: RunStore, period: float = 0.25) -> None:
        self.truth, self.period = truth, period
        self.seen: list[str] = []
        self.violations: list[Violation] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pointer-monitor", daemon=True)

    def __enter__(self) -> PointerMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self._sample()
            except Exception:  # noqa: BLE001 - a frozen or flaky server: sample again
                time.sleep(self.period)

    def _sample(self) -> None:
        ptr = self.truth.read_pointer()
        if ptr is None or (self.seen and self.seen[-1] == ptr.checkpoint):
            return
        cid = ptr.checkpoint
        if reading.load_valid(self.truth, cid) is None:
            again = self.truth.read_pointer()
            if again is not None and again.checkpoint == cid:
                self.violations.append(Violation("incomplete_pointer", f"the pointer named {cid}, not valid"))
        if self.seen:
            prev = self.seen[-1]
            newer = layout.parse_checkpoint_id(prev)
            this = layout.parse_checkpoint_id(cid)
            if newer is not None and this is not None and this < newer \
                    and reading.load_valid(self.truth, prev) is not None and not self.truth.is_bad(prev):
                self.violations.append(Violation("pointer_backwards", f"the pointer moved from {prev} back to {cid}"))
        self.seen.append(cid)
