"""Store faults under a running sidecar (kinds of family ``store``), one session per call.

A session: a fresh run on the campaign's moto server; the sidecar as a real process whose store is the fault
proxy; a trainer thread saving real checkpoints (torch files, DCP folders; 20 MiB multipart ones when the
fault is a reset mid-part) every ~2 s, next to two symlinks that lead out of the folder to a canary file; the
pointer watched from moto directly. Faults are injected one after another at seeded moments; a fault counts
as injected only once it hit a request (a window with hits, an armed fault that fired; a freeze always). For
the response-side kinds the sidecar is also restarted with a fault armed on its start-up reads, and every
committed checkpoint is restored through the proxy with a fault armed. Then the trainer saves one more
checkpoint: committed by the same sidecar process means it recovered without a restart by hand.

``sigterm_frozen`` is its own small session: one commit, the server frozen, the next checkpoint saved,
SIGTERM; the sidecar must exit by its grace period and leave the pointer where it was.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from faults import invariants as inv
from faults.kinds import Tally
from faults.procs import Sidecar, summary_counts
from faults.trainer import Trainer, Writing
from faults.world import Run, World
from kresume.store.errors import StoreError
from kresume.store.storage import TransferSettings

DATA = r"/checkpoints/"
SMALL_DOCS = r"latest\.json|/manifests/"
RESPONSE_KINDS = ("truncated", "wrong_length")


@dataclass(frozen=True)
class Profile:
    """Seconds each window fault lasts (``storm`` 30 s as the issue asks), and bounds of a session."""

    stall: float
    freeze: float
    drip: float
    storm: float = 30.0
    """Seconds of a 5xx/SlowDown storm."""
    interval: float = 2.0
    """Seconds between the trainer's checkpoints (±40 %)."""
    drain: float = 300.0
    """Bound on the wait for every checkpoint to be committed or abandoned after the faults."""
    grace: float = 5.0
    """The sidecar's --grace-seconds in sigterm_frozen sessions."""


CI = Profile(stall=6.0, freeze=5.0, drip=5.0, storm=12.0)
"""The seeded small campaign of the normal test suite (tests/faults/test_faults_campaign.py)."""
FULL = Profile(stall=20.0, freeze=15.0, drip=20.0)
"""The documented long campaign (docs/reliability.md): the issue's 30 s storms."""
DEADLINE_SLACK = 3.0
"""Seconds past the grace period a SIGTERMed sidecar may take to be gone (process exit, not work)."""


def _canary(workdir: Path, watch: Path) -> bytes:
    """A secret outside the folder and two symlinks to it inside: its bytes must never reach the store."""
    token = b"KRESUME-CANARY-" + os.urandom(8).hex().encode()
    outside = workdir / "outside"
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "credentials.json").write_bytes(b'{"aws_secret_access_key": "' + token + b'"}')
    os.symlink(outside / "credentials.json", watch / "leak.ckpt")
    os.symlink(outside, watch / "leak-dir")
    return token


