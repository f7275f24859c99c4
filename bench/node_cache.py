"""``python -m bench.node_cache``: a same-node restore from the node-local tier against ``cp`` of the same bytes.

    python -m bench.node_cache                 # 1 GB checkpoint, 5 rounds each, SeaweedFS as the store
    python -m bench.node_cache --mb 64 --repeats 1

One 1 GB torch-zip-sized file of random bytes is committed to a SeaweedFS run (the sidecar's code path) and kept
in a node cache on this disk (the sidecar's ``--cache-dir`` path, from the open file). Then, alternating, each
round times (median reported; page cache warm for all, as for a replacement pod seconds after the commit):

- ``cp`` of the cached file to a new name (a fresh ``cp`` process, as a user would run it);
- the restore from the cache, in-process (``RunStore.restore(..., cache=...)``: manifest read, then one copy
  with the CRC-32C computed on the way, then the rename);
- the same as the ``kresume restore --cache-dir`` command (a fresh process: what the init container runs);
- the restore from the store (SeaweedFS download), in-process, for scale.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _median_time(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.node_cache", description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=1000, help="checkpoint size, MB (10^6 B)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)

    from kresume.devtools import objstores
    from kresume.store.local import snapshot
    from kresume.store.nodecache import NodeCache
    from kresume.store.runstore import RunStore

    work = Path(args.workdir or tempfile.mkdtemp(prefix="kresume-bench-cache-"))
    from bench.procs import bytecode_as_installed

    bytecode_as_installed()
    server = objstores.SeaweedFSServer()
    server.start()
    try:
        server.create_bucket("bench-cache")
        opts = server.storage_options
        url = server.url("bench-cache", "runs") + "/ns/run/"
        store = RunStore.open(url, opts)
        src = work / "ckpt" / "model.ckpt"
        src.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(10**6))
        cache = NodeCache(work / "cache", max_bytes=10 * args.mb * 10**6)
        with snapshot(src, root=src.parent) as snap:
            m = store.commit(snap)
            put = cache.put(store.url, m, snap.files)
        assert put is not None, "not cached"
        cached = cache.entry_dir(store.url, m.id) / "data" / m.name
        n = m.total_bytes
        print(f"{n} B committed as {m.id}; cached by {put.method} in {put.seconds:.3f} s", file=sys.stderr)

        def cp() -> None:
            dst = work / "cp-dst"
            subprocess.run(["cp", str(cached), str(dst)], check=True)
            dst.unlink()

        def from_cache() -> None:
            out: dict = {}
            path = store.restore(work / "dest-lib", m.id, cache=cache, outcome=out)
            assert out["source"] == "cache"
            path.unlink()

        cli = [str(Path(sys.executable).with_name("kresume")), "restore", url, str(work / "dest-cli"), "--checkpoint",
               m.id, "--no-progress", "--progress-every", "0", "--cache-dir", str(work / "cache"),
               *[a for k, v in opts.items() for a in ("-o", f"{k}={v if isinstance(v, str) else __import__('json').dumps(v)}")]]

        def from_cache_cli() -> None:
            subprocess.run(cli, check=True, capture_output=True, env={**os.environ, **server.env})
            (work / "dest-cli" / m.name).unlink()

        def from_store() -> None:
            path = store.restore(work / "dest-store", m.id)
            path.unlink()

        for fn in (cp, from_cache, from_cache_cli, from_store):
            fn()  # warm-up round (page cache, imports, connections)
        rows = {}
        for name, fn in (("cp", cp), ("node cache (library)", from_cache), ("node cache (kresume restore)",
                         from_cache_cli), ("store download (library)", from_store)):
            rows[name] = _median_time(fn, args.repeats)
        base = rows["cp"]
        print(f"| what ({n / 1e9:.2f} GB, median of {args.repeats}, warm page cache) | seconds | GB/s | × cp |")
        print("|---|---|---|---|")
        for name, secs in rows.items():
            print(f"| {name} | {secs:.3f} | {n / secs / 1e9:.2f} | {secs / base:.2f} |")
        return 0
    finally:
        server.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
