"""A rank's DCP shard written just before the trainer exits is committed as its part in the grace period.

DCP shards have no footer: a rank without ``.metadata`` judges its shard complete after the settle window (quiet
time). After SIGTERM, once the trainer's presence lock says it has exited, nothing writes any more, so the sidecar
must not drop a shard that is merely younger than the window (seen in ``kresume demo --ranks 2``: the final save of
a graceful preemption was lost on the rank whose sidecar left first). Real sidecar process, real DCP files from two
gloo processes, moto S3.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from kresume.store import layout
from sidecar.multirank_support import copy_ranks, msg_starts, pending, rank_run, store_run, write_dcp

TRAINER = ("import sys\nfrom kresume.preemption import Presence\np = Presence(sys.argv[1])\nassert p.acquire()\n"
           "print('locked', flush=True)\nsys.stdin.read()\n")


def test_a_fresh_shard_is_recorded_once_the_trainer_has_exited(objstore_pool, tmp_path: Path, start_sidecar):
    src = tmp_path / "src"
    write_dcp(src, [30])
    _, w1 = copy_ranks(src, tmp_path / "pods")
    run = store_run("s3-moto", objstore_pool, tmp_path)
    store = run[3]
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER, str(w1)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)  # fmt: skip
    assert trainer.stdout.readline().strip() == "locked"
    # a settle window far longer than the test: only the trainer's exit can make the shard count as settled
    sc = start_sidecar(w1, rank_run(run, 1, layout.new_epoch_token()), "--settle-seconds", "120")
    sc.wait_log(msg_starts("watching"), 60)
    now = time.time()
    for f in (w1 / "step_30").iterdir():
        os.utime(f, (now, now))  # just written, as at the end of dcp.save
    sc.wait_log(lambda r: "waiting until unmodified" in str(r.get("msg")), 30)
    sc.proc.send_signal(15)  # the pod is deleted: both containers get SIGTERM; the trainer then exits
    sc.wait_log(lambda r: "waiting for its final checkpoint" in str(r.get("msg")), 30)
    trainer.stdin.close()
    assert trainer.wait(30) == 0
    assert sc.proc.wait(60) == 0, sc.tail()  # it leaves by itself once the part is recorded (no second signal)
    assert any(str(r.get("msg", "")).startswith("recorded rank 1's part of step_30") for r in sc.logs()), sc.tail()
    (cid,) = pending(store)  # rank 0 never ran here: recorded, not committed
    assert layout.ranks_from_part_names(store._ls_names(layout.parts_prefix(cid))) == [1]
    assert store.manifest_ids() == []
