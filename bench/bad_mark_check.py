"""What the bad-mark read adds to an answer from memory (issue 11 item 3), against a local S3 server.

Before the operator answers an admission of a quiet run from memory it reads ``bad/<id>.json`` of the checkpoint
it is about to inject (one GET; a missing key is one request). This times that read alone
(``RunStore.is_bad``) and a whole ``Resolver.resolve`` answered from memory, ``--n`` times each, in-process
against moto or SeaweedFS started by ``kresume.devtools.objstores``.

    .venv/bin/python bench/bad_mark_check.py [--server s3-moto|s3-seaweedfs] [--n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from kresume.devtools import objstores
from kresume.operator.activity import Activity
from kresume.operator.resolution import SOURCE_MEMORY, Resolver
from kresume.operator.settings import ResolutionSettings
from kresume.store.runstore import RunStore


def percentiles(seconds: list[float]) -> dict[str, float]:
    xs = sorted(seconds)
    return {"n": len(xs), "p50_ms": round(xs[len(xs) // 2] * 1000, 2), "p99_ms": round(xs[int(len(xs) * 0.99)] * 1000, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default="s3-moto", choices=["s3-moto", "s3-seaweedfs"])
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    import torch

    server = objstores.SERVERS[args.server]().start()
    try:
        server.create_bucket("bench-bad-mark")
        opts = server.storage_options
        url = "s3://bench-bad-mark/base/ns/run/"
        store = RunStore.open(url, opts)
        path = Path(tempfile.mkdtemp(prefix="kresume-bench-")) / "epoch=0-step=1.ckpt"
        torch.save({"w": torch.zeros(4)}, path)
        checkpoint = store.commit(path).id
        reads = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            store.is_bad(checkpoint)
            reads.append(time.perf_counter() - t0)
        activity = Activity()
        activity.observed(url, "gone", {}, deleted=True)  # the run's last pod ended: quiet
        resolver = Resolver(ResolutionSettings(), activity=activity)

        async def answers() -> list[float]:
            await resolver.refresh(url, opts)
            out = []
            for _ in range(args.n):
                t0 = time.perf_counter()
                outcome = await resolver.resolve(url, opts)
                out.append(time.perf_counter() - t0)
                assert outcome.source == SOURCE_MEMORY
            return out

        try:
            memory = asyncio.run(answers())
        finally:
            resolver.close()
        print(json.dumps({"server": args.server, "bad_mark_read": percentiles(reads),
                          "memory_answer_with_the_read": percentiles(memory)}, indent=2))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
