"""AdmissionReview bodies POSTed over loopback HTTPS to the operator's own webhook server, as kube-apiserver calls it.

One operator process for the module (``python -m kresume.operator`` for namespaces ``adm-*``, started without TLS
files so it serves its own development certificate, which the client verifies like the API server would); each
test gets a fresh namespace with real ``CheckpointPolicy``/``Secret``/``CheckpointRun`` objects on the session's
control plane and real stores (``file://``, SeaweedFS with auth on, moto behind the fault proxy, a socket that
never answers). No kopf internals: the request takes the path ``POST /inject-pod`` a cluster uses.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client as k
import pytest

from _fixtures.faultproxy import FaultPlan
from _fixtures.objstores import SESSION_BUCKET
from _fixtures.operator import (
    RunningOperator, apply, env_of, kget, patched, post_review, review, start_operator, wait_for,
)
from kresume import contract
from kresume.devtools.cluster import ControlPlane
from kresume.injection import validity
from kresume.store.runstore import RunStore


@pytest.fixture(scope="module")
def op(control_plane: ControlPlane, crds_installed: None, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[RunningOperator]:
    with start_operator(control_plane, tmp_path_factory.mktemp("adm-op"), namespaces=["adm-*"], dev_tls=True,
                        args=["--refresh-interval", "2"]) as running:
        yield running


@pytest.fixture
def ns(control_plane: ControlPlane) -> Iterator[str]:
    name = f"adm-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def job_pod(job: str = "train", **annotations: str) -> dict[str, Any]:
    """A pod as the Job controller sends it at CREATE: generateName, no name, no namespace."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": f"{job}-",
            "labels": {contract.LABEL_INJECT: "true", "job-name": job, "controller-uid": "u-1"},
            "annotations": dict(annotations),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": "u-1",
                                 "controller": True}],
        },
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "trainer", "image": "python:3.11", "command": ["python", "train.py"]}]},
    }


def policy(cp: ControlPlane, ns: str, spec: dict[str, Any], name: str = "default") -> None:
    apply(cp, {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.POLICY_KIND,
               "metadata": {"name": name, "namespace": ns}, "spec": spec})


def admit(op: RunningOperator, pod: dict[str, Any], ns: str, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """POST the review of ``pod``; returns (the pod as the API server would store it, the response)."""
    rev = review(pod, ns, **kw)
    answer = post_review(op, rev)
    return patched(rev, answer), answer["response"]


@pytest.fixture
def file_store(tmp_path: Path) -> str:
    return f"file://{tmp_path}/store"


@pytest.fixture
def ckpt_file(tmp_path: Path) -> Path:
    import torch

    path = tmp_path / "epoch=0-step=7.ckpt"
    torch.save({"w": torch.zeros(4), "global_step": 7}, path)
    return path


def test_fresh_start_gets_sidecar_volume_env_and_annotations(control_plane, op, ns, file_store):
    policy(control_plane, ns, {"storage": file_store})
    pod, resp = admit(op, job_pod(), ns)
    ann = pod["metadata"]["annotations"]
    assert ann[contract.ANN_RESUMED_FROM] == "none"
    assert ann[contract.ANN_INJECTED] == "legacy"  # v1.20 control plane: a regular-container sidecar
    assert contract.ANN_RESOLVE_ERROR not in ann
    assert [c["name"] for c in pod["spec"]["containers"]] == ["trainer", contract.SIDECAR_CONTAINER_NAME]
    env = env_of(pod)
    assert env[contract.ENV_RUN_URL] == f"{file_store}/{ns}/train/"
    assert contract.ENV_RESUME_FROM not in env
    assert any(v["name"] == contract.VOLUME_NAME for v in pod["spec"]["volumes"])
    assert op.admissions(ns, "train")[-1] == ("injected", "store")


def test_committed_checkpoint_is_injected(control_plane, op, ns, file_store, ckpt_file):
    url = f"{file_store}/{ns}/train/"
    store = RunStore.open(url)
    committed = store.checkpoint_url(store.commit(ckpt_file))
    policy(control_plane, ns, {"storage": file_store})
    pod, _ = admit(op, job_pod(), ns)
    env = env_of(pod)
    assert env[contract.ENV_RESUME_FROM] == committed
    assert env[contract.ENV_RESUME_STEP] == "7"
    assert pod["metadata"]["annotations"][contract.ANN_RESUMED_STEP] == "7"


def test_native_mode_puts_sidecar_in_init_containers(control_plane, crds_installed, tmp_path, file_store):
    ns = f"admn-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", ns)
    try:
        with start_operator(control_plane, tmp_path, namespaces=[ns], args=["--native-sidecar", "always"]) as native:
            policy(control_plane, ns, {"storage": file_store})
            pod, _ = admit(native, job_pod(), ns)
    finally:
        control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    init = pod["spec"]["initContainers"]
    assert [c["name"] for c in init] == [contract.SIDECAR_CONTAINER_NAME]
    assert init[0]["restartPolicy"] == "Always"
    assert [c["name"] for c in pod["spec"]["containers"]] == ["trainer"]
    assert pod["metadata"]["annotations"][contract.ANN_INJECTED] == "native"


