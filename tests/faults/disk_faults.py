"""Full local disks (family ``disk``): under the trainer's folder, and under the restore destination.

Each session mounts a small tmpfs (as root: ``mount -t tmpfs -o size=…``; a machine where that fails fails
the session loudly) and unmounts it afterwards.

- ``disk_full_trainer``: the watched folder is a 20 MiB tmpfs. The trainer saves real checkpoints until a save
  fails with ENOSPC (the fault), leaving a cut file or folder behind; like a trainer's rotation it then deletes
  the failed save and its oldest *committed* checkpoints, and goes on. The sidecar must never commit a failed
  save, must commit every finished one, and keeps running.
- ``disk_full_restore``: ``kresume restore`` (the command the restore init step runs) of a checkpoint larger
  than the tmpfs at DEST, over an older copy of the same name that fits. It must fail with exit 10 and one
  line naming the destination, leave the older copy byte-exact and no staging files behind (the tmpfs is
  as full as before); on a larger tmpfs the same command restores it byte-exact.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from faults import invariants as inv
from faults.kinds import Tally
from faults.procs import Sidecar, run_cli, summary_counts
from faults.store_faults import Profile, _canary
from faults.trainer import Trainer, record_files
from faults.world import World
from kresume.store.errors import StoreError

MiB = 2**20


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``path`` (created) inside the block; unmounted after it."""
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"disk-full faults mount a tmpfs and need root (CAP_SYS_ADMIN): mount said "
                           f"{res.stderr.strip()!r}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _free(path: Path) -> int:
    return shutil.disk_usage(path).free


def disk_full_trainer(world: World, faults: int, rng: random.Random, profile: Profile, workdir: Path) -> Tally:
    tally = Tally("disk_full_trainer", sessions=1)
    t0 = time.monotonic()
    run = world.fresh_run("disk-full-trainer")
    truth = run.truth
    with tmpfs(workdir / "watch", 20 * MiB) as watch:
        token = _canary(workdir, watch)
        trainer = Trainer(watch, random.Random(rng.random()), sizes_mib=(3.0, 5.0), dcp_every=3)
        sc = Sidecar(watch, run.url, run.options, workdir, ["--concurrency", "2"])
        try:
            if not sc.watching():
                raise RuntimeError(f"the sidecar did not start:\n{sc.tail()}")
            with inv.PointerMonitor(truth) as monitor:
                deadline = time.monotonic() + 120 + 40 * faults
                while tally.injected < faults and time.monotonic() < deadline:
                    rec = trainer.write_one()
                    if not rec.ok:
                        tally.injected += 1
                        time.sleep(1.0)  # the sidecar sees the cut save before it goes
                        trainer.remove(rec.name)
                        _rotate(trainer, truth, keep=1)
                    time.sleep(rng.uniform(0.3, 1.2))
                post = trainer.write_one()
                if not post.ok:  # the disk is full of committed checkpoints: rotate them, save again
                    trainer.remove(post.name)
                    _rotate(trainer, truth, keep=0)
                    post = trainer.write_one()
                recovered = _wait_committed(truth, post.name, 120) and sc.proc.poll() is None
            tally.recovery["recovered" if recovered else "needs restart"] += 1
            if not recovered:
                tally.notes.append(f"the checkpoint after the full disk was not committed:\n{sc.tail(12)}")
            sc.terminate(30)
        finally:
            sc.kill()
        failed = sum(1 for w in trainer.written if not w.ok)
        tally.notes.append(f"{failed} saves failed with ENOSPC ({', '.join(sorted({w.error[:60] for w in trainer.written if not w.ok}))})")
        v = tally.violations
        v += monitor.violations
        v += inv.checked(lambda: inv.manifest_violations(truth, trainer.by_name()))
        v += inv.checked(lambda: inv.final_pointer_violations(truth))
        v += inv.checked(lambda: inv.lost_commit_violations(truth, sc.committed()))
        v += inv.checked(lambda: inv.missed_violations(truth, trainer.complete(), set()))
        v += inv.checked(lambda: inv.outside_read_violations(truth, token))
        restore_v, _ = inv.restore_violations(truth, truth, trainer.by_name(), workdir / "restored")
        v += restore_v
    tally.committed = len(truth.manifest_ids())
    tally.abandoned = int(summary_counts(sc.summary()).get("abandoned", 0) or 0)
    tally.retried = sc.count(lambda m: "retry" in m)
    tally.seconds = time.monotonic() - t0
    return tally


