"""``python -m bench.startup``: a one-shot ``kresume restore``'s fixed cost, against s5cmd and an older kresume.

    python -m bench.startup                        # 1 MB, 1 GB file, 64 x 16 MB folder; 5 rounds
    python -m bench.startup --before 66ba3d9       # also the kresume of that commit (its src/, same venv)
    python -m bench.startup --mb 1 --repeats 3 --shapes small

One SeaweedFS server; each shape is committed once to its own run (the sidecar's code path). Then, per round and
in alternating order, each tool restores it into an empty folder as a fresh process: ``kresume restore URL DEST
--no-progress`` (``latest`` resolved, as the restore init step does) and ``s5cmd cp`` of the same objects (the Go
binary, bench/peers.py). Wall and CPU (user+sys) come from ``wait4`` (bench/procs.py); medians are printed as a
markdown table. Bytecode is cached for every Python tool, as in the image (:func:`bench.procs.bytecode_as_installed`);
a warm-up run of each tool comes first. ``--before REF`` runs ``src/`` of that git commit (``git archive``) with
this venv's interpreter and libraries, for a same-run before/after comparison of kresume's own code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import peers, procs

SHAPES = ("small", "file", "folder")


def _inputs(work: Path, mb: int) -> dict[str, Path]:
    """Local checkpoints: 1 MB file, ``mb`` MB file, 64 x 16 MB folder (random bytes)."""
    out: dict[str, Path] = {}
    for shape, files, size in (("small", 1, 10**6), ("file", 1, mb * 10**6), ("folder", 64, 16 * 10**6)):
        root = work / "inputs" / shape
        target = root / ("model.ckpt" if files == 1 else "ckpt")
        if files == 1:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as f:
                for _ in range(size // 10**6):
                    f.write(os.urandom(10**6))
        else:
            target.mkdir(parents=True, exist_ok=True)
            for i in range(files):
                (target / f"shard-{i:02d}.bin").write_bytes(os.urandom(size))
            (target / ".kresume-complete").write_text("")
        out[shape] = target
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=1000, help="size of the big file, MB (10^6 B)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    p.add_argument("--before", default=None, metavar="REF", help="also run kresume's src/ at this git commit")
    args = p.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]

    from kresume.devtools import objstores
    from kresume.store.local import snapshot
    from kresume.store.runstore import RunStore

    work = Path(tempfile.mkdtemp(prefix="kresume-bench-startup-"))
    procs.bytecode_as_installed()
    tools = {"kresume": [peers.tool("kresume")]}
    if args.before:
        old = work / "before"
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.before, "src"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        tools[f"kresume@{args.before}"] = ["env", f"PYTHONPATH={old / 'src'}", sys.executable, "-c",
                                           "import sys; from kresume.cli import main; sys.exit(main())"]
    tools["s5cmd"] = [peers.tool("s5cmd")]
    server = objstores.SeaweedFSServer()
    server.start()
    try:
        server.create_bucket("bench-startup")
        env = server.env
        runs = {}
        local = _inputs(work, args.mb)
        for shape in shapes:
            url = server.url("bench-startup", "runs") + f"/ns/{shape}/"
            with snapshot(local[shape], root=local[shape].parent) as snap:
                manifest = RunStore.open(url, server.storage_options).commit(snap)
            key = url[len("s3://"):] + f"checkpoints/{manifest.id}/{manifest.name}"
            runs[shape] = (url, f"s3://{key}" + ("/*" if shape == "folder" else ""))
        dest = work / "dest"

        def argv_of(tool: str, shape: str) -> list[str]:
            url, key = runs[shape]
            if tool == "s5cmd":
                return [*tools[tool], "--endpoint-url", server.endpoint, "cp", key, f"{dest}/"]
            return [*tools[tool], "restore", url, str(dest), "--no-progress"]

        names = list(tools)
        rows = []
        for shape in shapes:
            samples: dict[str, list[procs.Sample]] = {t: [] for t in names}
            for rnd in range(args.repeats + 1):  # round 0: warm-up (bytecode, page cache), not counted
                for tool in names if rnd % 2 == 0 else reversed(names):
                    shutil.rmtree(dest, ignore_errors=True)
                    dest.mkdir()
                    sample = procs.run(argv_of(tool, shape), env=env)
                    if rnd:
                        samples[tool].append(sample)
            for tool in names:
                wall = statistics.median(s.seconds for s in samples[tool])
                cpu = statistics.median(s.cpu_seconds for s in samples[tool])
                rows.append((shape, tool, wall, cpu))
        print(f"| shape | tool | median wall s | median CPU s | runs |  (load average {os.getloadavg()[0]:.1f})")
        print("|---|---|---|---|---|")
        for shape, tool, wall, cpu in rows:
            print(f"| {shape} | {tool} | {wall:.3f} | {cpu:.3f} | {args.repeats} |")
        return 0
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