def test_policy_named_by_the_annotation_is_used_right_after_it_is_created(control_plane, op, ns, file_store):
    policy(control_plane, ns, {"storage": file_store + "/fast"}, name="fast")
    pod, _ = admit(op, job_pod(**{contract.ANN_POLICY: "fast"}), ns)  # not indexed yet: read from the API
    assert env_of(pod)[contract.ENV_RUN_URL] == f"{file_store}/fast/{ns}/train/"


@pytest.mark.parametrize("form", ["{other}/default", "../default", "Default", "a" * 254])
def test_policy_in_another_namespace_can_never_be_named(control_plane, op, ns, file_store, form):
    other = f"adm-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", other)
    try:
        policy(control_plane, other, {"storage": file_store})
        pod, resp = admit(op, job_pod(**{contract.ANN_POLICY: form.format(other=other)}), ns)
    finally:
        control_plane.kubectl("delete", "namespace", other, "--wait=false", check=False)
    assert "patch" not in resp and contract.ANN_INJECTED not in pod["metadata"]["annotations"]
    assert any(contract.ANN_POLICY in w and "own namespace" in w for w in resp["warnings"]), resp


def test_missing_policy_admits_unchanged_with_a_warning(op, ns):
    _, resp = admit(op, job_pod(), ns)
    assert "patch" not in resp
    assert any("no CheckpointPolicy 'default'" in w for w in resp["warnings"]), resp


def test_bare_pod_without_run_is_admitted_unchanged(control_plane, op, ns, file_store):
    policy(control_plane, ns, {"storage": file_store})
    pod = job_pod()
    pod["metadata"] = {"name": "lonely", "labels": {contract.LABEL_INJECT: "true"}}
    _, resp = admit(op, pod, ns)
    assert "patch" not in resp
    assert any("no run" in w and contract.ANN_RUN in w for w in resp["warnings"]), resp


@pytest.mark.parametrize("run", ["../escape", "s3://x", "a/b", "UPPER"])
def test_unsafe_run_names_are_refused(control_plane, op, ns, file_store, run):
    policy(control_plane, ns, {"storage": file_store})
    _, resp = admit(op, job_pod(**{contract.ANN_RUN: run}), ns)
    assert "patch" not in resp
    assert any(contract.ANN_RUN in w for w in resp["warnings"]), resp


def test_bad_annotation_admits_unchanged(control_plane, op, ns, file_store):
    policy(control_plane, ns, {"storage": file_store})
    _, resp = admit(op, job_pod(**{contract.ANN_CHECKPOINT_DIR: "relative/dir"}), ns)
    assert "patch" not in resp
    assert any(contract.ANN_CHECKPOINT_DIR in w for w in resp["warnings"]), resp


def test_user_env_wins_and_leaves_a_warning(control_plane, op, ns, file_store):
    policy(control_plane, ns, {"storage": file_store})
    pod = job_pod()
    pod["spec"]["containers"][0]["env"] = [{"name": contract.ENV_CHECKPOINT_DIR, "value": "/mine"}]
    out, resp = admit(op, pod, ns)
    assert env_of(out)[contract.ENV_CHECKPOINT_DIR] == "/mine"
    assert any(f"sets {contract.ENV_CHECKPOINT_DIR} itself" in w for w in resp["warnings"]), resp