def _rotate(trainer: Trainer, truth, keep: int) -> None:  # type: ignore[no-untyped-def]
    """Delete the oldest finished checkpoints that are committed, keeping the ``keep`` newest local ones
    (a trainer's save_top_k); waits up to 60 s for a commit when none is committed yet."""
    end = time.monotonic() + 60
    while True:
        try:
            committed = {m.name for m in truth.list()}
        except StoreError:
            committed = set()
        local = [w for w in trainer.complete() if (trainer.watch / w.name).exists()]
        victims = [w for w in local[: max(0, len(local) - keep)] if w.name in committed]
        if victims or time.monotonic() > end:
            for w in victims:
                trainer.remove(w.name)
            return
        time.sleep(0.5)


def _wait_committed(truth, name: str, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if name in {m.name for m in truth.list()}:
                return True
        except StoreError:
            pass
        time.sleep(0.5)
    return False


def _cli_options(options: dict) -> list[str]:
    out = []
    for key, value in options.items():
        out += ["-o", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return out


def disk_full_restore(world: World, faults: int, rng: random.Random, profile: Profile, workdir: Path) -> Tally:
    tally = Tally("disk_full_restore", sessions=1)
    t0 = time.monotonic()
    run = world.fresh_run("disk-full-restore")
    truth = run.truth
    src = workdir / "src"
    src.mkdir(parents=True)
    opts = _cli_options(run.options)
    for i in range(faults):
        folder = rng.random() < 0.5
        name = f"step_{100 + i}" if folder else "last.ckpt"  # one name, committed small and then big
        old_dir, new_dir = src / f"old{i}", src / f"new{i}"
        _save(old_dir / name, folder, 1.0)
        _save(new_dir / name, folder, 8.0)
        old_m, new_m = truth.commit(old_dir / name), truth.commit(new_dir / name)
        with tmpfs(workdir / f"dest{i}", 5 * MiB) as dest:
            first = run_cli(["restore", *opts, run.url, str(dest), "--checkpoint", old_m.id], {})
            if first.returncode != 0:
                raise RuntimeError(f"restoring the small copy failed: {first.stderr}")
            before, free = record_files(dest / name), _free(dest)
            res = run_cli(["restore", *opts, run.url, str(dest), "--checkpoint", new_m.id], {})
            tally.injected += 1
            err = res.stderr.strip().splitlines()
            leftovers = [p.name for p in dest.iterdir() if p.name != name]
            if res.returncode != 10 or len(err) != 1 or "Traceback" in res.stderr:
                tally.violations.append(inv.Violation("restore_mismatch", f"restore onto a full disk: exit "
                                                      f"{res.returncode}, stderr {res.stderr.strip()[-300:]!r} "
                                                      "(want exit 10 and one line)"))
            if record_files(dest / name) != before:
                tally.violations.append(inv.Violation("restore_mismatch", f"the older copy of {name} changed "
                                                                          "after a restore that failed"))
            if leftovers or _free(dest) < free:
                tally.violations.append(inv.Violation("restore_mismatch", f"a failed restore left {leftovers} "
                                                      f"({free - _free(dest)} B more used)"))
            tally.notes.append(f"{name}: exit {res.returncode}: {err[-1][:160] if err else ''}")
        with tmpfs(workdir / f"big{i}", 64 * MiB) as dest:
            res = run_cli(["restore", *opts, run.url, str(dest), "--checkpoint", new_m.id], {})
            want = {k: (v[0], v[2]) for k, v in record_files(new_dir / name).items()}
            got = {k: (v[0], v[2]) for k, v in record_files(dest / name).items()} if (dest / name).exists() else {}
            if res.returncode != 0 or got != want:
                tally.violations.append(inv.Violation("restore_mismatch", f"{name} with room: exit "
                                                      f"{res.returncode}, byte-exact {got == want}: {res.stderr[-300:]}"))
            else:
                tally.recovery["restored with room"] += 1
    tally.committed = len(truth.manifest_ids())
    tally.seconds = time.monotonic() - t0
    return tally


def _save(path: Path, folder: bool, mib: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    numel = int(mib * 2**18)
    if folder:
        path.mkdir()
        for r in range(2):
            torch.save({"w": torch.randn(numel // 2)}, path / f"shard_{r}.pt")
        (path / ".kresume-complete").write_text("")
    else:
        torch.save({"w": torch.randn(numel), "global_step": 7}, path)


def run_disk_fault(world: World, kind: str, faults: int, rng: random.Random, profile: Profile,
                   workdir: Path) -> Tally:
    """One session of the disk fault ``kind``."""
    workdir.mkdir(parents=True, exist_ok=True)
    fn = disk_full_trainer if kind == "disk_full_trainer" else disk_full_restore
    return fn(world, faults, rng, profile, workdir)
