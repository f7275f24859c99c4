"""The operator as a separate process against a real kube-apiserver v1.20 + controller-manager + moto S3.

Scenario (issue 4): a Job with the opt-in label → its pod is mutated (regular-container sidecar on 1.20,
volume, env, annotations); a checkpoint is committed to moto for that run; the pod is deleted (as a
preemption would) → the Job controller creates a new pod → it carries ``KRESUME_RESUME_FROM`` = the
committed checkpoint's URL, and the ``CheckpointRun`` shows the restart. Then: operator down → pods are
still created, unmutated, within the webhook timeout.

The operator runs as ServiceAccount ``kresume-operator`` (impersonated) with exactly the chart's RBAC
rules, so a missing permission fails here.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from _fixtures.operator import apply, env_of, kget, wait_for
from kresume import contract
from kresume.devtools.cluster import ControlPlane
from kresume.store.runstore import RunStore

BUCKET = "kresume-test"  # the objstores fixture's session bucket


@pytest.fixture
def operator(webhook_operator: Any) -> dict[str, Any]:
    return {"proc": webhook_operator.proc, "port": webhook_operator.port, "op": webhook_operator}


def apiserver_webhook_log(cp: ControlPlane) -> str:
    """kube-apiserver log lines about webhooks (why a call failed), for assertion messages."""
    try:
        lines = Path(cp.logs["kube-apiserver"]).read_text(errors="replace").splitlines()
    except (KeyError, OSError):
        return "(no apiserver log)"
    return "\n".join(line for line in lines if "webhook" in line.lower())[-4000:]


def job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 6, "template": {
            "metadata": {"labels": {contract.LABEL_INJECT: "true"}},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                     "containers": [{"name": "trainer", "image": "python:3.11-slim", "command": ["python", "train.py"]}]},
        }},
    }


def pods_of(cp: ControlPlane, ns: str, job_name: str) -> list[dict[str, Any]]:
    items = kget(cp, "pods", "-n", ns, "-l", f"job-name={job_name}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def test_preempted_job_pod_resumes_from_committed_checkpoint(
    control_plane: ControlPlane, k8s_namespace: str, operator: dict[str, Any], moto_s3: Any, tmp_path: Path
):
    import torch

    cp, ns = control_plane, k8s_namespace
    base = f"s3://{BUCKET}/op-{uuid.uuid4().hex[:8]}"
    opts = moto_s3.storage_options
    creds = {"AWS_ACCESS_KEY_ID": opts["key"], "AWS_SECRET_ACCESS_KEY": opts["secret"]}
    apply(cp,
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": ns}, "stringData": creds},
          {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.POLICY_KIND,
           "metadata": {"name": "default", "namespace": ns},
           "spec": {"storage": base, "credentialsSecret": "s3-creds",
                    "storageOptions": {"client_kwargs": opts["client_kwargs"], "config_kwargs": opts["config_kwargs"]}}})
    run_url = f"{base}/{ns}/train/"
    operator["proc"].wait_serving(cp.kubectl, ns)  # the new policy is indexed and its S3 client warm

    # 1. First pod: mutated, fresh start.
    cp.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(job("train")))
    first = wait_for("the Job's first pod", lambda: pods_of(cp, ns, "train"))[0]
    names = [c["name"] for c in first["spec"]["containers"]]
    assert names == ["trainer", contract.SIDECAR_CONTAINER_NAME], operator["proc"].tail() + "\n" + apiserver_webhook_log(cp)
    sidecar = first["spec"]["containers"][1]
    assert "restartPolicy" not in sidecar  # v1.20: regular-container mode
    assert sidecar["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert {"name": contract.VOLUME_NAME, "emptyDir": {}} in first["spec"]["volumes"]
    env = env_of(first)
    assert env[contract.ENV_RUN_URL] == run_url
    assert env[contract.ENV_CHECKPOINT_DIR] == contract.DEFAULT_CHECKPOINT_DIR
    assert contract.ENV_RESUME_FROM not in env
    ann = first["metadata"]["annotations"]
    assert ann[contract.ANN_RESUMED_FROM] == "none" and ann[contract.ANN_INJECTED] == "legacy"
    assert contract.ANN_RESOLVE_ERROR not in ann

    run = wait_for("CheckpointRun train", lambda: kget(cp, contract.RUN_PLURAL, "-n", ns, "train"))
    assert run["spec"]["url"] == run_url and run["spec"]["source"] == "job"
    wait_for("FreshStart event", lambda: [e for e in kget(cp, "events", "-n", ns)["items"]
                                          if e["reason"] == "FreshStart"
                                          and e["involvedObject"]["name"] == first["metadata"]["name"]])

    # 2. A checkpoint is committed for the run (what the sidecar does).
    path = tmp_path / "epoch=2-step=300.ckpt"
    torch.save({"state_dict": {"w": torch.arange(8.0)}, "global_step": 300, "epoch": 2}, path)
    store = RunStore.open(run_url, opts)
    manifest = store.commit(path)
    committed_url = store.checkpoint_url(manifest)

    # 3. Preemption: the pod is deleted; the Job controller replaces it.
    old = first["metadata"]["name"]
    cp.kubectl("delete", "pod", "-n", ns, old, "--wait=false")
    second = wait_for("the replacement pod",
                      lambda: [p for p in pods_of(cp, ns, "train") if p["metadata"]["name"] != old])[0]
    env = env_of(second)
    assert env[contract.ENV_RESUME_FROM] == committed_url, operator["proc"].tail()
    assert env[contract.ENV_RESUME_STEP] == "300"
    assert second["metadata"]["annotations"][contract.ANN_RESUMED_FROM] == committed_url

    run = wait_for("restart recorded", lambda: (lambda r: r if (r.get("status") or {}).get("restarts", 0) >= 1 else None)(
        kget(cp, contract.RUN_PLURAL, "-n", ns, "train")))
    history = run["status"]["history"]
    assert [h["pod"] for h in history] == [old, second["metadata"]["name"]]
    assert history[-1]["resumedFrom"] == committed_url and history[-1]["step"] == 300
    assert run["status"]["lastPreemption"]["pod"] == old
    wait_for("Resumed event", lambda: [e for e in kget(cp, "events", "-n", ns)["items"]
                                       if e["reason"] == "Resumed" and committed_url in e["message"]
                                       and e["involvedObject"]["name"] == second["metadata"]["name"]])
    # The background refresher writes status.latest for the live run.
    run = wait_for("status.latest", lambda: (lambda r: r if (r.get("status") or {}).get("latest") else None)(
        kget(cp, contract.RUN_PLURAL, "-n", ns, "train")), timeout=30)
    assert run["status"]["latest"]["url"] == committed_url and run["status"]["latest"]["step"] == 300
    assert run["status"]["checkpoints"] == 1

    # 4. Operator down: pods are still created (unmutated) within the webhook timeout.
    operator["proc"].stop()
    t0 = time.monotonic()
    cp.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(job("after-outage")))
    pod = wait_for("a pod while the operator is down", lambda: pods_of(cp, ns, "after-outage"), timeout=30)[0]
    took = time.monotonic() - t0
    assert [c["name"] for c in pod["spec"]["containers"]] == ["trainer"]
    assert contract.ANN_INJECTED not in (pod["metadata"].get("annotations") or {})
    print(f"pod created with the operator down after {took:.2f} s")


def bare_pod(name: str, run: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {contract.LABEL_INJECT: "true"}, "annotations": {contract.ANN_RUN: run}},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "trainer", "image": "python:3.11-slim"}]}}


def test_replacement_of_a_quiet_run_is_answered_from_memory_and_is_never_stale(
    control_plane: ControlPlane, k8s_namespace: str, operator: dict[str, Any], moto_s3: Any, tmp_path: Path
):
    """A run whose pods have all ended is answered from memory (no store call) — but only with what the
    store held after its last pod ended: a checkpoint committed during a pod's life is never missed."""
    import torch

    cp, ns, proc = control_plane, k8s_namespace, operator["proc"]
    base = f"s3://{BUCKET}/quiet-{uuid.uuid4().hex[:8]}"
    opts = moto_s3.storage_options
    apply(cp,
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": ns},
           "stringData": {"AWS_ACCESS_KEY_ID": opts["key"], "AWS_SECRET_ACCESS_KEY": opts["secret"]}},
          {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.POLICY_KIND,
           "metadata": {"name": "default", "namespace": ns},
           "spec": {"storage": base, "credentialsSecret": "s3-creds",
                    "storageOptions": {"client_kwargs": opts["client_kwargs"], "config_kwargs": opts["config_kwargs"]}}})
    proc.wait_serving(cp.kubectl, ns)
    store = RunStore.open(f"{base}/{ns}/quiet/", opts)

    def commit(step: int) -> str:
        path = tmp_path / f"epoch=0-step={step}.ckpt"
        torch.save({"w": torch.zeros(4), "global_step": step}, path)
        return store.checkpoint_url(store.commit(path))

    def create(name: str) -> dict[str, Any]:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(bare_pod(name, "quiet")))
        return kget(cp, "pod", "-n", ns, name)

    def gone(name: str) -> None:
        cp.kubectl("delete", "pod", "-n", ns, name, "--wait=true")

    create("quiet-1")
    first = commit(10)  # committed while quiet-1 lives (its sidecar would do this)
    wait_for("the refresher to cache step 10 while the pod lives", lambda: (
        ((kget(cp, contract.RUN_PLURAL, "-n", ns, "quiet").get("status") or {}).get("latest") or {}).get("url") == first),
        timeout=30)
    gone("quiet-1")
    time.sleep(3)  # the operator sees the pod gone and reads the store once
    second_pod = create("quiet-2")
    assert env_of(second_pod)[contract.ENV_RESUME_FROM] == first
    assert operator["op"].admissions(ns, "quiet")[-1][1] == "memory", proc.tail()

    newest = commit(20)  # while quiet-2 lives: the cached step-10 answer is now stale
    gone("quiet-2")
    third = create("quiet-3")  # right away: before or after the operator's refresh, never stale
    assert env_of(third)[contract.ENV_RESUME_FROM] == newest, proc.tail()
    gone("quiet-3")
    time.sleep(3)
    fourth = create("quiet-4")
    assert env_of(fourth)[contract.ENV_RESUME_FROM] == newest
    assert operator["op"].admissions(ns, "quiet")[-1][1] == "memory", proc.tail()
