"""A real DCP checkpoint written by two gloo processes into two separate folders (two pods' node-local
emptyDirs), committed through two ``RunStore.commit_part`` calls on real S3 (moto, SeaweedFS) and GCS,
restored into one folder and read back with ``dcp.load`` (issue 14 acceptance).

Also on real servers: rank 1 landing seconds after rank 0; a committer SIGKILLed between its part
and the commit (the other rank's next try finishes it); two ranks' ``commit_part`` finishing at the
same moment, repeated (exactly one manifest, the pointer forward).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from _fixtures.objstores import make_store_base
from kresume.devtools import _procs
from kresume.store import layout, parts
from kresume.store.runstore import RunStore

HERE = Path(__file__).parent
DCP_BACKENDS = ["s3-moto", "s3-seaweedfs", "gcs"]


@pytest.fixture(scope="module")
def dcp_folders(tmp_path_factory) -> dict[int, Path]:
    """``{rank: folder}`` of one real 2-rank ``dcp.save`` (step 100), each rank in its own folder."""
    root = tmp_path_factory.mktemp("dcp")
    port = _procs.free_ports(1)[0]
    procs = [subprocess.Popen([sys.executable, str(HERE / "dcp_rank_writer.py"), str(r), "2", str(port), str(root), "100"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert json.loads(outs[0][0].splitlines()[-1]) == [".metadata", "__0_0.distcp"]
    assert json.loads(outs[1][0].splitlines()[-1]) == ["__1_0.distcp"]  # rank 1 never sees .metadata
    return {r: root / f"rank{r}" / "step_100" for r in range(2)}


@pytest.fixture(params=DCP_BACKENDS)
def dcp_run(request, objstore_pool, tmp_path):
    base = make_store_base(request.param, objstore_pool, tmp_path)
    yield RunStore.open(base.join("ns", f"dcp-{uuid.uuid4().hex[:8]}"), base.options), base
    fs, path = base.fs()
    fs.rm(path, recursive=True)


def _expected_state():
    import torch

    return {f"w{r}": torch.randn(256, 64, generator=torch.Generator().manual_seed(1000 + r)) for r in range(2)} | {
        "shared": torch.arange(32.0)}


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_dcp_across_two_pods_commits_once_and_loads(dcp_run, dcp_folders, tmp_path):
    import torch
    import torch.distributed.checkpoint as dcp

    run, _ = dcp_run
    epoch = layout.new_epoch_token()
    first = run.commit_part(dcp_folders[0], rank=0, world_size=2, epoch=epoch)
    assert not first.committed and first.waiting.missing_ranks == (1,)
    assert run.manifest_ids() == [] and run.latest() is None
    time.sleep(2)  # rank 1's part lands seconds later
    last = run.commit_part(dcp_folders[1], rank=1, world_size=2, epoch=epoch)
    assert last.committed and last.created and last.checkpoint_id == first.checkpoint_id
    m = last.manifest
    assert (m.format, m.step, m.name) == ("dcp", 100, "step_100")
    assert [f.path for f in m.files] == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert run.manifest_ids() == [m.id] and run.read_pointer().checkpoint == m.id
    assert run.try_commit(m.id, world_size=2).manifest == m  # rank 0's next tick: already committed
    assert run.latest().url == run.key_url(layout.data_key(m.id, "step_100", None))
    restored = run.restore(tmp_path / "restore")
    assert sorted(p.name for p in restored.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    want = _expected_state()
    state = {k: torch.zeros_like(v) for k, v in want.items()}
    dcp.load(state, checkpoint_id=str(restored), no_dist=True)
    for k in want:
        assert torch.equal(state[k], want[k]), k
    own = run.restore(tmp_path / "rank1", rank=1)  # only rank 1's shard and the shared .metadata
    assert sorted(p.name for p in own.iterdir()) == [".metadata", "__1_0.distcp"]


_KILLED_COMMITTER = """
import json, os, signal, sys
from kresume.store import partcommit
from kresume.store.runstore import RunStore
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)  # between writing the part and trying the commit
partcommit.try_commit = die
url, options, folder, epoch = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
RunStore.open(url, options).commit_part(folder, rank=0, world_size=2, epoch=epoch)
"""


def test_a_committer_killed_between_its_part_and_the_commit(dcp_run, dcp_folders):
    run, base = dcp_run
    epoch = layout.new_epoch_token()
    waiting = run.commit_part(dcp_folders[1], rank=1, world_size=2, epoch=epoch)
    assert not waiting.committed
    proc = subprocess.run([sys.executable, "-c", _KILLED_COMMITTER, run.url, json.dumps(base.options),
                           str(dcp_folders[0]), epoch], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **base.env})
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert run.manifest_ids() == []  # rank 0 recorded its part, then died
    assert layout.ranks_from_part_names(run._ls_names(layout.parts_prefix(waiting.checkpoint_id))) == [0, 1]
    tick = run.try_commit(waiting.checkpoint_id, world_size=2)  # rank 1's reconcile tick finishes it
    assert tick.committed and tick.created and run.read_pointer().checkpoint == waiting.checkpoint_id


RACE_ROUNDS = 8
"""Rounds of two ranks' ``commit_part`` released at the same moment, per backend."""


def test_two_ranks_finishing_at_the_same_moment_write_one_manifest(store_base, tmp_path, caplog, atomic_preconditions):
    caplog.set_level(logging.DEBUG, logger="kresume.store")
    url = store_base.join("ns", f"mr-race-{uuid.uuid4().hex[:8]}")
    ranks = [RunStore.open(url, store_base.options) for _ in range(2)]
    for rnd in range(RACE_ROUNDS):
        epoch = layout.new_epoch_token()
        folders = []
        for r in range(2):
            f = tmp_path / f"r{rnd}" / f"rank{r}" / f"step_{100 + rnd}"
            f.mkdir(parents=True)
            (f / f"rank_{r}.data").write_bytes(os.urandom(64))
            folders.append(f)
        barrier, outcomes = threading.Barrier(2), [None, None]

        def rank_main(r: int) -> None:
            barrier.wait(timeout=60)
            outcomes[r] = ranks[r].commit_part(folders[r], rank=r, world_size=2, epoch=epoch,
                                               expect=parts.Expects(ranks=2))

        threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert all(o is not None for o in outcomes)
        cid = outcomes[0].checkpoint_id
        for r, o in enumerate(outcomes):  # a rank that saw one part finishes on its next tick
            if not o.committed:
                outcomes[r] = ranks[r].try_commit(cid, world_size=2)
        assert all(o.committed for o in outcomes)
        # Exactly one call wrote the manifest (on moto, whose create-only is not atomic, both may: the bytes
        # are identical either way).
        assert sum(o.created for o in outcomes) == 1 or (not atomic_preconditions and all(o.created for o in outcomes))
        assert outcomes[0].manifest == outcomes[1].manifest
        assert ranks[0].manifest_ids().count(cid) == 1
        assert ranks[0].read_pointer().checkpoint == cid  # forward: each round's step is newer
    both_whole = sum("already committed with identical bytes" in rec.getMessage() for rec in caplog.records)
    print(f"\n[parts race] {store_base.backend}: {RACE_ROUNDS} rounds; both ranks built the manifest in "
          f"{both_whole} of them (identical bytes, one create won)")
