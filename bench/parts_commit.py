"""Multi-rank commit cost (issue 14 acceptance): time from the last rank's part being durable to the
step's commit, and object-store requests per commit, for simulated ranks against local SeaweedFS.

Setup: SeaweedFS ``weed mini`` started the bench's way (:func:`bench.servers.start`); ``W`` simulated
ranks, each its own :class:`~kresume.store.runstore.RunStore` (its own part cache, as in its own
sidecar) sharing one s3fs client in this process, each with a folder ``step_<n>/rank_<r>.data``
(4 KiB) and ``kresume.dev/parts: all-ranks`` expectations (``Expects(ranks=W)``). Per step:

1. ranks ``0..W-2`` call ``commit_part`` concurrently (16 at a time): each uploads its file, HEADs it,
   writes its part and tries the commit (one manifest GET, one LIST: fewer than ``W`` parts, no reads);
2. the last rank calls ``commit_part``: its try reads the ``W-1`` other parts, writes the manifest and
   moves the pointer; **latency** = manifest written − that rank's part written (both at the client,
   when the create-only PUT returned);
3. every other rank's next reconcile tick (``try_commit``) finds the manifest.

Requests are counted at the client with botocore's ``before-call`` event hook (so the run uses the s3fs
client, ``kresume_client=fsspec``; the native client makes the same requests), by operation, and split
into the data path (the ranks' file PUTs and HEADs, which any upload needs) and the commit protocol
(parts, manifest, pointer, listings, ticks). ``requests ≈ a + b·W`` is fitted to read off W = 1,000.

    .venv/bin/python bench/parts_commit.py [--ranks 2,8,64] [--repeats 5] [--quick] [--out bench/results/parts_commit.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import servers  # noqa: E402
from kresume.store import conditional, layout, parts  # noqa: E402
from kresume.store.runstore import RunStore  # noqa: E402


class Counting:
    """Counts S3 operations made by one s3fs client (botocore ``before-call.s3`` hook) and records
    when create-only writes returned (wrapping :func:`kresume.store.conditional.create_if_absent`)."""

    def __init__(self, fs: Any) -> None:
        self.lock = threading.Lock()
        self.ops: Counter[str] = Counter()
        self.created: dict[str, float] = {}
        fs.connect()
        fs.s3.meta.events.register("before-call.s3", self._count)
        self._real = conditional.create_if_absent
        conditional.create_if_absent = self._create  # type: ignore[assignment]

    def _count(self, model: Any = None, **_: Any) -> None:
        with self.lock:
            self.ops[model.name if model is not None else "?"] += 1

    def _create(self, fs: Any, path: str, data: bytes) -> bool:
        done = self._real(fs, path, data)
        if done:
            with self.lock:
                self.created[path] = time.perf_counter()
        return done

    def take(self) -> Counter[str]:
        with self.lock:
            out, self.ops = self.ops, Counter()
            return out

    def close(self) -> None:
        conditional.create_if_absent = self._real  # type: ignore[assignment]


def one_step(url: str, options: dict[str, Any], counting: Counting, world: int, step: int, work: Path) -> dict[str, Any]:
    """Commit one step of ``world`` simulated ranks; return its latency and request counts."""
    epoch = layout.new_epoch_token()
    folders = []
    for r in range(world):
        f = work / f"w{world}-s{step}" / f"rank{r}" / f"step_{step}"
        f.mkdir(parents=True)
        (f / f"rank_{r}.data").write_bytes(bytes([r % 256]) * 4096)
        folders.append(f)
    ranks = [RunStore.open(url, options) for _ in range(world)]
    expect = parts.Expects(ranks=world)
    counting.take()

    def offer(r: int) -> Any:
        return ranks[r].commit_part(folders[r], rank=r, world_size=world, epoch=epoch, expect=expect)

    with ThreadPoolExecutor(16) as pool:
        early = list(pool.map(offer, range(world - 1)))
    assert not any(o.committed for o in early), "committed before the last rank recorded its part"
    before_last = counting.take()
    last = offer(world - 1)
    assert last.committed and last.created, last
    at_last = counting.take()
    cid = last.checkpoint_id
    with ThreadPoolExecutor(16) as pool:
        ticks = list(pool.map(lambda r: ranks[r].try_commit(cid, world_size=world), range(world - 1)))
    assert all(t.committed and not t.created for t in ticks)
    after = counting.take()
    root = ranks[0].root
    part_done = counting.created[f"{root}/{layout.part_key(cid, world - 1)}"]
    manifest_done = counting.created[f"{root}/{layout.manifest_key(cid)}"]
    total = before_last + at_last + after
    data_path = world * 1 + world  # one PutObject and one HeadObject per rank's file
    return {"world": world, "latency_ms": round((manifest_done - part_done) * 1000, 2),
            "requests": sum(total.values()), "protocol_requests": sum(total.values()) - data_path,
            "last_rank_requests": sum(at_last.values()), "by_operation": dict(sorted(total.items()))}


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``a + b·W`` through ``(W, requests)`` points."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


def run(worlds: list[int], repeats: int) -> dict[str, Any]:
    """Start SeaweedFS, measure every world size ``repeats`` times, stop it; the results as a dict."""
    target = servers.start("seaweedfs")
    work = Path(tempfile.mkdtemp(prefix="kresume-bench-parts-"))
    try:
        url = target.url(f"parts-{int(time.time())}/ns/run")
        # Counted on the s3fs client (botocore's event hooks); the native client (obstore, kresume's default
        # for s3://) makes the same protocol requests but offers no hook to count them in-process.
        options = {**target.storage_options, "kresume_client": "fsspec"}
        counting = Counting(RunStore.open(url, options).fs)
        try:
            rows = {}
            for world in worlds:
                steps = [one_step(url, options, counting, world, 100 * world + i, work) for i in range(repeats)]
                rows[world] = {"world": world, "repeats": repeats,
                               "latency_ms_median": round(statistics.median(s["latency_ms"] for s in steps), 2),
                               "latency_ms_max": max(s["latency_ms"] for s in steps),
                               "requests_median": statistics.median(s["requests"] for s in steps),
                               "protocol_requests_median": statistics.median(s["protocol_requests"] for s in steps),
                               "last_rank_requests_median": statistics.median(s["last_rank_requests"] for s in steps),
                               "by_operation": steps[-1]["by_operation"]}
        finally:
            counting.close()
        a, b = fit([(w, r["requests_median"]) for w, r in rows.items()])
        return {"server": "seaweedfs", "rows": list(rows.values()), "fit": {"a": round(a, 1), "b": round(b, 2),
                "requests_at_1000": round(a + b * 1000)}}
    finally:
        target.server.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def markdown(result: dict[str, Any]) -> str:
    """The RESULTS.md table of ``result``."""
    lines = ["| ranks | last part durable → manifest, median (max) | requests per commit (all ranks) | of which commit protocol | last rank's requests | by operation |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ops = ", ".join(f"{k} {v}" for k, v in r["by_operation"].items())
        lines.append(f"| {r['world']} | {r['latency_ms_median']} ms ({r['latency_ms_max']} ms) | {r['requests_median']:g} | "
                     f"{r['protocol_requests_median']:g} | {r['last_rank_requests_median']:g} | {ops} |")
    f = result["fit"]
    lines.append(f"\nFit: requests ≈ {f['a']} + {f['b']} · W → about {f['requests_at_1000']} at 1,000 ranks.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", default="2,8,64", help="comma-separated world sizes")
    ap.add_argument("--repeats", type=int, default=5, help="steps per world size (median)")
    ap.add_argument("--quick", action="store_true", help="2 and 8 ranks, 1 step each (the CI smoke run)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    args = ap.parse_args(argv)
    worlds = [2, 8] if args.quick else [int(w) for w in args.ranks.split(",") if w.strip()]
    result = run(worlds, 1 if args.quick else args.repeats)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