def test_malformed_pod_is_never_blocked(control_plane, op, ns, file_store):
    """A body kresume cannot make sense of (a client that bypasses typed decoding) is admitted, not denied."""
    policy(control_plane, ns, {"storage": file_store})
    pod = job_pod()
    pod["spec"]["containers"] = "oops"
    _, resp = admit(op, pod, ns)
    assert resp["allowed"] is True and "patch" not in resp


def test_injection_that_would_break_the_annotation_limit_admits_the_pod_unchanged(control_plane, op, ns, file_store):
    policy(control_plane, ns, {"storage": file_store})
    pod = job_pod()
    room = validity.ANNOTATIONS_MAX_BYTES - validity.annotation_bytes(pod["metadata"]["annotations"])
    pod["metadata"]["annotations"]["notes"] = "x" * (room - len("notes") - 40)  # kresume's would tip it over
    _, resp = admit(op, pod, ns)
    assert resp["allowed"] is True and "patch" not in resp
    assert any("would make the API server refuse the pod" in w and "shorten the pod's own annotations" in w
               for w in resp["warnings"]), resp
    assert op.admissions(ns, "train")[-1][0] == "skipped"


def test_reinjecting_an_injected_pod_changes_nothing(control_plane, op, ns, file_store):
    policy(control_plane, ns, {"storage": file_store})
    once, _ = admit(op, job_pod(), ns)
    twice, resp = admit(op, once, ns)
    assert "patch" not in resp and twice == once


def test_store_error_without_any_known_value_starts_fresh_with_the_error(control_plane, op, ns, moto_s3,
                                                                          fault_proxy):
    proxy = fault_proxy(moto_s3.endpoint, FaultPlan(every_nth=1, kinds=("denied",)))
    opts = proxy.storage_options(moto_s3.storage_options)
    policy(control_plane, ns, {"storage": f"s3://{SESSION_BUCKET}/denied-{uuid.uuid4().hex[:6]}",
                               "storageOptions": opts})
    pod, resp = admit(op, job_pod(), ns)
    ann = pod["metadata"]["annotations"]
    assert ann[contract.ANN_RESUMED_FROM] == "none"
    assert ann[contract.ANN_RESOLVE_ERROR].startswith("PermissionDenied") and "Access Denied" in ann[
        contract.ANN_RESOLVE_ERROR], ann
    assert any("resume checkpoint from none" in w for w in resp["warnings"]), resp


def test_credentials_secret_is_how_the_operator_reads_the_store(control_plane, op, ns, seaweedfs_s3, ckpt_file):
    """SeaweedFS checks signatures: the policy carries no keys, so the lookup only works with the Secret's."""
    base = seaweedfs_s3.url(SESSION_BUCKET, f"creds-{uuid.uuid4().hex[:6]}")
    full = seaweedfs_s3.storage_options
    store = RunStore.open(f"{base}/{ns}/train/", full)
    committed = store.checkpoint_url(store.commit(ckpt_file))
    keyless = {k: v for k, v in full.items() if k not in ("key", "secret")}
    apply(control_plane, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": ns},
                          "stringData": {"AWS_ACCESS_KEY_ID": full["key"], "AWS_SECRET_ACCESS_KEY": full["secret"]}},
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wrong-creds", "namespace": ns},
           "stringData": {"AWS_ACCESS_KEY_ID": full["key"], "AWS_SECRET_ACCESS_KEY": "not-the-secret"}})
    policy(control_plane, ns, {"storage": base, "storageOptions": keyless, "credentialsSecret": "s3-creds"})
    policy(control_plane, ns, {"storage": base, "storageOptions": keyless, "credentialsSecret": "wrong-creds"},
           name="wrong")

    def answered(pod: dict[str, Any]) -> dict[str, Any] | None:  # not a timeout of a cold client on a busy machine
        out, _ = admit(op, pod, ns)
        return out if not out["metadata"]["annotations"].get(contract.ANN_RESOLVE_ERROR, "").startswith("timeout") \
            else None

    good = wait_for("an answer in budget", lambda: answered(job_pod()), timeout=60, interval=1.0)
    assert env_of(good)[contract.ENV_RESUME_FROM] == committed
    assert contract.ANN_RESOLVE_ERROR not in good["metadata"]["annotations"]
    bad = wait_for("an answer in budget", lambda: answered(job_pod("other", **{contract.ANN_POLICY: "wrong"})),
                   timeout=60, interval=1.0)
    assert bad["metadata"]["annotations"][contract.ANN_RESUMED_FROM] == "none"
    assert "PermissionDenied" in bad["metadata"]["annotations"][contract.ANN_RESOLVE_ERROR]


