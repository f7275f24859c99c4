"""The packaged CRDs on a real kube-apiserver: accepted, defaults applied, bad specs refused,
status subresource and printer columns working."""

from __future__ import annotations

import datetime
import json

import kubernetes
import pytest

from kresume import contract, crds
from kresume.policy import Policy

API = f"{contract.GROUP}/{contract.VERSION}"


@pytest.fixture(scope="module")
def installed(control_plane):
    """Apply the packaged YAML files (as the chart will) and wait until both CRDs are Established."""
    for crd in crds.all_crds():
        control_plane.kubectl("apply", "-f", str(crds.HERE / crds.file_name(crd)))
    names = [f"crd/{c['metadata']['name']}" for c in crds.all_crds()]
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=30s", *names)
    return control_plane


def _policy(namespace: str, name: str, spec: dict) -> str:
    return json.dumps({"apiVersion": API, "kind": contract.POLICY_KIND, "metadata": {"name": name, "namespace": namespace}, "spec": spec})


def test_crds_policy_defaults_applied_by_apiserver(installed, k8s_namespace):
    installed.kubectl("create", "-f", "-", input=_policy(k8s_namespace, "default", {"storage": "s3://b/p"}))
    got = json.loads(installed.kubectl("get", "ckptpolicy", "default", "-n", k8s_namespace, "-o", "json").stdout)
    model = Policy.from_spec(got["spec"])  # what the API server stored parses as a Policy
    defaults = Policy(storage="s3://b/p")
    assert got["spec"]["retention"] == {"keepLast": defaults.retention.keep_last}
    assert got["spec"]["sidecar"] == {"concurrency": defaults.sidecar.concurrency}
    assert (model.restore, model.resolve_timeout_seconds) == (defaults.restore, defaults.resolve_timeout_seconds)


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"storage": "http://bucket/p"}, "spec.storage"),
        ({"storage": "s3://"}, "spec.storage"),
        ({"storage": "s3://b", "retention": {"keepLast": 0}}, "spec.retention.keepLast"),
        ({"storage": "s3://b", "sidecar": {"concurrency": 0}}, "spec.sidecar.concurrency"),
        ({"storage": "s3://b", "sidecar": {"resources": {"limits": {"memory": "1 GB"}}}}, "spec.sidecar.resources.limits.memory"),
        ({"storage": "s3://b", "sidecar": {"imagePullPolicy": "Sometimes"}}, "spec.sidecar.imagePullPolicy"),
        ({"storage": "s3://b", "resolveTimeoutSeconds": 0}, "spec.resolveTimeoutSeconds"),
        ({"retention": {"keepLast": 2}}, "spec.storage"),
    ],
)
def test_crds_apiserver_refuses_bad_policy(installed, k8s_namespace, spec, field):
    # --validate=false: kubectl's client-side check would answer first; the API server must refuse.
    res = installed.kubectl("create", "--validate=false", "-f", "-", input=_policy(k8s_namespace, "bad", spec), check=False)
    assert res.returncode != 0
    assert "is invalid" in res.stderr and field in res.stderr, res.stderr


def test_crds_run_status_and_columns(installed, k8s_namespace):
    run = {
        "apiVersion": API,
        "kind": contract.RUN_KIND,
        "metadata": {"name": "train-0", "namespace": k8s_namespace},
        "spec": {"run": "train-0", "url": f"s3://b/p/{k8s_namespace}/train-0/", "policy": "default", "source": "job", "group": "train", "rank": 0},
    }
    installed.kubectl("create", "-f", "-", input=json.dumps(run))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {
        "latest": {"url": "s3://b/p/x.ckpt", "step": 400, "committedAt": now, "checkpoint": "0000000400-x"},
        "checkpoints": 3,
        "worldSize": 2,
        "pending": {"step": 500, "count": 1},
        "epoch": {"token": "20261201T120000000000Z-abc123", "checkpoint": "0000000400-x", "url": "s3://b/p/x.ckpt",
                  "name": "x.ckpt", "step": 400, "ranks": [0, 1], "worldSize": 2, "started": now},
        "crashLoop": {"checkpoint": "0000000400-x", "fallbacks": 0, "held": False, "failures": [
            {"attempt": "u/0", "pod": "p", "container": "trainer", "exitCode": 1, "reason": "Error", "time": now}]},
        "lastFallback": {"checkpoint": "0000000300-x", "next": "0000000200-x", "reason": "r", "time": now,
                         "marked": True},
        "restarts": 2,
        "lastPreemption": {"pod": "train-abc", "reason": "EvictionByEvictionAPI", "time": now},
        "history": [{"pod": "train-abc", "resumedFrom": "none", "time": now}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "Committed", "lastTransitionTime": now}],
        "kopf": {"progress": {"h": {"retries": 1}}},
        "notInSchema": 1,
    }
    with installed.api_client() as client:
        api = kubernetes.client.CustomObjectsApi(client)
        args = (contract.GROUP, contract.VERSION, k8s_namespace, contract.RUN_PLURAL, "train-0")
        got = api.patch_namespaced_custom_object_status(*args, {"status": status})
        assert "notInSchema" not in got["status"]  # pruned: the schema is structural
        assert got["status"]["kopf"] == status["kopf"]  # preserved: kopf's own records
        assert got["status"]["latest"]["step"] == 400
        for kept in ("worldSize", "pending", "epoch", "crashLoop", "lastFallback"):  # in the schema: not pruned
            assert got["status"][kept] == status[kept], kept
        # spec writes through /status are ignored, status writes through the main resource too
        api.patch_namespaced_custom_object(*args, {"status": {"restarts": 99}})
        assert api.get_namespaced_custom_object(*args)["status"]["restarts"] == 2
        with pytest.raises(kubernetes.client.ApiException) as info:
            api.patch_namespaced_custom_object_status(*args, {"status": {"history": [{"pod": "p"}] * 51}})
        assert info.value.status == 422
    table = installed.kubectl("get", "ckptrun", "-n", k8s_namespace).stdout.splitlines()
    assert table[0].split()[:10] == ["NAME", "RUN", "WORLD", "LATEST", "STEP", "PENDING", "STEP", "LATEST", "AGE",
                                     "RESTARTS"]
    name, run_name, world, step, pending, _age, restarts = table[1].split()[:7]
    assert (name, run_name, world, step, pending, restarts) == ("train-0", "train-0", "2", "400", "500", "2")
    short = installed.kubectl("get", "ckptrun,ckptpolicy", "-n", k8s_namespace, "-o", "name").stdout
    assert "checkpointrun.kresume.dev/train-0" in short
