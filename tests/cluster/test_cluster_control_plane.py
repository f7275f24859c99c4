"""The local control plane is a real Kubernetes API: controllers run, kubectl and the Python client work,
RBAC and impersonation apply, and URL admission webhooks with our own CA are called."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import kubernetes.client as k
import pytest
from kubernetes.client.rest import ApiException

from kresume.devtools.cluster import ControlPlane

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    """Poll ``probe`` every 0.2 s until it returns a truthy value; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def test_plane_reports_the_version_of_its_binaries(control_plane: ControlPlane):
    assert control_plane.assets is not None
    out = subprocess.run([str(control_plane.assets / "kube-apiserver"), "--version"], capture_output=True, text=True)
    assert out.stdout.split()[-1] == control_plane.version  # "Kubernetes v1.20.2" -> "v1.20.2"
    assert control_plane.server.startswith("https://127.0.0.1:")


def test_kubectl_and_python_client_see_the_same_objects(control_plane: ControlPlane, k8s_namespace: str):
    control_plane.kubectl("-n", k8s_namespace, "create", "configmap", "cm1", "--from-literal=a=b")
    with control_plane.api_client() as api:
        cm = k.CoreV1Api(api).read_namespaced_config_map("cm1", k8s_namespace)
    assert cm.data == {"a": "b"}
    env_kubectl = subprocess.run(
        [str(control_plane.assets / "kubectl"), "-n", k8s_namespace, "get", "cm", "cm1", "-o", "name"],
        capture_output=True, text=True, env=control_plane.env(), check=True,
    )  # fmt: skip
    assert env_kubectl.stdout.strip() == "configmap/cm1"


def test_job_creates_pod_and_replaces_a_deleted_one(control_plane: ControlPlane, k8s_namespace: str):
    node = f"node-{k8s_namespace}"[:63]
    with control_plane.api_client() as api:
        core, batch = k.CoreV1Api(api), k.BatchV1Api(api)
        core.create_node(k.V1Node(metadata=k.V1ObjectMeta(name=node)))
        try:
            batch.create_namespaced_job(k8s_namespace, k.V1Job(
                metadata=k.V1ObjectMeta(name="train"),
                spec=k.V1JobSpec(backoff_limit=3, template=k.V1PodTemplateSpec(spec=k.V1PodSpec(
                    node_name=node, restart_policy="Never",
                    containers=[k.V1Container(name="main", image="busybox")]))),
            ))  # fmt: skip

            def job_pods() -> list[k.V1Pod]:
                pods = core.list_namespaced_pod(k8s_namespace, label_selector="job-name=train").items
                return [p for p in pods if p.metadata.deletion_timestamp is None]

            first = wait_for(job_pods, "the Job controller's first pod")
            assert len(first) == 1 and first[0].spec.node_name == node
            core.delete_namespaced_pod(first[0].metadata.name, k8s_namespace, grace_period_seconds=0)
            old_uid = first[0].metadata.uid
            replacement = wait_for(lambda: [p for p in job_pods() if p.metadata.uid != old_uid], "a replacement pod")
            assert replacement[0].spec.node_name == node
            owner = replacement[0].metadata.owner_references[0]
            assert (owner.kind, owner.name) == ("Job", "train")
        finally:
            core.delete_node(node)


def test_impersonated_serviceaccount_gets_exactly_its_rbac(control_plane: ControlPlane, k8s_namespace: str):
    sa = f"system:serviceaccount:{k8s_namespace}:runner"
    can_i = ["auth", "can-i", "list", "pods", "-n", k8s_namespace]
    assert control_plane.kubectl(*can_i, f"--as={sa}", check=False).stdout.strip() == "no"
    control_plane.kubectl("-n", k8s_namespace, "create", "role", "pod-reader", "--verb=list", "--resource=pods")
    control_plane.kubectl("-n", k8s_namespace, "create", "rolebinding", "rb", "--role=pod-reader",
                          f"--serviceaccount={k8s_namespace}:runner")  # fmt: skip
    assert control_plane.kubectl(*can_i, f"--as={sa}").stdout.strip() == "yes"
    kubeconfig = control_plane.make_impersonating_kubeconfig(k8s_namespace, "runner")
    as_sa = subprocess.run([str(control_plane.assets / "kubectl"), "--kubeconfig", str(kubeconfig), *can_i],
                           capture_output=True, text=True)  # fmt: skip
    assert as_sa.stdout.strip() == "yes"
    as_sa = subprocess.run([str(control_plane.assets / "kubectl"), "--kubeconfig", str(kubeconfig),
                            "auth", "can-i", "delete", "pods", "-n", k8s_namespace], capture_output=True, text=True)
    assert as_sa.stdout.strip() == "no"


def test_serviceaccount_token_authenticates_as_that_serviceaccount(control_plane: ControlPlane, k8s_namespace: str):
    control_plane.kubectl("-n", k8s_namespace, "create", "serviceaccount", "bot")
    token = control_plane.serviceaccount_token(k8s_namespace, "bot")
    cfg = control_plane.client_configuration()
    cfg.api_key = {"authorization": token}
    with k.ApiClient(cfg) as api:
        with pytest.raises(ApiException) as denied:
            k.CoreV1Api(api).list_namespaced_secret(k8s_namespace)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{k8s_namespace}:bot" in denied.value.body


def test_url_webhook_with_own_ca_bundle_is_accepted(control_plane: ControlPlane, tmp_path):
    from kresume.devtools import pki

    tls = pki.make_webhook_tls(tmp_path)
    name = f"kresume-test-{uuid.uuid4().hex[:8]}"
    with control_plane.api_client() as api:
        adm = k.AdmissionregistrationV1Api(api)
        adm.create_mutating_webhook_configuration(k.V1MutatingWebhookConfiguration(
            metadata=k.V1ObjectMeta(name=name),
            webhooks=[k.V1MutatingWebhook(
                name="pods.test.kresume.dev", admission_review_versions=["v1"], side_effects="None",
                failure_policy="Ignore",
                client_config=k.AdmissionregistrationV1WebhookClientConfig(
                    url="https://127.0.0.1:9/mutate", ca_bundle=tls.ca_bundle),
                object_selector=k.V1LabelSelector(match_labels={"kresume-test/never": name}),
                rules=[k.V1RuleWithOperations(operations=["CREATE"], api_groups=[""], api_versions=["v1"],
                                              resources=["pods"])],
            )],
        ))  # fmt: skip
        try:
            stored = adm.read_mutating_webhook_configuration(name).webhooks[0].client_config
            assert stored.url == "https://127.0.0.1:9/mutate"
            assert stored.ca_bundle == tls.ca_bundle
        finally:
            adm.delete_mutating_webhook_configuration(name)