def test_quiet_run_is_answered_from_memory_until_a_real_admission(control_plane, op, ns, file_store, ckpt_file):
    """A run whose only pod is gone is answered from memory; dry runs (kubectl --dry-run=server) keep it quiet,
    a real admission makes it busy again (its pod will run a sidecar)."""
    url = f"{file_store}/{ns}/train/"
    store = RunStore.open(url)
    committed = store.checkpoint_url(store.commit(ckpt_file))
    policy(control_plane, ns, {"storage": file_store})
    first, _ = admit(op, job_pod(), ns)
    first["metadata"]["name"] = "train-first"
    apply(control_plane, {**first, "metadata": {**first["metadata"], "namespace": ns}})  # the pod the review admitted
    wait_for("the operator to see the pod", lambda: kget(control_plane, contract.RUN_PLURAL, "-n", ns, "train"))
    # Unbound, so gone at once (the garbage collector may be first: its owner Job does not exist).
    control_plane.kubectl("delete", "pod", "-n", ns, "train-first", "--wait=true", "--ignore-not-found")

    def answered_from_memory() -> bool:
        pod, _ = admit(op, job_pod(), ns, dry_run=True)
        assert env_of(pod)[contract.ENV_RESUME_FROM] == committed
        return op.admissions(ns, "train")[-1][1] == "memory"

    wait_for("an answer from memory", answered_from_memory, timeout=60, interval=0.5)
    for dry_run in (True, False, False):
        pod, _ = admit(op, job_pod(), ns, dry_run=dry_run)
        assert env_of(pod)[contract.ENV_RESUME_FROM] == committed
        assert env_of(pod)[contract.ENV_RUN_URL] == url  # the key the pod watch reports the run under
    sources = [src for _, src in op.admissions(ns, "train")[-3:]]
    assert sources == ["memory", "memory", "store"], op.tail()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An endpoint that accepts TCP connections and never answers (a frozen object store)."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def set_run_status(cp: ControlPlane, ns: str, run: str, url: str, status: dict[str, Any]) -> None:
    apply(cp, {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.RUN_KIND,
               "metadata": {"name": run, "namespace": ns},
               "spec": {"run": run, "policy": "default", "url": url, "source": "job"}})
    with cp.api_client() as api:
        k.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            contract.GROUP, contract.VERSION, ns, contract.RUN_PLURAL, run, {"status": status})


# Last in the module on purpose: a lookup of the frozen store keeps a resolver thread (the store layer's retries)
# for tens of seconds after its admission has been answered; nothing after it shares the operator's pool.
def test_store_that_never_answers_falls_back_to_run_status_and_says_why(control_plane, op, ns, black_hole):
    base = f"s3://{SESSION_BUCKET}/frozen"
    url = f"{base}/{ns}/train/"
    # Short client timeouts: the lookup threads the frozen store holds are freed soon after each admission.
    policy(control_plane, ns, {"storage": base, "resolveTimeoutSeconds": 0.3, "storageOptions": {
        "key": "k", "secret": "s", "client_kwargs": {"endpoint_url": black_hole, "region_name": "us-east-1"},
        "config_kwargs": {"connect_timeout": 1, "read_timeout": 1, "retries": {"max_attempts": 1}}}})
    latest = {"url": url + "checkpoints/c1/epoch=1-step=50.ckpt", "checkpoint": "c1", "step": 50}
    set_run_status(control_plane, ns, "train", url, {"latest": latest})

    def resumed() -> dict[str, Any] | None:  # until the operator's run index holds the status
        pod, _ = admit(op, job_pod(), ns)
        return pod if pod["metadata"]["annotations"].get(contract.ANN_RESUMED_FROM) == latest["url"] else None

    pod = wait_for("the fallback from CheckpointRun.status.latest", resumed, timeout=60, interval=1.0)
    ann = pod["metadata"]["annotations"]
    assert ann[contract.ANN_RESUMED_STEP] == "50"
    assert ann[contract.ANN_RESOLVE_ERROR].startswith("timeout"), ann
    assert env_of(pod)[contract.ENV_RESUME_FROM] == latest["url"]
    assert op.admissions(ns, "train")[-1] == ("injected", "status")
