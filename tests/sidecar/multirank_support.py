"""Shared helpers of the multi-rank sidecar tests (``from sidecar import multirank_support as mr``): real
multi-process writers, the rank env the operator injects, part records and log checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from _fixtures.objstores import make_store_base
from kresume import contract
from kresume.devtools import _procs
from kresume.store import layout, partcommit
from kresume.store.parts import PartRecord
from kresume.store.runstore import RunStore

HERE = Path(__file__).parent
LAUNCHER = (sys.executable, str(HERE / "rank_sidecar.py"))


def write_dcp(root: Path, steps: list[int], pause: float = 0.0, world: int = 2) -> list[dict]:
    """A real ``world``-process gloo ``dcp.save`` of ``steps``, rank R into ``root/r<R>``; the ranks' reports."""
    return run_ranks("dcp_ranks.py", str(root / "r{rank}"), ",".join(map(str, steps)), str(pause), world=world,
                     timeout=300)


def rank_run(run: tuple, rank: int, epoch: str, world: int = 2) -> tuple:
    """``run`` with the env the operator injects into rank ``rank``'s sidecar."""
    url, options, env, store = run
    return url, options, {**env, contract.ENV_RANK: str(rank), contract.ENV_WORLD_SIZE: str(world),
                          contract.ENV_EPOCH: epoch}, store


def store_run(backend: str, objstore_pool, tmp_path: Path) -> tuple:
    """``(url, options, env, RunStore)`` of a fresh run on ``backend``'s session server."""
    base = make_store_base(backend, objstore_pool, tmp_path)
    url = base.join("ns", f"mr-{uuid.uuid4().hex[:8]}") + "/"
    return url, dict(base.options), dict(base.env), RunStore.open(url, base.options)


def part_record(store: RunStore, cid: str, rank: int) -> PartRecord:
    """Rank ``rank``'s part record of ``cid`` as stored."""
    return PartRecord.from_json(store.fs.cat(store._path(layout.part_key(cid, rank))))


def msg_starts(prefix: str):
    """A log-record predicate: the message starts with ``prefix``."""
    return lambda r: str(r.get("msg", "")).startswith(prefix)


def no_misleading_verdicts(*sidecars) -> None:
    """Neither rank calls its share corrupt, skips it, or waits for a file only another pod has."""
    for sc in sidecars:
        for rec in sc.logs():
            msg = str(rec.get("msg", ""))
            assert rec.get("level") != "error" and "corrupt" not in msg and "skipping" not in msg, msg
            assert "named by .metadata is missing" not in msg and "no `latest`" not in msg, msg


def load_dcp(folder: Path, step: int) -> None:
    import torch
    import torch.distributed.checkpoint as dcp

    sys.path.insert(0, str(HERE))
    try:
        from dcp_ranks import state
    finally:
        sys.path.remove(str(HERE))
    want = state(0, step, world=2)
    got = {k: torch.zeros_like(v) for k, v in want.items()}
    dcp.load(got, checkpoint_id=str(folder), no_dist=True)
    for k in want:
        assert torch.equal(got[k], want[k]), k


def copy_ranks(src: Path, dst: Path) -> tuple[Path, Path]:
    """Copies of the ranks' folders (mtimes kept: settled at once)."""
    for r in (0, 1):
        shutil.copytree(src / f"r{r}", dst / f"r{r}", copy_function=shutil.copy2)
    return dst / "r0", dst / "r1"




def pending(store: RunStore) -> list[str]:
    """Multi-rank ids with parts and no manifest, newest first."""
    return partcommit.pending_ids(store)


def run_ranks(script: str, *args: str, world: int = 2, timeout: float = 600) -> list[dict]:
    """``script RANK WORLD PORT *args`` for every rank at once (``{rank}`` in an arg is the rank); their reports."""
    port = _procs.free_ports(1)[0]
    procs = [subprocess.Popen([sys.executable, str(HERE / script), *(a.replace("{rank}", str(r)) for a in
                               (str(r), str(world), str(port), *args))], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(world)]
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [json.loads(out.splitlines()[-1]) for out, _ in outs]
