"""Client cost: kresume's native client (obstore) against the fsspec backends, side by side in one run.

For each server (SeaweedFS for S3, Azurite for Azure, fake-gcs-server for GCS) and each client
(``KRESUME_STORE_CLIENT=native`` / ``fsspec``), alternating order every round, as real
subprocesses measured with ``wait4`` (:mod:`bench.procs`):

- ``commit``: ``kresume commit FILE URL`` of the row's file — wall, CPU-s per GB, peak RSS;
- ``restore``: ``kresume restore URL DEST`` of that commit;
- ``latest``: ``kresume latest URL`` of that run — a one-shot command's whole cost: start-up
  (imports, client set-up) plus the lookup;
- ``lookup``: in one process, the warm ``RunStore.latest()`` the operator's admission does,
  median of 20 after one warm-up, and the first one (client set-up included).

gs:// has no native path (see :mod:`kresume.store.native`): both columns are gcsfs there, which the
row says instead of a ratio.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench import peers, procs
from bench.report import Metric

Log = Callable[[str], None]
CLIENTS = ("native", "fsspec")
SERVERS = {"seaweedfs": "s3-seaweedfs", "azurite": "azure", "fake-gcs": "gcs"}
BUCKET = "bench-clients"

_LOOKUP = r"""
import json, sys, time
t0 = time.perf_counter()
from kresume.store.runstore import RunStore
t1 = time.perf_counter()
store = RunStore.open(sys.argv[1])
t2 = time.perf_counter()
store.latest()
t3 = time.perf_counter()
warm = []
for _ in range(20):
    s = time.perf_counter(); store.latest(); warm.append(time.perf_counter() - s)
warm.sort()
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "first_s": t3 - t2, "warm_p50_s": warm[10],
                  "warm_max_s": warm[-1], "fs": type(store.fs).__module__ + "." + type(store.fs).__name__}))
"""


def _env(server_env: dict[str, str], client: str) -> dict[str, str]:
    return {**server_env, "KRESUME_STORE_CLIENT": client}


def measure(server_names: list[str], src: Path, repeats: int, work: Path, log: Log = print) -> list[Metric]:
    """Rows per server: commit / restore / latest of ``src`` (a file) with each client, plus the lookup."""
    from kresume.devtools import objstores

    nbytes = src.stat().st_size
    gb = nbytes / 1e9
    metrics: list[Metric] = []
    for name in server_names:
        server = objstores.SERVERS[SERVERS[name]]().start()
        try:
            server.create_bucket(BUCKET)
            samples: dict[tuple[str, str], list[procs.Sample]] = {}
            lookups: dict[str, list[dict[str, float]]] = {c: [] for c in CLIENTS}
            kinds: dict[str, str] = {}
            for rnd in range(repeats):
                order = CLIENTS if rnd % 2 == 0 else tuple(reversed(CLIENTS))
                for client in order:
                    env = _env(server.env, client)
                    url = server.url(BUCKET, f"{client}/r{rnd}/")
                    kresume = peers.tool("kresume")
                    samples.setdefault(("commit", client), []).append(
                        procs.run([kresume, "commit", str(src), url, "--no-progress"], env=env))
                    dest = work / f"clients-{client}"
                    subprocess.run(["rm", "-rf", str(dest)], check=True)
                    samples.setdefault(("restore", client), []).append(
                        procs.run([kresume, "restore", url, str(dest), "--no-progress"], env=env))
                    got = (dest / src.name).stat().st_size
                    if got != nbytes:
                        raise procs.CommandFailed(f"{client} restore has {got} B, expected {nbytes}")
                    subprocess.run(["rm", "-rf", str(dest)], check=True)
                    samples.setdefault(("latest", client), []).append(procs.run([kresume, "latest", url], env=env))
                    out = subprocess.run([sys.executable, "-c", _LOOKUP, url], env={**_base_env(), **env},
                                         capture_output=True, text=True, check=True, timeout=600)
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    kinds[client] = result.pop("fs")
                    lookups[client].append(result)
                    log(f"  clients {name} round {rnd} {client}: commit {samples[('commit', client)][-1].seconds:.2f} s, "
                        f"restore {samples[('restore', client)][-1].seconds:.2f} s, "
                        f"latest {samples[('latest', client)][-1].seconds:.2f} s ({kinds[client]})")
            same = kinds.get("native") == kinds.get("fsspec")
            note = " (no native path: both are the fsspec backend)" if same else ""
            for op in ("commit", "restore", "latest"):
                cells = []
                for client in CLIENTS:
                    ss = samples[(op, client)]
                    wall = statistics.median(s.seconds for s in ss)
                    cpu = statistics.median(s.cpu_seconds for s in ss)
                    rss = max(s.max_rss for s in ss) / 2**20
                    per_gb = f", {cpu / gb:.2f} CPU-s/GB" if op != "latest" else f", {cpu:.2f} CPU-s"
                    cells.append(f"{client} {wall:.2f} s{per_gb}, {rss:.0f} MiB")
                ratio = statistics.median(s.seconds for s in samples[(op, "fsspec")]) / \
                    statistics.median(s.seconds for s in samples[(op, "native")])
                what = f"{nbytes // 10**6} MB file" if op != "latest" else "one-shot `kresume latest`"
                metrics.append(Metric(f"client cost, {op} {what}, {name}", "; ".join(cells), "–", None,
                                      f"native {ratio:.2f}× faster (fsspec ÷ native wall){note}; median of {repeats}"))
            cells = []
            for client in CLIENTS:
                ls = lookups[client]
                med = {k: statistics.median(x[k] for x in ls) * 1000 for k in ls[0]}
                cells.append(f"{client}: import {med['import_s']:.0f} ms, open {med['open_s']:.0f} ms, "
                             f"first {med['first_s']:.0f} ms, warm p50 {med['warm_p50_s']:.1f} ms")
            metrics.append(Metric(f"client cost, in-process lookup (RunStore.latest), {name}", "; ".join(cells), "–",
                                  None, f"{kinds.get('native')} vs {kinds.get('fsspec')}; medians of {repeats} processes"))
        finally:
            server.stop()
    return metrics


def _base_env() -> dict[str, str]:
    import os

    return dict(os.environ)
