"""``python -m bench.restore_threads``: where a one-shot ``kresume restore`` spends its CPU, per thread.

    python -m bench.restore_threads                       # 1 GB file and 64 x 16 MB folder, 3 runs each
    python -m bench.restore_threads --shapes file --mb 200 --repeats 1

One SeaweedFS server; each shape is committed once (the inputs of bench/startup.py). Each run is a fresh process
running the real command line (``kresume restore URL DEST --no-progress``, ``latest`` resolved) with one hook:
just before the command exits it prints its wall time and the user / system CPU seconds of each of its threads,
read from ``/proc/self/task/*/stat`` and grouped by thread name (``kresume-range`` = ranged GETs: checksum and
``pwrite``; ``tokio-rt-worker`` = obstore's HTTP client; ``kresume-native`` = helper threads of calls bounded by
the command's budget; ``MainThread`` = start-up and resolution). Output: one markdown row per run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import procs

SHAPES = ("file", "folder")


def _inputs(work: Path, shapes: list[str], mb: int) -> dict[str, Path]:
    """Local checkpoints of random bytes: ``file`` = one ``mb`` MB file, ``folder`` = 64 x 16 MB (bench/startup.py's)."""
    out: dict[str, Path] = {}
    for shape in shapes:
        root = work / "inputs" / shape
        if shape == "file":
            out[shape] = root / "model.ckpt"
            root.mkdir(parents=True)
            with open(out[shape], "wb") as f:
                for _ in range(mb):
                    f.write(os.urandom(10**6))
        else:
            out[shape] = root / "ckpt"
            out[shape].mkdir(parents=True)
            for i in range(64):
                (out[shape] / f"shard-{i:02d}.bin").write_bytes(os.urandom(16 * 10**6))
            (out[shape] / ".kresume-complete").write_text("")
    return out


def _thread_cpu() -> dict[str, tuple[float, float]]:
    """``{thread name: (user s, system s)}`` of this process, names without their pool index."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    rows: dict[str, tuple[float, float]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        name = names.get(int(tid), comm).rstrip("0123456789_-") or comm
        user, system = rows.get(name, (0.0, 0.0))
        rows[name] = (user + int(fields[11]) / tick, system + int(fields[12]) / tick)
    return rows


def child(argv: list[str]) -> int:
    """Run ``kresume *argv`` in this process; print ``KRESUME-THREADS <json>`` to stderr as it exits."""
    import kresume.store.deadline as deadline
    from kresume.cli import main

    t0 = time.monotonic()
    exit_now = deadline.exit_now

    def report(code: int) -> None:
        print("KRESUME-THREADS", json.dumps({"wall": time.monotonic() - t0, "threads": _thread_cpu()}),
              file=sys.stderr, flush=True)
        exit_now(code)

    deadline.exit_now = report  # the fast path ends with exit_now (os._exit): no atexit hook would run
    sys.argv = ["kresume", *argv]
    code = main()
    report(int(code or 0))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.restore_threads", description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=1000, help="size of the big file, MB (10^6 B)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    p.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        return child(args.child)
    shapes = [s for s in args.shapes.split(",") if s]
    if not shapes or set(shapes) - set(SHAPES):
        p.error(f"--shapes: use a comma-separated list of {', '.join(SHAPES)}")

    from kresume.devtools import objstores
    from kresume.store.local import snapshot
    from kresume.store.runstore import RunStore

    work = Path(tempfile.mkdtemp(prefix="kresume-bench-threads-"))
    procs.bytecode_as_installed()
    server = objstores.SeaweedFSServer()
    server.start()
    try:
        server.create_bucket("bench-threads")
        local = _inputs(work, shapes, args.mb)
        print(f"| shape | run | wall s | CPU s (user + sys) by thread |  (load average {os.getloadavg()[0]:.1f})")
        print("|---|---|---|---|")
        for shape in shapes:
            url = server.url("bench-threads", "runs") + f"/ns/{shape}/"
            with snapshot(local[shape], root=local[shape].parent) as snap:
                RunStore.open(url, server.storage_options).commit(snap)
            dest = work / "dest"
            for rnd in range(args.repeats + 1):  # run 0 warms bytecode and the page cache: not printed
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir()
                done = subprocess.run([sys.executable, "-m", "bench.restore_threads", "--child", "restore", url,
                                       str(dest), "--no-progress"], env={**os.environ, **server.env},
                                      capture_output=True, text=True, check=True)
                line = next(ln for ln in done.stderr.splitlines() if ln.startswith("KRESUME-THREADS "))
                got = json.loads(line.split(" ", 1)[1])
                if rnd:
                    threads = sorted(got["threads"].items(), key=lambda kv: -sum(kv[1]))
                    cells = ", ".join(f"{n} {u:.2f} + {s:.2f}" for n, (u, s) in threads if u + s > 0)
                    print(f"| {shape} | {rnd} | {got['wall']:.2f} | {cells} |", flush=True)
        return 0
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
