"""kresume never makes a pod invalid, and says when it is off for a pod (issue 11 item 7), on the real control plane.

1. An opted-in pod created while the operator is not running (the API server cannot reach the webhook;
   ``failurePolicy: Ignore`` admits it unchanged): once the operator starts, its pod watch posts a
   ``KresumeNotInjected`` Warning on that pod and counts it in ``kresume_uninjected_pods_total``.
2. With the operator serving: a pod whose own annotations are just under the API server's 256 KiB limit is
   created (not refused), unchanged, with an ``InjectionWouldInvalidate`` Warning naming what to shorten — and no
   ``KresumeNotInjected`` (the webhook saw it).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from _fixtures.operator import apply, kget, register_webhook, start_operator, wait_for
from kresume import contract
from kresume.devtools import _procs, chart, pki
from kresume.devtools.cluster import ControlPlane
from kresume.injection import validity


def pod(name: str, **annotations: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {contract.LABEL_INJECT: "true"},
                         "annotations": {contract.ANN_RUN: "train", **annotations}},
            "spec": {"containers": [{"name": "trainer", "image": "python:3.11-slim"}]}}


def events(cp: ControlPlane, ns: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in kget(cp, "events", "-n", ns)["items"] if e["reason"] == reason]


def metric(port: int, name: str) -> float:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def test_pod_created_while_the_webhook_was_down_is_reported_and_no_injection_breaks_a_pod(
    control_plane: ControlPlane, k8s_namespace: str, crds_installed: None, tmp_path: Path
):
    cp, ns = control_plane, k8s_namespace
    cp.kubectl("label", "namespace", ns, f"kresume-test={ns}")
    apply(cp, {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.POLICY_KIND,
               "metadata": {"name": "default", "namespace": ns}, "spec": {"storage": f"file://{tmp_path}/store"}})
    dead, = _procs.free_ports(1)  # the chart's webhook, pointing at an operator that is not running
    down = chart.webhook_configuration(f"kresume-down-{ns[-6:]}", dead, pki.make_webhook_tls(tmp_path / "t").ca_bundle,
                                       namespace_labels={"kresume-test": ns})
    apply(cp, down)
    try:
        created = json.loads(cp.kubectl("create", "-n", ns, "-o", "json", "-f", "-",
                                        input=json.dumps(pod("while-down"))).stdout)
    finally:
        cp.kubectl("delete", "mutatingwebhookconfiguration", down["metadata"]["name"], check=False)
    assert contract.ANN_INJECTED not in created["metadata"]["annotations"]
    assert [c["name"] for c in created["spec"]["containers"]] == ["trainer"]

    metrics_port, = _procs.free_ports(1)
    with start_operator(cp, tmp_path, namespaces=[ns], args=["--metrics-port", str(metrics_port)]) as op, \
            register_webhook(cp, op, {"kresume-test": ns}):
        [warning] = wait_for("the KresumeNotInjected event", lambda: events(cp, ns, "KresumeNotInjected"))
        assert warning["involvedObject"]["name"] == "while-down" and warning["type"] == "Warning"
        assert "kresume is off for this pod" in warning["message"]
        assert metric(metrics_port, "kresume_uninjected_pods_total") == 1.0
        op.proc.wait_serving(cp.kubectl, ns)

        big = pod("big-annotations")
        room = validity.ANNOTATIONS_MAX_BYTES - validity.annotation_bytes(big["metadata"]["annotations"])
        big["metadata"]["annotations"]["notes"] = "x" * (room - len("notes") - 40)  # 40 bytes under the limit
        made = json.loads(cp.kubectl("create", "-n", ns, "-o", "json", "-f", "-", input=yaml.safe_dump(big)).stdout)
        assert contract.ANN_INJECTED not in made["metadata"]["annotations"]  # created, unchanged: not refused
        [why] = wait_for("the InjectionWouldInvalidate event", lambda: events(cp, ns, "InjectionWouldInvalidate"))
        assert why["involvedObject"]["name"] == "big-annotations"
        assert "shorten the pod's own annotations" in why["message"]
        assert [e["involvedObject"]["name"] for e in events(cp, ns, "KresumeNotInjected")] == ["while-down"]
        assert metric(metrics_port, "kresume_uninjected_pods_total") == 1.0
