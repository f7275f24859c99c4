"""Real multi-process trainers beside two sidecars of one 2-rank run, on moto S3 (issue 14 acceptance):

- DDP where only rank 0 saves (Lightning DDP, HF Trainer): every checkpoint commits on the single-rank path
  with its own id, and nothing ever waits for rank 1, whose folder stays empty;
- DeepSpeed ZeRO-1 (deepspeed 0.19.8 on CPU with gloo), each rank saving into its own folder: each tag commits
  once, the union is DeepSpeed's tag folder with every rank's shard, and two DeepSpeed processes load it
  back from one restored folder.
"""

from __future__ import annotations

import time

import pytest

from kresume.store import layout
from sidecar.multirank_support import msg_starts, no_misleading_verdicts, part_record, rank_run, run_ranks, store_run


def test_ddp_where_only_rank0_saves_commits_every_checkpoint_without_waiting(objstore_pool, tmp_path, start_sidecar):
    run = store_run("s3-moto", objstore_pool, tmp_path)
    store = run[3]
    epoch = layout.new_epoch_token()
    pods = tmp_path / "pods"
    for r in (0, 1):
        (pods / f"r{r}").mkdir(parents=True)
    scs = [start_sidecar(pods / f"r{r}", rank_run(run, r, epoch)) for r in (0, 1)]
    for sc in scs:
        sc.wait_log(msg_starts("watching"), 60)
    reports = run_ranks("ddp_ranks.py", str(pods / "r{rank}"), "60", "10", "0.05")
    saved = reports[0]["saved"]
    assert len(saved) == 6 and reports[1]["saved"] == [] and list((pods / "r1").iterdir()) == []
    end = time.monotonic() + 120
    while {m.name for m in store.list()} != set(saved):
        assert time.monotonic() < end, scs[0].tail()
        time.sleep(0.25)
    manifests = store.list()
    assert len(manifests) == len(saved)
    for m in manifests:  # the single-rank path: a fresh id per commit, no part, no wait for rank 1
        assert not layout.parse_checkpoint_id(m.id).multi_rank and "ranks" not in m.source, m
    assert store._ls_names("parts") == []
    assert store.latest().step == 60
    for rec in scs[0].logs():  # no checkpoint went through parts, none waited for another rank
        assert rec.get("part") is not True and not str(rec.get("msg")).startswith("recorded rank"), rec
    no_misleading_verdicts(*scs)
    rc0, out0 = scs[0].stop()
    rc1, out1 = scs[1].stop()
    assert rc0 == rc1 == 0 and f"committed={len(saved)} " in out0 and "committed=0 " in out1, (out0, out1)


@pytest.mark.slow
def test_deepspeed_zero_across_two_pods(objstore_pool, tmp_path, start_sidecar):
    run = store_run("s3-moto", objstore_pool, tmp_path)
    store = run[3]
    epoch = layout.new_epoch_token()
    pods = tmp_path / "pods"
    for r in (0, 1):
        (pods / f"r{r}").mkdir(parents=True)
    scs = [start_sidecar(pods / f"r{r}", rank_run(run, r, epoch), "--settle-seconds", "1") for r in (0, 1)]
    for sc in scs:
        sc.wait_log(msg_starts("watching"), 60)
    reports = run_ranks("deepspeed_ranks.py", str(pods / "r{rank}"), "3,6")
    assert reports[0]["latest"] == "global_step6" and reports[1]["latest"] is None  # rank 1 never sees `latest`
    assert reports[1]["files"]["global_step6"] == ["zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    end = time.monotonic() + 120
    while sorted(m.name for m in store.list()) != ["global_step3", "global_step6"]:
        assert time.monotonic() < end, scs[0].tail() + scs[1].tail()
        time.sleep(0.25)
    for m in store.list():
        assert m.format == "deepspeed" and m.step == int(m.name.removeprefix("global_step"))
        assert [f.path for f in m.files] == ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                                             "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
        assert set(part_record(store, m.id, 0).expects.files) == {f.path for f in m.files}
    assert store.latest().step == 6 and store.verify(checksums=True) == []
    no_misleading_verdicts(*scs)
    restored = store.restore(tmp_path / "restore")
    loaded = run_ranks("deepspeed_ranks.py", "--load-from", str(restored.parent), restored.name)
    assert [r["global_steps"] for r in loaded] == [6, 6]
    for sc in scs:
        # A rank whose part came first learns of the commit on its next reconcile tick (10-60 s schedule).
        for step in ("global_step3", "global_step6"):
            assert sc.wait_log(msg_starts(f"committed {step} "), 150), sc.tail()
        rc, out = sc.stop()
        assert rc == 0 and "committed=2 " in out, out
