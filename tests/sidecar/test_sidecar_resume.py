"""``resume_from()`` returns the newest checkpoint (issue 11 item 9), on moto S3 with a real sidecar.

A pod admitted with checkpoint A (the injected env) whose sidecar then commits B: a trainer
restarted inside that pod (same env) must resume from B, not redo the work since A. A store that
does not answer falls back to the injected value within resume_from's budget. With world size > 1
every rank gets the same answer: the injected one without torch.distributed, rank 0's with it
(gloo, two processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch

from kresume import contract, resume_from


def _save(path, step: int) -> None:
    torch.save({"w": torch.randn(1000), "global_step": step}, path)


@pytest.fixture
def pod_env(monkeypatch, moto_run, tmp_path):
    """A pod admitted with checkpoint A: env as the webhook injects it; returns (store, A's URL, checkpoint dir)."""
    url, options, env, store = moto_run
    ckdir = tmp_path / "checkpoints"
    ckdir.mkdir()
    a = tmp_path / "admitted" / "epoch=0-step=10.ckpt"
    a.parent.mkdir()
    _save(a, 10)
    manifest = store.commit(a)
    a_url = store.checkpoint_url(manifest)
    for k, v in {**env, contract.ENV_RUN_URL: url, contract.ENV_RESUME_FROM: a_url, contract.ENV_RESUME_STEP: "10",
                 contract.ENV_CHECKPOINT_DIR: str(ckdir), contract.ENV_STORAGE_OPTIONS: json.dumps(options)}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv(contract.ENV_RESUME_PATH, raising=False)
    monkeypatch.delenv("KRESUME_WORLD_SIZE", raising=False)
    return store, a_url, ckdir


def test_restarted_trainer_resumes_from_what_its_sidecar_committed(pod_env, moto_run, start_sidecar, wait_committed):
    store, a_url, ckdir = pod_env
    assert resume_from() == a_url  # nothing newer yet: the injected checkpoint
    sc = start_sidecar(ckdir, moto_run)
    b = ckdir / "epoch=0-step=20.ckpt"
    _save(b, 20)  # the trainer's next save, committed by the pod's sidecar
    (mb,) = wait_committed(store, {b.name})[b.name]
    # The kubelet restarts the trainer container: same env, a new process.
    code = "from kresume import resume_from; print(resume_from()); print(resume_from(local=False))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ)
    assert out.returncode == 0, out.stderr
    local_path, url = out.stdout.split()
    assert local_path == str(b)  # its local copy is still the committed bytes
    assert url == store.checkpoint_url(mb) and "step=20" in url
    b.unlink()  # rotated away locally: the URL then
    assert resume_from() == store.checkpoint_url(mb)
    assert resume_from(local=True) is None  # HF needs a local copy, and there is none
    assert sc.stop()[0] == 0


def test_injected_checkpoint_marked_bad_is_skipped(pod_env):
    store, a_url, _ = pod_env
    a_id = a_url.split("/checkpoints/")[1].split("/")[0]
    store.mark_bad(a_id, "crash loop")
    assert resume_from() is None  # nothing else is valid: a fresh start, never the bad one


def test_store_that_does_not_answer_falls_back_to_the_injected_value_within_the_budget(
        pod_env, moto_run, silent_endpoint, monkeypatch):
    _, a_url, _ = pod_env
    options = {**moto_run[1], "client_kwargs": {"endpoint_url": silent_endpoint}}
    monkeypatch.setenv(contract.ENV_STORAGE_OPTIONS, json.dumps(options))
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = resume_from(timeout=2)
    elapsed = time.monotonic() - t0
    assert got == a_url
    assert elapsed < 2 + 1 + 2, elapsed  # the budget, the join's extra second, slack
    assert any("could not read the run's latest checkpoint" in str(w.message) for w in caught)
    monkeypatch.delenv(contract.ENV_RESUME_FROM)
    with pytest.raises(Exception, match="store unreachable"):
        resume_from(timeout=2)  # nothing injected: the failure is the answer


RANKS = textwrap.dedent("""
    import json, os, sys
    import torch.distributed as dist
    rank = int(sys.argv[1])
    if rank == 1:
        os.environ["KRESUME_RESUME_FROM"] = "s3://elsewhere/ns/run/checkpoints/0000000005-x/e.ckpt"  # must not win
    dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=rank, world_size=2)
    from kresume import resume_from
    print(json.dumps(resume_from(local=False)))
    dist.destroy_process_group()
""")


def test_ranks_agree(pod_env, tmp_path, monkeypatch):
    store, a_url, _ = pod_env
    newer = tmp_path / "epoch=0-step=30.ckpt"
    _save(newer, 30)
    mb = store.commit(newer)
    monkeypatch.setenv("KRESUME_WORLD_SIZE", "2")
    assert resume_from() == a_url  # torch.distributed not initialised: the injected value, no store read
    script = tmp_path / "ranks.py"
    script.write_text(RANKS)
    rendezvous = tmp_path / "rendezvous"
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(rendezvous)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=os.environ) for r in (0, 1)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    answers = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert answers == [store.checkpoint_url(mb)] * 2
