"""A bad mark is seen at once (issue 11 item 3): ``mark-bad`` followed within 100 ms by a pod creation never
injects the bad checkpoint — whether the admission would be answered from memory (a quiet run) or by the store.

Real control plane, the operator process behind the chart's webhook, moto S3. Each repetition commits a new
checkpoint while a pod of the run lives (as its sidecar would), ends that pod, marks the new checkpoint bad with
``RunStore.mark_bad`` (what ``kresume mark-bad`` calls) and creates the next pod through the API server at
once. Even repetitions wait first until a dry-run admission is answered from memory with the checkpoint about to
be marked (the path that used to be up to 30 s stale); odd ones create the pod while the run is still busy.
``KRESUME_MARKBAD_REPEATS`` (default 20) sets the count.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes.client as k

from _fixtures.objstores import SESSION_BUCKET
from _fixtures.operator import RunningOperator, env_of, s3_policy, wait_for
from kresume import contract
from kresume.devtools.cluster import ControlPlane
from kresume.store.runstore import RunStore

REPEATS = int(os.environ.get("KRESUME_MARKBAD_REPEATS", "20"))


def pod(name: str, run: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {contract.LABEL_INJECT: "true"}, "annotations": {contract.ANN_RUN: run}},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "trainer", "image": "python:3.11-slim"}]}}


def test_mark_bad_then_a_new_pod_at_once_never_injects_the_bad_checkpoint(
    control_plane: ControlPlane, k8s_namespace: str, webhook_operator: RunningOperator, moto_s3: Any, tmp_path: Path
):
    import torch

    cp, ns, op = control_plane, k8s_namespace, webhook_operator
    base = f"s3://{SESSION_BUCKET}/markbad-{uuid.uuid4().hex[:8]}"
    s3_policy(cp, ns, base, moto_s3)
    op.proc.wait_serving(cp.kubectl, ns)  # the policy is indexed and its S3 client warm
    store = RunStore.open(f"{base}/{ns}/mb/", moto_s3.storage_options)

    def commit(step: int) -> tuple[str, str]:
        path = tmp_path / f"epoch=0-step={step}.ckpt"
        torch.save({"w": torch.zeros(4), "global_step": step}, path)
        manifest = store.commit(path)
        return manifest.id, store.checkpoint_url(manifest)

    def memory_answer(expect: str) -> bool:
        res = cp.kubectl("create", "--dry-run=server", "-n", ns, "-o", "json", "-f", "-",
                         input=json.dumps(pod("mb-dry", "mb")), check=False)
        got = env_of(json.loads(res.stdout)).get(contract.ENV_RESUME_FROM) if res.returncode == 0 else None
        return got == expect and op.admissions(ns, "mb")[-1][1] == "memory"

    _, good_url = commit(0)
    sources, gaps = [], []
    with cp.api_client() as api:
        core = k.CoreV1Api(api)
        live = core.create_namespaced_pod(ns, pod("mb-0", "mb"))
        for i in range(1, REPEATS + 1):
            bad_id, bad_url = commit(i * 10)  # while a pod of the run lives, as its sidecar would
            core.delete_namespaced_pod(live.metadata.name, ns, grace_period_seconds=0)
            if i % 2 == 0:
                wait_for(f"repetition {i}: an answer from memory naming the new checkpoint",
                         lambda: memory_answer(bad_url), timeout=60, interval=0.3)
            store.mark_bad(bad_id, f"test repetition {i}")
            marked = time.monotonic()
            body = pod(f"mb-{i}", "mb")
            sent = time.monotonic()
            live = core.create_namespaced_pod(ns, body)
            gaps.append((sent - marked, time.monotonic() - sent))
            injected = env_of(k.ApiClient().sanitize_for_serialization(live)).get(contract.ENV_RESUME_FROM)
            sources.append(op.admissions(ns, "mb")[-1][1])
            assert injected != bad_url, f"repetition {i}: injected {bad_id}, marked bad just before\n{op.tail()}"
            assert injected == good_url, f"repetition {i}: {injected} is not the newest good {good_url}"
    print(f"{REPEATS} repetitions; mark-bad returned -> create sent: max {max(g[0] for g in gaps) * 1000:.2f} ms; "
          f"create round trip (webhook included): max {max(g[1] for g in gaps) * 1000:.0f} ms; "
          f"admissions answered by: {sources}")
    # Where memory answered after the mark, it named the good checkpoint (asserted above): the mark was read.
