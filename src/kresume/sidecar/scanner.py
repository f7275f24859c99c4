"""The scan side of the sidecar: rescan the watched folder, judge each unit, capture complete ones.

Events are only hints (writers.md "What this means for the sidecar" 1): every pass lists the whole
folder (:func:`kresume.formats.listing.scan`), finds the units (:func:`~kresume.formats.units.find_units`)
and judges each from content (:func:`~kresume.formats.judge.judge`; in a multi-rank run, a sharded
unit by what this rank's folder can show, :func:`~kresume.formats.partjudge.judge_part`). A complete
unit is captured at once with :func:`kresume.store.local.snapshot` (every file opened: Lightning
deletes the previous checkpoint 0.1–6 ms after saving the next, writers.md §2) and queued in the
:class:`Ledger`.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from typing import Any

from kresume.formats.judge import ContentReader, judge
from kresume.formats.listing import Listing, scan
from kresume.formats.metadata import CheckpointInfo, describe
from kresume.formats.partjudge import judge_part
from kresume.formats.units import Rules, Unit, find_units
from kresume.sidecar import multirank
from kresume.sidecar.ledger import Ledger
from kresume.sidecar.metrics import Metrics
from kresume.sidecar.settings import SidecarSettings
from kresume.sidecar.tasks import CommitKey, CommitTask, captured_as_listed, unit_key
from kresume.store import clock, errors
from kresume.store.local import snapshot


def access_fingerprint(unit: Unit, listing: Listing) -> tuple[Any, ...]:
    """What can turn an unreadable unit readable without touching its content: the inode, mode,
    owner, group and ctime of the unit's own entry (a folder) and of every entry inside it
    (``chmod``/``chown``/ACL changes all move the ctime)."""
    own = listing.get(unit.rel)
    return tuple(e.access for e in ((own,) if own is not None and own.kind == "dir" else ()) + unit.entries)


class Scanner:
    """Judges and captures the units under ``root`` (an absolute real path) into ``ledger``.

    Call :meth:`rescan` from one thread (the main loop); it returns True while some unit is still
    being written, so the loop looks again after ``recheck_seconds`` instead of its idle period.
    """

    def __init__(self, root: str, settings: SidecarSettings, ledger: Ledger, metrics: Metrics,
                 log: logging.Logger) -> None:
        self.root = root
        self.settings = settings
        self.rules = Rules(settings.include, settings.exclude, settings.marker)
        self.reader = ContentReader(root)
        self.ledger = ledger
        self.metrics = metrics
        self.log = log
        self.noted: dict[str, tuple[Any, str, str]] = {}
        self.first_seen: dict[CommitKey, int] = {}
        """When this scanner first listed each unit as it is now (ns since the epoch, its own clock)."""

    def rescan(self, writer_gone: bool = False) -> bool:
        """One reconcile pass; returns True while some unit is still being written.

        ``writer_gone``: the trainer's presence lock says it has exited (:func:`kresume.sidecar.presence.probe`),
        so nothing writes into the folder any more and the settle window (quiet time) is met at once: a DCP shard,
        which has no footer, is judged by its size now instead of being dropped unsettled at shutdown."""
        try:
            listing = scan(self.root)
        except OSError as exc:
            self.log.error("cannot list %s: %s", self.root, exc)
            return False
        found = find_units(listing, self.rules)
        now_ns = clock.time_ns()
        settle_ns = 0 if writer_gone else int(self.settings.settle_seconds * 1e9)
        writing = False
        listed = {unit_key(u) for u in found.units}
        self.first_seen = {k: t for k, t in self.first_seen.items() if k in listed}
        for unit in found.units:
            key = unit_key(unit)
            access = access_fingerprint(unit, listing)
            if self.ledger.known(key) or self.ledger.still_rejected(key, access) \
                    or unit.max_mtime_ns < self.ledger.floor:
                continue
            at = self.judging_time(unit, key, now_ns)
            part = multirank.uses_parts(self.settings, unit.format)
            if part:  # this rank's share of a multi-rank checkpoint: judged by what its own folder can show
                v = judge_part(unit, listing, self.reader, rank=self.settings.rank or 0, now_ns=at,
                               settle_ns=settle_ns, rules=self.rules)
            else:
                v = judge(unit, listing, self.reader, now_ns=at, settle_ns=settle_ns, rules=self.rules)
            self.note(unit.rel, key, v.state, v.reason)
            if v.state == "incomplete":
                writing = writing or at - unit.max_mtime_ns < settle_ns or not unit.files
            elif v.state in ("corrupt", "unreadable"):
                self.ledger.reject(key, v.reason, access)
                self.metrics.failures.labels(v.state).inc()
            else:
                writing = self.capture(unit, key, access, part=part) or writing
        for alias in found.aliases:
            self.note(alias.rel, alias.target, "alias",
                      f"symlink to {alias.target}" + (" (outside the watched folder; never read)" if alias.outside
                                                      else f" = alias of {alias.resolved}; not uploaded"))
        if self.settings.delete_local_after_commit and found.units:
            self.reclaim(found.units)
        return writing

    def judging_time(self, unit: Unit, key: CommitKey, now_ns: int) -> int:
        """The time ``unit`` is judged at, ns: now, or — for a unit whose newest mtime is ahead of this clock (the
        volume's clock runs ahead: an NFS or FUSE server, another node's writes) — that mtime plus how long this
        scanner has listed the unit unchanged. Without it the settle window (``now - mtime``) of such a unit, a
        file of unknown type or a shard judged by its quiet time, would not start before this clock caught up
        (hours for a server set to the wrong zone). Logged once per unit."""
        first = self.first_seen.setdefault(key, now_ns)
        if unit.max_mtime_ns <= now_ns:
            return now_ns
        ahead = (unit.max_mtime_ns - now_ns) / 1e9
        if first == now_ns and ahead >= 1.0:
            self.log.warning("%s: modified %.0f s in the future by this node's clock (the volume's clock runs "
                             "ahead?); its settle time is counted from when the sidecar first saw it unchanged",
                             unit.rel, ahead, extra={"fields": {"unit": unit.rel, "ahead_seconds": round(ahead, 1)}})
        return unit.max_mtime_ns + (now_ns - first)

    def note(self, rel: str, key: Any, state: str, reason: str) -> None:
        """Log a unit's state once per change (not on every rescan)."""
        if self.noted.get(rel) == (key, state, reason):
            return
        self.noted[rel] = (key, state, reason)
        fields = {"unit": rel, "state": state, "reason": reason}
        if state in ("corrupt", "unreadable"):
            self.log.error("skipping %s: %s — %s", rel, state, reason, extra={"fields": fields})
        elif state == "incomplete":
            self.log.info("waiting for %s: %s", rel, reason, extra={"fields": fields})
        elif state == "alias":
            self.log.info("%s: %s", rel, reason, extra={"fields": fields})

    def capture(self, unit: Unit, key: CommitKey, access: Any = None, *, part: bool = False) -> bool:
        """Open every file of a complete unit now and queue it; returns True when it must be looked
        at again (it vanished or changed between judge and capture). ``access``: the unit's
        :func:`access_fingerprint`, kept with a refusal so a permission fix makes it judged again.
        ``part``: committed as this rank's part of a multi-rank checkpoint."""
        path = os.path.join(self.root, unit.rel)
        try:
            snap = snapshot(path, root=self.root)
        except errors.SourceUnreadable as exc:
            self._refuse(unit, key, "unreadable", exc, access)
            return False
        except errors.OutsideRoot as exc:
            self._refuse(unit, key, "outside_root", exc, access)
            return False
        except errors.SourceError:
            return True  # vanished or emptied between judge and capture: look again
        if not captured_as_listed(snap, unit):
            snap.close()  # rewritten between judge and capture: judge the new content
            return True
        try:
            info = describe(path)
        except Exception:  # noqa: BLE001 - describe is best effort; the name still carries the step
            info = CheckpointInfo(unit.format)
        if info.format == "unknown" and unit.format != "unknown":
            info = replace(info, format=unit.format)  # e.g. a folder with a custom --marker
        job = CommitTask(unit.rel, key, snap, info, written_at=key[1] / 1e9, access=access, part=part)
        what = f"rank {self.settings.rank}'s part" if part else "complete"
        self.log.info("%s: %s (%s, step %s, %d B), queued", what, unit.rel, info.format, info.step, job.size,
                      extra={"fields": {"unit": unit.rel, "step": info.step, "bytes": job.size, "part": part}})
        self.ledger.queue(job, skip_superseded=self.settings.skip_superseded,
                          on_drop=lambda old: self.log.info("superseded before upload: %s", old.rel))
        return False

    def _refuse(self, unit: Unit, key: CommitKey, reason: str, exc: errors.StoreError, access: Any) -> None:
        self.ledger.reject(key, str(exc), access)
        self.metrics.failures.labels(reason).inc()
        self.log.error("skipping %s: %s", unit.rel, exc, extra={"fields": {"unit": unit.rel}})

    def reclaim(self, units: tuple[Unit, ...]) -> None:
        """``--delete-local-after-commit``: delete committed local units, never the newest one."""
        newest = max(units, key=lambda u: u.max_mtime_ns)
        for u in units:
            if u is newest or not self.ledger.is_committed(unit_key(u)):
                continue
            path = os.path.join(self.root, u.rel)
            try:
                if u.kind == "folder":
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
                self.log.info("deleted local %s (committed)", u.rel)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self.log.warning("cannot delete local %s: %s", u.rel, exc)
