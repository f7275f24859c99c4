"""``python -m tests.faults --seed S --faults N``: run the fault campaign and print its table.

Starts its own servers (moto, the fault proxy, a control plane) under ``--work-dir`` and stops them at the
end. ``--kinds`` limits the campaign to some kinds; ``--profile ci`` uses the short windows of the CI
campaign; ``--json-out`` writes the tallies. Exit code 0 when no invariant was violated, 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: `faults` and `_fixtures`

from kresume.devtools import objstores  # noqa: E402,F401 - first: sets the gcsfs env before anything imports it


def main(argv: list[str] | None = None) -> int:
    from faults import campaign
    from faults.kinds import KINDS, render
    from faults.world import World

    ap = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=16, help="seed of the plan and of every random choice")
    ap.add_argument("--faults", type=int, default=len(KINDS), help="faults to inject in all (≥ one per kind)")
    ap.add_argument("--kinds", default="", help=f"comma list of kinds (default all: {','.join(KINDS)})")
    ap.add_argument("--profile", choices=("ci", "full"), default="full", help="window lengths (ci: short)")
    ap.add_argument("--work-dir", type=Path, default=None, help="where servers and sessions keep files")
    ap.add_argument("--json-out", type=Path, default=None, help="write the tallies as JSON here")
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()] or None
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="kresume-faults-"))
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    with World(work) as world:
        tallies = campaign.run(world, args.faults, args.seed, kinds=kinds, profile=args.profile,
                               log=lambda s: print(s, flush=True))
    took = time.monotonic() - t0
    print(f"\nkresume fault campaign: seed {args.seed}, {args.faults} faults planned, profile {args.profile}, "
          f"{started:%Y-%m-%d %H:%M} UTC, {took / 60:.1f} min, work dir {work}\n")
    print(render(tallies))
    if args.json_out:
        args.json_out.write_text(json.dumps({
            "seed": args.seed, "faults": args.faults, "profile": args.profile, "started": started.isoformat(),
            "minutes": round(took / 60, 1), "host_cpus": os.cpu_count(),
            "tallies": [{"kind": t.kind, "injected": t.injected, "sessions": t.sessions, "committed": t.committed,
                         "abandoned": t.abandoned, "retried": t.retried, "recovery": dict(t.recovery),
                         "violations": [[v.kind, v.detail] for v in t.violations], "notes": t.notes,
                         "seconds": round(t.seconds, 1)} for t in tallies]}, indent=2))
    return 1 if any(t.violations for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())
