"""The campaign: a seeded plan of faults over every kind, run session by session on one :class:`World`.

``run(total, seed, ...)`` allocates ``total`` faults over the kinds (:func:`faults.kinds.allocate`), splits
each kind's share into sessions, runs the sessions in a seeded order, and returns a :class:`Tally` per kind.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from faults import kinds as kmod
from faults.kinds import KINDS, Tally
from faults.world import World


def _runner(family: str) -> Callable[..., Tally]:
    if family == "store":
        from faults.store_faults import run_store_fault

        return run_store_fault
    if family == "disk":
        from faults.disk_faults import run_disk_fault

        return run_disk_fault
    if family == "clock":
        from faults.clock_faults import run_clock_fault

        return run_clock_fault
    from faults.k8s_faults import run_k8s_fault

    return run_k8s_fault


def _shrink(workdir: Path) -> None:
    """Delete the session's checkpoint files (keep logs): a long campaign writes gigabytes."""
    if not workdir.exists():
        return
    for path in sorted(workdir.rglob("*"), reverse=True):
        try:
            if path.is_symlink() or (path.is_file() and path.suffix not in (".log", ".out")):
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        except OSError:
            pass


def run(world: World, total: int, seed: int, *, kinds: list[str] | None = None, profile: str = "full",
        log: Callable[[str], None] = print) -> list[Tally]:
    """Run the campaign; a session that crashes the harness itself is recorded as a note (and its kind's
    recovery as ``harness error``), never hidden. ``profile``: ``ci`` (short windows) or ``full``."""
    from faults import store_faults

    prof = store_faults.CI if profile == "ci" else store_faults.FULL
    rng = random.Random(seed)
    share = kmod.allocate(total, rng, kinds)
    plan = [(k, n) for k, count in share.items() for n in kmod.sessions(k, count)]
    rng.shuffle(plan)
    tallies = {k: Tally(k) for k in share}
    for i, (kind, n) in enumerate(plan, 1):
        t0 = time.monotonic()
        workdir = world.workdir / f"s{i:03d}-{kind}"
        session_rng = random.Random(rng.random())
        try:
            result = _runner(KINDS[kind].family)(world, kind, n, session_rng, prof, workdir)
        except Exception as exc:  # noqa: BLE001 - the table says so
            result = Tally(kind, sessions=1)
            result.recovery["harness error"] += 1
            result.notes.append(f"session {i} crashed the harness: {exc!r}\n{traceback.format_exc(limit=6)}")
        tallies[kind].add(result)
        world.forget_runs()
        _shrink(workdir)
        log(f"[{i}/{len(plan)}] {kind}: {n} planned, {result.injected} injected, {len(result.violations)} "
            f"violations, {time.monotonic() - t0:.0f} s")
    return [tallies[k] for k in KINDS if k in tallies]
