"""kresume's views of runs and live pods (operator/views.py) against the real control plane, seen through what they
decide: the checkpoint an admission falls back to when the store cannot answer (``CheckpointRun.status.latest``)
and the operator's ``/metrics``.

The objects exist before the operator starts (an operator restart's view): its first admission, before or after
its listing is handled, resumes from the run's status; then a run's status changed, a run deleted, a new run and
a live pod added and deleted are followed. The store denies every request (fault proxy in front of moto), so each
admission answers from the views' fallback and says so.
"""

from __future__ import annotations

import urllib.request
import uuid
from pathlib import Path
from typing import Any

import kubernetes.client as k

from _fixtures.faultproxy import FaultPlan
from _fixtures.objstores import SESSION_BUCKET
from _fixtures.operator import RunningOperator, apply, patched, post_review, review, start_operator, wait_for
from kresume import contract
from kresume.devtools import _procs
from kresume.devtools.cluster import ControlPlane


def job_pod(job: str) -> dict[str, Any]:
    """A pod of Job ``job`` as the Job controller sends it at CREATE."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": f"{job}-",
                         "labels": {contract.LABEL_INJECT: "true", "job-name": job, "controller-uid": "u-1"},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": "u-1",
                                              "controller": True}]},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "trainer", "image": "python:3.11"}]}}


def set_run(cp: ControlPlane, ns: str, run: str, url: str, latest: dict[str, Any] | None) -> None:
    apply(cp, {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.RUN_KIND,
               "metadata": {"name": run, "namespace": ns},
               "spec": {"run": run, "policy": "default", "url": url, "source": "job"}})
    with cp.api_client() as api:
        k.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            contract.GROUP, contract.VERSION, ns, contract.RUN_PLURAL, run,
            {"status": {"latest": latest, "checkpoints": 1 if latest else 0}})


def resumed_from(op: RunningOperator, ns: str, job: str) -> str:
    """The ``resumed-from`` annotation of an admitted pod of ``job`` ("none": a fresh start)."""
    rev = review(job_pod(job), ns)
    pod = patched(rev, post_review(op, rev))
    ann = pod["metadata"]["annotations"]
    assert contract.ANN_RESOLVE_ERROR in ann, ann  # the store denied: the answer is the views' fallback
    return str(ann[contract.ANN_RESUMED_FROM])


def metrics(port: int) -> dict[str, float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("kresume_") and " " in line:
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_views_hold_the_objects_present_at_start_and_follow_every_change(
        control_plane: ControlPlane, crds_installed: None, k8s_namespace: str, moto_s3: Any, fault_proxy: Any,
        tmp_path: Path) -> None:
    cp, ns = control_plane, k8s_namespace
    proxy = fault_proxy(moto_s3.endpoint, FaultPlan(every_nth=1, kinds=("denied",)))
    base = f"s3://{SESSION_BUCKET}/views-{uuid.uuid4().hex[:6]}"
    apply(cp, {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.POLICY_KIND,
               "metadata": {"name": "default", "namespace": ns},
               "spec": {"storage": base, "storageOptions": proxy.storage_options(moto_s3.storage_options)}})
    url = f"{base}/{ns}/train/"
    first = {"url": url + "checkpoints/c1/step-50.ckpt", "checkpoint": "c1", "step": 50}
    set_run(cp, ns, "train", url, first)
    # a live pod kresume injected earlier (Pending: no node)
    live = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "train-0", "namespace": ns, "annotations": {contract.ANN_INJECTED: "true"},
                         "labels": {contract.LABEL_INJECT: "true", "job-name": "train"}},
            "spec": {"containers": [{"name": "trainer", "image": "python:3.11"}]}}
    apply(cp, live)

    mport, = _procs.free_ports(1)
    with start_operator(cp, tmp_path, namespaces=[ns], args=["--metrics-port", str(mport)]) as op:
        # The first admission after the start: from the view, or — before its listing is handled — read from the API.
        assert resumed_from(op, ns, "train") == first["url"]
        wait_for("the views to hold the listing", lambda: metrics(mport).get("kresume_views_ready") == 1.0)
        seen = metrics(mport)
        assert seen['kresume_indexed_objects{index="runs"}'] == 1.0, seen
        assert seen['kresume_indexed_objects{index="live_pods"}'] == 1.0, seen
        assert resumed_from(op, ns, "train") == first["url"]

        # modified
        second = {"url": url + "checkpoints/c2/step-90.ckpt", "checkpoint": "c2", "step": 90}
        set_run(cp, ns, "train", url, second)
        wait_for("the new status in the view", lambda: resumed_from(op, ns, "train") == second["url"], interval=0.5)

        # added
        other = f"{base}/{ns}/other/"
        third = {"url": other + "checkpoints/c3/step-7.ckpt", "checkpoint": "c3", "step": 7}
        set_run(cp, ns, "other", other, third)
        wait_for("the new run in the view", lambda: resumed_from(op, ns, "other") == third["url"], interval=0.5)
        assert metrics(mport)['kresume_indexed_objects{index="runs"}'] == 2.0

        # deleted
        cp.kubectl("delete", f"{contract.RUN_PLURAL}.{contract.GROUP}", "train", "-n", ns)
        wait_for("the deleted run gone from the view", lambda: resumed_from(op, ns, "train") == "none", interval=0.5)
        cp.kubectl("delete", "pod", "train-0", "-n", ns, "--grace-period=0", "--force")
        wait_for("the deleted pod gone from the live view",
                 lambda: metrics(mport)['kresume_indexed_objects{index="live_pods"}'] == 0.0)
        assert resumed_from(op, ns, "other") == third["url"]
