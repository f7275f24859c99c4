"""Crash-loop fallback end to end (issue 11 item 2): a checkpoint that passes every check but does not load.

Real control plane, the operator process behind the chart's webhook, moto S3 and the local node agent running
the pods as processes. The run has checkpoint A (step 10, loads) and, newer, B (step 20: a valid zip whose
``data.pkl`` is garbage, so ``torch.load`` raises). A Job's trainer really ``torch.load``s the injected URL through
fsspec and exits 1 when that fails. With the default policy (``crashLoop.failures: 2``) the Job must complete
after exactly 2 failed pods, both injected B, the third resumed from A, B marked bad in the store with the
operator's reason, and Warning Events on the pod and on the CheckpointRun saying why.
"""

from __future__ import annotations

import json
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from _fixtures.objstores import SESSION_BUCKET
from _fixtures.operator import RunningOperator, env_of, kget, s3_policy, wait_for
from kresume import contract
from kresume.devtools.cluster import ControlPlane
from kresume.devtools.node import NodeAgent, NodeSettings
from kresume.store.runstore import RunStore

pytestmark = pytest.mark.slow

TRAINER = """
import os, sys, fsspec, torch
import kresume.preemption
kresume.preemption.hold_for_life()  # so the legacy-mode sidecar leaves once this process ends (the pod can end)
url = os.environ.get("KRESUME_RESUME_FROM")
if url:
    with fsspec.open(url, "rb") as f:
        state = torch.load(f, weights_only=True)
    print("RESUMED", url, state["global_step"], flush=True)
else:
    print("FRESH", flush=True)
"""


def corrupt_copy(good: Path, bad: Path) -> None:
    """A torch zip with every entry intact except ``data.pkl``, replaced by garbage: the zip stays valid."""
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, b"\x80\x02garbage that is no pickle" if info.filename.endswith("/data.pkl") else data)
    with zipfile.ZipFile(bad) as z:
        assert z.testzip() is None


@pytest.fixture
def node(control_plane: ControlPlane, k8s_namespace: str, tmp_path: Path) -> Iterator[NodeAgent]:
    api = control_plane.api_client()
    settings = NodeSettings(node_name=f"dev-{uuid.uuid4().hex[:8]}", namespaces=(k8s_namespace,),
                            work_dir=tmp_path / "node", log_dir=tmp_path / "node-logs", resync_seconds=2)
    with NodeAgent(api, settings) as agent:
        yield agent
    api.close()


def test_corrupt_checkpoint_is_marked_bad_after_two_failed_pods_and_the_job_completes_from_the_previous(
    control_plane: ControlPlane, k8s_namespace: str, webhook_operator: RunningOperator, moto_s3: Any,
    node: NodeAgent, tmp_path: Path,
):
    import torch

    cp, ns, op = control_plane, k8s_namespace, webhook_operator
    base = f"s3://{SESSION_BUCKET}/crashloop-{uuid.uuid4().hex[:8]}"
    s3_policy(cp, ns, base, moto_s3, extra={"sidecar": {"extraEnv": [{"name": "KRESUME_METRICS_PORT", "value": "0"}],
                                                      "graceSeconds": 3}})
    op.proc.wait_serving(cp.kubectl, ns)
    store = RunStore.open(f"{base}/{ns}/train/", moto_s3.storage_options)
    good = tmp_path / "epoch=0-step=10.ckpt"
    torch.save({"w": torch.arange(4.0), "global_step": 10}, good)
    a = store.commit(good)
    bad = tmp_path / "epoch=1-step=20.ckpt"
    torch.save({"w": torch.arange(4.0), "global_step": 20}, bad)
    corrupt_copy(Path(str(bad)), tmp_path / "corrupt.ckpt")
    (tmp_path / "corrupt.ckpt").replace(bad)
    b = store.commit(bad)
    a_url, b_url = store.checkpoint_url(a), store.checkpoint_url(b)
    assert store.latest().checkpoint_id == b.id  # B passes every check the store makes

    env = [{"name": k, "value": v} for k, v in moto_s3.env.items()]
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train", "namespace": ns},
           "spec": {"backoffLimit": 5, "template": {
               "metadata": {"labels": {contract.LABEL_INJECT: "true"}},
               "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                        "containers": [{"name": "trainer", "image": "trainer:local", "env": env,
                                        "command": [sys.executable, "-c", TRAINER]}]}}}}
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(job))

    def finished() -> dict[str, Any] | None:
        status = kget(cp, "job", "-n", ns, "train").get("status") or {}
        return status if status.get("succeeded") or status.get("failed", 0) > 3 else None

    status = wait_for("the Job to finish", finished, timeout=420, interval=1.0)
    pods = sorted(kget(cp, "pods", "-n", ns, "-l", "job-name=train")["items"],
                  key=lambda p: p["metadata"]["creationTimestamp"])
    summary = [(p["metadata"]["name"], p["status"].get("phase"), env_of(p).get(contract.ENV_RESUME_FROM))
               for p in pods]
    print("pods:", json.dumps(summary, indent=1))
    assert status.get("succeeded") == 1 and status.get("failed") == 2, (status, summary, op.tail())
    assert [s[1:] for s in summary] == [("Failed", b_url), ("Failed", b_url), ("Succeeded", a_url)], summary
    log = node.find(ns, pods[-1]["metadata"]["name"]).log_path("trainer").read_text()
    assert f"RESUMED {a_url} 10" in log, log

    assert store.is_bad(b.id) and store.latest().checkpoint_id == a.id
    mark = json.loads(store.fs.cat_file(f"{store.root}/bad/{b.id}.json"))
    assert mark["reason"].startswith("kresume operator: 2 attempts in a row failed after resuming from " + b.id)
    run = kget(cp, contract.RUN_PLURAL, "-n", ns, "train")
    assert run["status"]["lastFallback"]["checkpoint"] == b.id and run["status"]["lastFallback"]["next"] == a.id
    events = wait_for("the CheckpointMarkedBad events", lambda: (lambda evs: evs if len(evs) >= 2 else None)(
        [e for e in kget(cp, "events", "-n", ns)["items"] if e["reason"] == "CheckpointMarkedBad"]), timeout=30)
    kinds = {e["involvedObject"]["kind"]: e for e in events}
    assert set(kinds) == {"Pod", contract.RUN_KIND}, events
    assert kinds["Pod"]["involvedObject"]["name"] == pods[1]["metadata"]["name"]
    assert a_url in kinds["Pod"]["message"] and "marked it bad" in kinds["Pod"]["message"]
    counted = [e for e in kget(cp, "events", "-n", ns)["items"] if e["reason"] == "CheckpointFailureCounted"]
    assert [e["involvedObject"]["name"] for e in counted] == [pods[0]["metadata"]["name"]], counted
