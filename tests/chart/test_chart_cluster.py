"""The chart against a real kube-apiserver (v1.20.2 from the project's envtest assets).

Real ``helm install``/``upgrade``/``uninstall`` through the Helm SDK (``helm_python.Config``): the API server
must accept every object, Helm's capabilities come from the server (so the PodDisruptionBudget is
``policy/v1beta1`` on 1.20), ``lookup`` sees the existing webhook Secret on upgrade, and the post-install hooks
create kresume and kopf custom resources once their CRDs exist. Then ``kubectl auth can-i`` as the operator's
ServiceAccount, both ways.

This module starts its own control plane (no controller-manager) instead of the session's ``control_plane``:
Helm owns cluster-scoped objects (CRDs, the MutatingWebhookConfiguration, a ClusterRole) by release, and an
install would conflict with CRDs other tests apply to the shared cluster, or leave a webhook matching their pods.
Without a kubelet the operator pods never run, so ``helm test`` is not run here (see the chart README).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest

from chart import chart_support as cs
from _fixtures.cluster import started_plane
from kresume.devtools.cluster import ControlPlane, ControlPlaneSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with started_plane(ControlPlaneSettings(controller_manager=False)) as cp:
        yield cp


def _get(cp: ControlPlane, *args: str) -> dict[str, Any]:
    return json.loads(cp.kubectl("get", *args, "-o", "json").stdout)


class Release:
    """One Helm release on the plane; ``cleanup()`` uninstalls it and deletes the CRDs it kept."""

    def __init__(self, cp: ControlPlane, name: str, namespace: str) -> None:
        self.cp, self.name, self.namespace = cp, name, namespace
        self.cfg = helm.Config(kubeconfig_path=str(cp.kubeconfig), namespace=namespace)

    def install(self, values: dict[str, Any]) -> dict[str, Any]:
        return self.cfg.install(str(cs.CHART), self.name, values, namespace=self.namespace, create_namespace=True,
                                timeout=120)  # fmt: skip

    def upgrade(self, values: dict[str, Any]) -> dict[str, Any]:
        return self.cfg.upgrade(str(cs.CHART), self.name, values, namespace=self.namespace, timeout=120)

    def cleanup(self) -> None:
        try:
            self.cfg.uninstall(self.name, ignore_not_found=True, timeout=60)
        finally:
            self.cfg.close()
            self.cp.kubectl("delete", "crd", "-l", "app.kubernetes.io/part-of=kresume", "--ignore-not-found",
                            "--wait=true", check=False)  # fmt: skip


@pytest.fixture
def release(plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[Release]:
    for ns in ("team-a", "team-b"):
        plane.kubectl("create", "namespace", ns, check=False)
    name = "kr-" + request.node.name.split("[")[0].removeprefix("test_").replace("_", "-")[:20].strip("-")
    rel = Release(plane, name, name + "-ns")
    try:
        yield rel
    finally:
        rel.cleanup()


def can_i(cp: ControlPlane, sa: str, verb: str, resource: str, namespace: str = "team-a", sub: str = "") -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={sa}", "-n", namespace]
    if sub:
        args.append(f"--subresource={sub}")
    res = cp.kubectl(*args, check=False)
    answer = res.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {res.stdout}{res.stderr}"
    return answer == "yes"


OPERATOR_NEEDS = [
    ("get", "pods", ""), ("list", "pods", ""), ("watch", "pods", ""),
    ("create", "events", ""), ("patch", "events", ""), ("create", "events.events.k8s.io", ""),
    ("get", "checkpointpolicies.kresume.dev", ""), ("watch", "checkpointpolicies.kresume.dev", ""),
    ("create", "checkpointruns.kresume.dev", ""), ("update", "checkpointruns.kresume.dev", ""),
    ("delete", "checkpointruns.kresume.dev", ""), ("patch", "checkpointruns.kresume.dev", "status"),
    ("get", "secrets", ""), ("list", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("watch", "namespaces", ""), ("get", "jobs.batch", ""), ("get", "statefulsets.apps", ""),
]  # fmt: skip
OPERATOR_MUST_NOT = [
    ("create", "pods", ""), ("delete", "pods", ""), ("patch", "pods", ""), ("update", "pods", ""),
    ("list", "secrets", ""), ("watch", "secrets", ""), ("create", "secrets", ""),
    ("create", "deployments.apps", ""), ("create", "jobs.batch", ""), ("list", "jobs.batch", ""),
    ("list", "statefulsets.apps", ""),
    ("create", "checkpointpolicies.kresume.dev", ""), ("update", "checkpointpolicies.kresume.dev", ""),
    ("delete", "checkpointpolicies.kresume.dev", ""), ("patch", "checkpointpolicies.kresume.dev", "status"),
    ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io", ""),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ""), ("create", "clusterrolebindings", ""),
    ("get", "nodes", ""), ("delete", "namespaces", ""), ("create", "leases.coordination.k8s.io", ""),
]  # fmt: skip


def _assert_permissions(cp: ControlPlane, sa: str, needs: list, must_not: list) -> None:
    missing = [(v, r, s) for v, r, s in needs if not can_i(cp, sa, v, r, sub=s)]
    extra = [(v, r, s) for v, r, s in must_not if can_i(cp, sa, v, r, sub=s)]
    assert missing == [] and extra == [], f"missing: {missing}; too much: {extra}"


def test_defaults_install_upgrade_and_least_privilege(plane: ControlPlane, release: Release) -> None:
    release.install({})
    assert release.cfg.status(release.name)["status"] == "deployed"
    ns, full = release.namespace, f"{release.name}-kresume"
    for crd in ("checkpointpolicies.kresume.dev", "checkpointruns.kresume.dev"):
        conds = {c["type"]: c["status"] for c in _get(plane, "crd", crd)["status"]["conditions"]}
        assert conds.get("Established") == "True", conds
    deploy = _get(plane, "deploy", full, "-n", ns)
    assert deploy["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    mwc = _get(plane, "mutatingwebhookconfiguration", full)
    (hook,) = mwc["webhooks"]
    assert hook["clientConfig"]["service"] == {"name": f"{full}-webhook", "namespace": ns, "path": "/inject-pod",
                                               "port": 443}  # fmt: skip
    secret = _get(plane, "secret", f"{full}-webhook-tls", "-n", ns)
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert b"BEGIN CERTIFICATE" in base64.b64decode(secret["data"]["tls.crt"])
    assert not plane.kubectl("get", "pdb", "-n", ns, "-o", "name").stdout.strip()

    # Upgrade: `lookup` finds the Secret, so the CA, the key and the caBundle stay as they were.
    release.upgrade({"operator": {"resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}})
    secret2 = _get(plane, "secret", f"{full}-webhook-tls", "-n", ns)
    assert secret2["data"] == secret["data"]
    assert _get(plane, "mutatingwebhookconfiguration", full)["webhooks"][0]["clientConfig"]["caBundle"] == (
        secret["data"]["ca.crt"]
    )
    assert _get(plane, "deploy", full, "-n", ns)["metadata"]["generation"] == 2

    sa = f"system:serviceaccount:{ns}:{full}"
    _assert_permissions(plane, sa, OPERATOR_NEEDS, OPERATOR_MUST_NOT + [("patch", "clusterkopfpeerings.kopf.dev", "")])
    # The check can tell: another ServiceAccount in the same namespace gets nothing.
    assert not can_i(plane, f"system:serviceaccount:{ns}:default", "get", "pods")

    # Uninstall keeps the CRDs (helm.sh/resource-policy: keep) and removes the rest.
    release.cfg.uninstall(release.name, timeout=60)
    assert _get(plane, "crd", "checkpointruns.kresume.dev")["metadata"]["name"]
    assert plane.kubectl("get", "mutatingwebhookconfiguration", full, check=False).returncode != 0


def test_replicas_3_on_a_1_20_server(plane: ControlPlane, release: Release) -> None:
    assert plane.version.startswith("v1.20"), plane.version
    release.install(cs.MATRIX["replicas-3"])
    ns, full = release.namespace, f"{release.name}-kresume"
    pdb = _get(plane, "pdb", full, "-n", ns)
    assert pdb["apiVersion"] == "policy/v1beta1" and pdb["spec"]["minAvailable"] == 1
    assert _get(plane, "deploy", full, "-n", ns)["spec"]["replicas"] == 3
    peering = _get(plane, "clusterkopfpeering", full)  # created by the post-install hook after its CRD
    assert peering["kind"] == "ClusterKopfPeering"
    sa = f"system:serviceaccount:{ns}:{full}"
    assert can_i(plane, sa, "patch", "clusterkopfpeerings.kopf.dev")
    assert can_i(plane, sa, "watch", "kopfpeerings.kopf.dev")
    assert not can_i(plane, sa, "delete", "clusterkopfpeerings.kopf.dev")
    _assert_permissions(plane, sa, OPERATOR_NEEDS, OPERATOR_MUST_NOT)
    release.upgrade(cs.MATRIX["replicas-3"])  # hooks run again (before-hook-creation) without conflict
    assert _get(plane, "clusterkopfpeering", full)["kind"] == "ClusterKopfPeering"


def test_replicas_3_namespaced_peering(plane: ControlPlane, release: Release) -> None:
    release.install(cs.MATRIX["replicas-3-namespaced"])
    full = f"{release.name}-kresume"
    for ns in ("team-a", "team-b"):
        assert _get(plane, "kopfpeering", full, "-n", ns)["kind"] == "KopfPeering"


def test_custom_default_policy_is_accepted_by_the_crd(plane: ControlPlane, release: Release) -> None:
    release.install(cs.MATRIX["custom-policy"])
    want = cs.MATRIX["custom-policy"]["defaultPolicy"]["spec"]
    for ns in ("team-a", "team-b"):
        got = _get(plane, "checkpointpolicy", "default", "-n", ns)["spec"]
        for key in ("storage", "storageOptions", "credentialsSecret", "retention", "restore"):
            assert got[key] == want[key], key
        assert got["sidecar"]["concurrency"] == 8 and got["sidecar"]["resources"] == want["sidecar"]["resources"]
    assert plane.kubectl("get", "ckptpolicy", "-A", "-o", "name").stdout.count("default") == 2


def test_crds_off_with_crds_from_manifests(plane: ControlPlane, release: Release) -> None:
    plane.kubectl("apply", "-f", str(cs.ROOT / "manifests" / "01-crds.yaml"))
    plane.kubectl("wait", "--for=condition=Established", "crd/checkpointruns.kresume.dev", "--timeout=60s")
    release.install(cs.MATRIX["crds-off"])
    assert _get(plane, "deploy", f"{release.name}-kresume", "-n", release.namespace)["spec"]["replicas"] == 1
    # the CRDs are not the release's: Helm did not adopt them
    ann = _get(plane, "crd", "checkpointruns.kresume.dev")["metadata"].get("annotations") or {}
    assert "meta.helm.sh/release-name" not in ann


def test_cert_manager_render_is_accepted_except_its_custom_resources(plane: ControlPlane, release: Release) -> None:
    """No cert-manager or Prometheus Operator CRDs exist here: their objects are left out of a server dry run."""
    ns = release.namespace
    plane.kubectl("create", "namespace", ns)
    objs = cs.objects(cs.MATRIX["cert-manager"], name=release.name, namespace=ns)
    crds = [o for o in objs if o["kind"] == "CustomResourceDefinition"]
    rest = [o for o in objs if o["kind"] not in {"CustomResourceDefinition", "Issuer", "Certificate", "ServiceMonitor"}]
    assert {o["kind"] for o in objs} >= {"Issuer", "Certificate", "ServiceMonitor"}
    plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": crds}))
    plane.kubectl("wait", "--for=condition=Established", "crd/checkpointruns.kresume.dev", "--timeout=60s")
    out = plane.kubectl("apply", "--dry-run=server", "-f", "-",
                        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rest})).stdout  # fmt: skip
    assert "mutatingwebhookconfiguration.admissionregistration.k8s.io/" in out and "(server dry run)" in out


def test_manifests_apply_with_kubectl(plane: ControlPlane, release: Release) -> None:
    for name in ("00-namespace.yaml", "01-crds.yaml"):
        plane.kubectl("apply", "-f", str(cs.ROOT / "manifests" / name))
    plane.kubectl("wait", "--for=condition=Established", "crd/checkpointpolicies.kresume.dev", "--timeout=60s")
    out = plane.kubectl("apply", "-f", str(cs.ROOT / "manifests" / "02-kresume.yaml")).stdout
    assert "deployment.apps/kresume created" in out
    assert _get(plane, "sa", "kresume", "-n", "kresume-system")["metadata"]["name"] == "kresume"
    _assert_permissions(plane, "system:serviceaccount:kresume-system:kresume", OPERATOR_NEEDS[:3], OPERATOR_MUST_NOT[:3])
    plane.kubectl("delete", "-f", str(cs.ROOT / "manifests" / "02-kresume.yaml"), "--wait=false")