class Session:
    """One store-fault session; :meth:`run` returns its :class:`Tally`."""

    def __init__(self, world: World, kind: str, faults: int, rng: random.Random, profile: Profile,
                 workdir: Path) -> None:
        self.world, self.kind, self.faults, self.rng, self.profile = world, kind, faults, rng, profile
        self.workdir = workdir
        self.proxy = world.proxy
        self.run_: Run = world.fresh_run(kind.replace("_", "-"))
        self.watch = workdir / "watch"
        self.watch.mkdir(parents=True)
        self.sidecars: list[Sidecar] = []
        self.tally = Tally(kind, sessions=1)

    # ------------------------------------------------------------------ sidecar
    def start_sidecar(self) -> Sidecar:
        sc = Sidecar(self.watch, self.run_.url, self.run_.options, self.workdir,
                     ["--concurrency", "2", "--grace-seconds", "10"])
        self.sidecars.append(sc)
        if not sc.watching():
            raise RuntimeError(f"{self.kind}: the sidecar did not start watching:\n{sc.tail()}")
        return sc

    @property
    def sidecar(self) -> Sidecar:
        return self.sidecars[-1]

    # ------------------------------------------------------------------ injection (returns faults that hit)
    def _window(self, kind: str, seconds: float, **kw: object) -> int:
        w = self.proxy.window(kind, seconds, **kw)  # type: ignore[arg-type]
        time.sleep(seconds + 0.2)
        self.tally.requests_hit += w.hits
        return 1 if w.hits else 0

    def _shot(self, kind: str, timeout: float = 20.0, **kw: object) -> int:
        shot = self.proxy.arm(kind, **kw)  # type: ignore[arg-type]
        if shot.fired.wait(timeout):
            self.tally.requests_hit += 1
            return 1
        shot.cancel()
        return 0

    def inject(self) -> int:
        p, k = self.profile, self.kind
        if k == "stall":
            return self._window("stall", p.stall)
        if k == "drip":
            return self._window("drip", p.drip)
        if k == "storm":
            return self._window("storm", p.storm, error=self.rng.choice(["slowdown", "internal"]))
        if k == "freeze":
            seen = sum(self.proxy.stats.requests.values())
            self.world.freeze_for(p.freeze)
            self.tally.requests_hit += sum(self.proxy.stats.requests.values()) - seen  # arrived while frozen
            return 1
        if k == "reset_mid":
            return self._shot("reset_mid", methods=("PUT",), path_regex=DATA, min_bytes=512 * 1024)
        if k == "wrong_length":
            if self.rng.random() < 0.5:  # an upload cut upstream: data, a manifest or the pointer
                return self._shot("wrong_length", methods=("PUT",), path_regex=self.rng.choice(
                    [DATA, DATA, r"/manifests/", r"latest\.json"]))
            return self._shot("wrong_length", methods=("GET",), path_regex=SMALL_DOCS)
        if k == "truncated":
            return self._shot("truncated", methods=("GET",), path_regex=SMALL_DOCS,
                              strip_checksums=self.rng.random() < 0.5)
        raise ValueError(f"not a store fault: {k}")

    def _startup_fault(self) -> int:
        """SIGKILL the sidecar, arm a response fault on the manifests/pointer reads of its start-up, restart."""
        self.sidecar.kill()
        shot = self.proxy.arm(self.kind, methods=("GET",), path_regex=SMALL_DOCS,
                              strip_checksums=self.kind == "truncated" and self.rng.random() < 0.5)
        self.start_sidecar()
        if shot.fired.wait(10):
            self.tally.requests_hit += 1
            return 1
        shot.cancel()
        return 0

    # ------------------------------------------------------------------ the session
    def run(self) -> Tally:
        t0 = time.monotonic()
        self.proxy.clear()
        token = _canary(self.workdir, self.watch)
        trainer = Trainer(self.watch, random.Random(self.rng.random()), big_every=3 if self.kind == "reset_mid" else 0)
        truth = self.run_.truth
        self.start_sidecar()
        with inv.PointerMonitor(truth) as monitor:
            with Writing(trainer, self.profile.interval, random.Random(self.rng.random())):
                for i in range(self.faults):
                    time.sleep(self.rng.uniform(0.5, 2.5))
                    if self.kind in RESPONSE_KINDS and i == self.faults // 2:
                        self.tally.injected += self._startup_fault()
                    hit = self.inject()
                    for _ in range(3):  # a fault that found no request is tried again (not counted)
                        if hit:
                            break
                        hit = self.inject()
                    self.tally.injected += hit
            post = trainer.write_one()  # the checkpoint after the faults: proves recovery
            self._drain(trainer)
            committed = {m.name for m in truth.list()}
            alive = self.sidecar.proc.poll() is None
            if post.name in committed and alive:
                self.tally.recovery["recovered"] += 1
            else:
                why = "sidecar exited" if not alive else f"{post.name} not committed within {self.profile.drain:.0f} s"
                self.tally.recovery["needs restart"] += 1
                self.tally.notes.append(f"session {self.run_.url}: {why}:\n{self.sidecar.tail(12)}")
            faulty = self.run_.faulty(TransferSettings(backoff_base=0.1, backoff_max=2.0))
            armed = []
            if self.kind in RESPONSE_KINDS:
                armed = [self.proxy.arm(self.kind, methods=("GET",), path_regex=DATA,
                                        strip_checksums=self.kind == "truncated" and self.rng.random() < 0.5)
                         for _ in range(max(1, self.faults // 2))]
            restore_v, repeated = inv.restore_violations(faulty, truth, trainer.by_name(), self.workdir / "restored")
            self.tally.injected += sum(1 for a in armed if a.fired.is_set())
            self.tally.requests_hit += sum(1 for a in armed if a.fired.is_set())
            self.proxy.clear()
            if repeated:
                self.tally.notes.append(f"{repeated} restore(s) through the faults refused loudly and were repeated")
            for sc in self.sidecars:
                if sc.proc.poll() is None:
                    sc.terminate(30)
        written = trainer.by_name()
        order = [w.name for w in trainer.complete()]
        abandoned_units = self._abandoned_units()
        v = self.tally.violations
        v += monitor.violations + restore_v
        v += inv.checked(lambda: self._count(truth))
        v += inv.checked(lambda: inv.manifest_violations(truth, written))
        v += inv.checked(lambda: inv.final_pointer_violations(truth))
        v += inv.checked(lambda: inv.lost_commit_violations(truth, self._reported()))
        v += inv.checked(lambda: inv.newest_resolves(truth, order))
        v += inv.checked(lambda: inv.missed_violations(truth, trainer.complete(), abandoned_units))
        v += inv.checked(lambda: inv.outside_read_violations(truth, token))
        self.tally.seconds = time.monotonic() - t0
        return self.tally

    def _drain(self, trainer: Trainer) -> None:
        """Wait until every finished checkpoint is committed (read from the store) or abandoned (said)."""
        end = time.monotonic() + self.profile.drain
        while time.monotonic() < end:
            try:
                committed = {m.name for m in self.run_.truth.list()}
            except StoreError:  # reported by the checks afterwards
                return
            left = [w.name for w in trainer.complete() if w.name not in committed
                    and w.name not in self._abandoned_units()]
            if not left or self.sidecar.proc.poll() is not None:
                return
            time.sleep(1.0)

    def _reported(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for sc in self.sidecars:
            out.update(sc.committed())
        return out

    def _abandoned_units(self) -> set[str]:
        return {str(r["unit"]) for sc in self.sidecars for r in sc.records()
                if r.get("reason") and r.get("unit") and r.get("level") in ("warning", "error")}

    def _count(self, truth) -> list[inv.Violation]:  # type: ignore[no-untyped-def]
        self.tally.committed = len(truth.manifest_ids())
        for sc in self.sidecars:
            s = summary_counts(sc.summary())
            self.tally.abandoned += int(s.get("abandoned", 0) or 0)
            self.tally.retried += sc.count(lambda m: "retry" in m)
        return []


def sigterm_frozen(world: World, faults: int, rng: random.Random, profile: Profile, workdir: Path) -> Tally:
    """``faults`` times: a sidecar with one commit; the server frozen; the next checkpoint saved (16 MiB);
    SIGTERM once the sidecar uploads it. It must exit within ``grace + DEADLINE_SLACK`` s, and after the
    server is continued the pointer must still name the first checkpoint."""
    tally = Tally("sigterm_frozen", sessions=1)
    t0 = time.monotonic()
    for i in range(faults):
        run = world.fresh_run("sigterm-frozen")
        watch = workdir / f"watch-{i}"
        watch.mkdir(parents=True)
        trainer = Trainer(watch, random.Random(rng.random()), sizes_mib=(1.0, 1.0), dcp_every=0)
        first = trainer.write_one()
        sc = Sidecar(watch, run.url, run.options, workdir, ["--grace-seconds", str(profile.grace), "--concurrency", "1"])
        try:
            if sc.wait_log(lambda r: str(r.get("msg", "")).startswith(f"committed {first.name}"), 90) is None:
                raise RuntimeError(f"sigterm_frozen: the first commit never happened:\n{sc.tail()}")
            before = run.truth.read_pointer()
            trainer.sizes_mib = (16.0, 16.0)
            with world.frozen():
                second = trainer.write_one()
                sc.wait_log(lambda r: r.get("unit") == second.name
                            and str(r.get("msg", "")).startswith("complete"), 30)
                time.sleep(rng.uniform(0.2, 1.0))
                rc = sc.terminate(profile.grace + 60)
            tally.injected += 1
            took = sc.exit_seconds
            if took is None or took > profile.grace + DEADLINE_SLACK:
                tally.violations.append(inv.Violation(
                    "deadline_missed", f"try {i}: " + ("still running 60 s past the grace period (killed)"
                                                       if took is None else f"exited {took:.1f} s after SIGTERM "
                                                                            f"(grace {profile.grace} s)")))
                tally.recovery["killed by hand" if took is None else "exited late"] += 1
            else:
                tally.recovery[f"exited {'0' if rc == 0 else rc} by the deadline"] += 1
            time.sleep(2.0)  # anything the frozen server still held is processed now
            after = run.truth.read_pointer()
            if before is None or after is None or after.checkpoint != before.checkpoint:
                tally.violations.append(inv.Violation("incomplete_pointer", f"try {i}: pointer {before} → {after}"))
            tally.violations += inv.manifest_violations(run.truth, trainer.by_name())
            tally.committed += len(run.truth.manifest_ids())
            tally.abandoned += int(summary_counts(sc.summary()).get("abandoned", 0) or 0)
            tally.retried += sc.count(lambda m: "retry" in m)
        finally:
            sc.kill()
    tally.seconds = time.monotonic() - t0
    return tally


def run_store_fault(world: World, kind: str, faults: int, rng: random.Random, profile: Profile,
                    workdir: Path) -> Tally:
    """One session of the store fault ``kind`` with ``faults`` faults."""
    if kind == "sigterm_frozen":
        return sigterm_frozen(world, faults, rng, profile, workdir)
    return Session(world, kind, faults, rng, profile, workdir).run()
