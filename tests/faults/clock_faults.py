"""Clock jumps (family ``clock``): the sidecar's wall clock stepped by ±1 h while it commits and prunes.

The sidecar runs under :mod:`faults.clocked` (its :mod:`kresume.store.clock` reads the real time plus an
offset the harness rewrites) with ``--keep-last 2``; the trainer saves marker folders (``export-N/`` …
``.kresume-complete``: no step in the name or the content), the case where only the commit time orders
checkpoints. Faults, in a seeded mix:

- a step of the sidecar's clock to +1 h or -1 h from the real time (one fault per step);
- ``kresume prune --keep-last 2 --orphans-older-than 600`` run with the clock 1 h ahead while the sidecar
  uploads a checkpoint (its data PUTs dripped at 1 KiB/s through the proxy so the upload is in flight):
  the pruner must not take that upload's data for an orphan.

The truth about which checkpoint is newest is the trainer's write order: retention must keep the two newest
reported commits in that order, and ``latest`` must resolve to the newest one the store holds.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from faults import invariants as inv
from faults.clocked import step
from faults.disk_faults import _cli_options
from faults.kinds import Tally
from faults.procs import Sidecar, run_cli, summary_counts
from faults.store_faults import DATA, Profile, _canary
from faults.trainer import Trainer, Writing
from faults.world import World

HOUR = 3600.0
KEEP_LAST = 2


def run_clock_fault(world: World, kind: str, faults: int, rng: random.Random, profile: Profile,
                    workdir: Path) -> Tally:
    """One clock-jump session with ``faults`` faults."""
    tally = Tally(kind, sessions=1)
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    run = world.fresh_run("clock-jump")
    truth = run.truth
    watch = workdir / "watch"
    watch.mkdir()
    token = _canary(workdir, watch)
    clock_file = workdir / "clock-offset"
    step(clock_file, 0.0)
    world.proxy.clear()
    trainer = Trainer(watch, random.Random(rng.random()), sizes_mib=(1.0, 3.0), dcp_every=0, marker_every=1)
    sc = Sidecar(watch, run.url, run.options, workdir, ["--concurrency", "2", "--keep-last", str(KEEP_LAST)],
                 clock_file=clock_file)
    offset = 0.0
    prunes: list[str] = []
    try:
        if not sc.watching():
            raise RuntimeError(f"the sidecar did not start:\n{sc.tail()}")
        with inv.PointerMonitor(truth) as monitor:
            with Writing(trainer, profile.interval, random.Random(rng.random())):
                for i in range(faults):
                    time.sleep(rng.uniform(2.0, 4.0))
                    if rng.random() < 0.3:
                        tally.injected += _prune_ahead(world, run, workdir, prunes)
                    else:
                        offset = rng.choice([o for o in (HOUR, -HOUR) if o != offset])
                        step(clock_file, offset)
                        tally.injected += 1
                time.sleep(3 * profile.interval)  # commits and prunes with the last step in force
            post = trainer.write_one()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and post.name not in {m.name for m in truth.list()}:
                time.sleep(0.5)
            committed = post.name in {m.name for m in truth.list()}
        alive = sc.proc.poll() is None
        tally.recovery["recovered" if committed and alive else "needs restart"] += 1
        sc.terminate(30)
    finally:
        sc.kill()
        world.proxy.clear()
    order = [w.name for w in trainer.complete()]
    v = tally.violations
    v += monitor.violations
    v += inv.checked(lambda: inv.manifest_violations(truth, trainer.by_name()))
    v += inv.checked(lambda: inv.final_pointer_violations(truth))
    v += inv.checked(lambda: inv.lost_commit_violations(truth, sc.committed(), keep_last=KEEP_LAST, order=order))
    v += inv.checked(lambda: inv.newest_resolves(truth, order))
    v += inv.checked(lambda: inv.outside_read_violations(truth, token))
    restore_v, _ = inv.restore_violations(truth, truth, trainer.by_name(), workdir / "restored")
    v += restore_v
    tally.committed = len(sc.committed())
    tally.abandoned = int(summary_counts(sc.summary()).get("abandoned", 0) or 0)
    tally.retried = sc.count(lambda m: "retry" in m)
    if prunes:
        tally.notes.append("prune with the clock 1 h ahead: " + "; ".join(prunes))
    tally.seconds = time.monotonic() - t0
    return tally


def _prune_ahead(world: World, run, workdir: Path, log: list[str]) -> int:  # type: ignore[no-untyped-def]
    """``kresume prune --orphans-older-than 600`` with the clock +1 h while an upload is in flight; 1 when
    it ran with an upload in flight."""
    drip = world.proxy.window("drip", 8.0, methods=("PUT",), path_regex=DATA)
    end = time.monotonic() + 8.0
    while not drip.hits and time.monotonic() < end:
        time.sleep(0.1)
    if not drip.hits:
        return 0
    clock_file = workdir / "prune-clock"
    step(clock_file, HOUR)
    res = run_cli(["prune", *_cli_options(run.direct_options), run.url, "--keep-last", str(KEEP_LAST),
                   "--orphans-older-than", "600"], {}, clock_file=clock_file, timeout=120)
    deleted = [ln.split("\t")[1] for ln in res.stdout.splitlines() if ln.startswith("deleted") and "orphan" in ln]
    log.append(f"exit {res.returncode}, {len(deleted)} orphan(s) deleted" + (f": {res.stderr.strip()[-200:]}"
                                                                            if res.returncode not in (0, 4) else ""))
    time.sleep(max(0.0, end - time.monotonic()))
    return 1
