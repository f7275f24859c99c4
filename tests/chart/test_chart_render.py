"""Offline renders of the chart (real Helm SDK) over the values matrix: schemas, security, wiring, TLS.

Every rendered object of a Kubernetes core kind is validated against the Kubernetes 1.31 OpenAPI schemas
(PyPI ``kubernetes-validate``, strict: unknown fields fail). Custom resources (cert-manager, Prometheus
Operator, kopf, kresume) are not in those schemas; kresume's and kopf's are applied to the real API server in
``test_chart_cluster.py``.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress  # noqa: F401  (cryptography's SAN types reference it)
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from chart import chart_support as cs
from kresume import contract

K8S_SCHEMA_VERSION = "1.31"


@pytest.mark.parametrize("case", sorted(cs.MATRIX))
def test_every_rendered_object_validates(case: str) -> None:
    objs = cs.objects(cs.MATRIX[case])
    assert objs, "nothing rendered"
    checked = 0
    for obj in objs:
        if obj["kind"] in cs.CUSTOM_KINDS:
            assert obj["apiVersion"].split("/")[0] == cs.CUSTOM_KINDS[obj["kind"]]
            continue
        kubernetes_validate.validate(obj, K8S_SCHEMA_VERSION, strict=True)
        checked += 1
    assert checked >= 8


def test_names_are_truncated_to_63_characters() -> None:
    objs = cs.objects(name="r" * 70)
    for obj in objs:
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
    assert all(not o["metadata"]["name"].endswith("-") for o in objs)


def _operator(objs: list[dict[str, Any]]) -> dict[str, Any]:
    deploy = cs.one(objs, "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return container


def test_operator_runs_locked_down() -> None:
    objs = cs.objects()
    pod = cs.one(objs, "Deployment")["spec"]["template"]["spec"]
    c = _operator(objs)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert c["readinessProbe"]["tcpSocket"] == {"port": "webhook"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"webhook": 9443, "liveness": 8080, "metrics": 9090}
    # The writable /tmp is an emptyDir; the TLS Secret is mounted where --tls-*-file point.
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == {"webhook-tls": "/etc/kresume/tls", "tmp": "/tmp"}
    assert "--tls-cert-file=/etc/kresume/tls/tls.crt" in c["args"]
    assert "--tls-key-file=/etc/kresume/tls/tls.key" in c["args"]


def test_operator_flags_follow_values() -> None:
    args = _operator(cs.objects())["args"]
    assert "--standalone" in args and not any(a.startswith("--peering") for a in args)
    assert not any(a.startswith("--namespace") for a in args)
    assert {"--webhook-port=9443", "--liveness-port=8080", "--metrics-port=9090", "--native-sidecar=auto"} <= set(
        args
    )
    c = _operator(cs.objects({"operator": {"namespaces": ["a", "b"], "nativeSidecar": "never",
                                           "sidecarImage": "reg/side:1", "resolveTimeout": 1.5}}))  # fmt: skip
    assert [a for a in c["args"] if a.startswith("--namespace")] == ["--namespace=a", "--namespace=b"]
    assert "--native-sidecar=never" in c["args"] and "--resolve-timeout=1.5" in c["args"]
    assert {"name": "KRESUME_SIDECAR_IMAGE", "value": "reg/side:1"} in c["env"]


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "a" * 64
    assert _operator(cs.objects({"image": {"digest": digest}}))["image"] == f"ghcr.io/kresume/kresume@{digest}"
    assert _operator(cs.objects({"image": {"tag": "v9"}}))["image"] == "ghcr.io/kresume/kresume:v9"


def test_single_replica_has_no_peering_pdb_or_kopf_crds() -> None:
    objs = cs.objects()
    kinds = {o["kind"] for o in objs}
    assert "PodDisruptionBudget" not in kinds and "ClusterKopfPeering" not in kinds
    assert not [o for o in cs.by_kind(objs, "CustomResourceDefinition") if "kopf.dev" in o["metadata"]["name"]]
    rules = cs.one(objs, "ClusterRole")["rules"]
    assert not [r for r in rules if "kopf.dev" in r["apiGroups"]]


def test_replicas_turn_on_peering_and_pdb() -> None:
    objs = cs.objects(cs.MATRIX["replicas-3"])
    deploy = cs.one(objs, "Deployment")
    assert deploy["spec"]["replicas"] == 3
    args = _operator(objs)["args"]
    assert "--peering=kresume" in args and "--standalone" not in args
    pdb = cs.one(objs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"  # offline Helm assumes a current server; 1.20 is tested live
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    peering = cs.one(objs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "kresume"
    assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]
    crds = {o["metadata"]["name"] for o in cs.by_kind(objs, "CustomResourceDefinition")}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crds
    (rule,) = [r for r in cs.one(objs, "ClusterRole")["rules"] if "kopf.dev" in r["apiGroups"]]
    assert rule["verbs"] == ["get", "list", "watch", "patch"]
    env = {e["name"]: e for e in _operator(objs)["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_namespaced_peering_creates_one_kopfpeering_per_namespace() -> None:
    objs = cs.objects(cs.MATRIX["replicas-3-namespaced"])
    assert not cs.by_kind(objs, "ClusterKopfPeering")
    assert sorted(o["metadata"]["namespace"] for o in cs.by_kind(objs, "KopfPeering")) == ["team-a", "team-b"]


def test_webhook_configuration() -> None:
    objs = cs.objects({"webhook": {"excludeNamespaces": ["ml-infra"]}})
    (hook,) = cs.one(objs, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] <= 5 and hook["admissionReviewVersions"] == ["v1"]
    assert hook["objectSelector"] == {"matchLabels": {contract.LABEL_INJECT: "true"}}
    exprs = {e["key"]: e for e in hook["namespaceSelector"]["matchExpressions"]}
    assert exprs["kubernetes.io/metadata.name"]["operator"] == "NotIn"
    assert exprs["kubernetes.io/metadata.name"]["values"] == [cs.RELEASE_NS, "kube-system", "ml-infra"]
    assert exprs["kresume.dev/webhook"] == {"key": "kresume.dev/webhook", "operator": "NotIn", "values": ["disabled"]}
    assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                              "resources": ["pods"], "scope": "Namespaced"}]  # fmt: skip
    svc = cs.one(objs, "Service")
    assert hook["clientConfig"]["service"] == {
        "name": svc["metadata"]["name"], "namespace": cs.RELEASE_NS, "path": "/inject-pod", "port": 443}  # fmt: skip
    assert {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"} in svc["spec"]["ports"]
    assert svc["spec"]["selector"] == cs.one(objs, "Deployment")["spec"]["selector"]["matchLabels"]


def _load_cert(b64: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(b64))


def _verify_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    key = issuer.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))


def test_self_signed_tls_is_a_valid_chain_for_the_service() -> None:
    objs = cs.objects()
    secret = cs.one(objs, "Secret")
    assert secret["type"] == "kubernetes.io/tls" and secret["metadata"]["name"] == "kresume-webhook-tls"
    (hook,) = cs.one(objs, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    ca, cert = _load_cert(secret["data"]["ca.crt"]), _load_cert(secret["data"]["tls.crt"])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    _verify_signed_by(cert, ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert "kresume-webhook.kresume-system.svc" in sans and "kresume-webhook.kresume-system.svc.cluster.local" in sans
    years = (cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)).days / 365
    assert 9 < years <= 10
    assert secret["metadata"]["name"] in [
        v["secret"]["secretName"] for v in cs.one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    ]  # fmt: skip


def test_cert_manager_mode() -> None:
    objs = cs.objects(cs.MATRIX["cert-manager"])
    assert not cs.by_kind(objs, "Secret"), "cert-manager owns the Secret"
    hook_cfg = cs.one(objs, "MutatingWebhookConfiguration")
    assert "caBundle" not in hook_cfg["webhooks"][0]["clientConfig"]
    cert = cs.one(objs, "Certificate")
    assert hook_cfg["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{cs.RELEASE_NS}/{cert['metadata']['name']}"
    )
    assert cert["spec"]["secretName"] == "kresume-webhook-tls"
    assert "kresume-webhook.kresume-system.svc" in cert["spec"]["dnsNames"]
    issuer = cs.one(objs, "Issuer")
    assert cert["spec"]["issuerRef"] == {"name": issuer["metadata"]["name"], "kind": "Issuer", "group": "cert-manager.io"}
    mon = cs.one(objs, "ServiceMonitor")
    assert mon["spec"]["endpoints"][0]["port"] == "metrics"
    assert mon["spec"]["selector"]["matchLabels"] == cs.one(objs, "Service")["spec"]["selector"]
    # An existing issuer replaces the chart's Issuer.
    objs = cs.objects({"certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}})
    assert not cs.by_kind(objs, "Issuer")
    assert cs.one(objs, "Certificate")["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


def test_custom_default_policy() -> None:
    values = cs.MATRIX["custom-policy"]
    policies = cs.by_kind(cs.objects(values), "CheckpointPolicy")
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["team-a", "team-b"]
    for p in policies:
        assert p["metadata"]["name"] == contract.DEFAULT_POLICY_NAME
        # Helm merges the user's spec over the chart's defaults: keys the user left out (nodeCache) come from
        # values.yaml, switched off.
        defaults = yaml.safe_load((cs.CHART / "values.yaml").read_text())["defaultPolicy"]["spec"]
        assert p["spec"] == {"nodeCache": defaults["nodeCache"], **values["defaultPolicy"]["spec"]}
        assert p["spec"]["nodeCache"]["enabled"] is False
        assert "post-install" in p["metadata"]["annotations"]["helm.sh/hook"]
    assert not cs.by_kind(cs.objects(), "CheckpointPolicy")


def test_crds_toggle_and_keep() -> None:
    crds = cs.by_kind(cs.objects(), "CustomResourceDefinition")
    assert {c["metadata"]["name"] for c in crds} == {"checkpointpolicies.kresume.dev", "checkpointruns.kresume.dev"}
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in crds)
    assert not cs.by_kind(cs.objects(cs.MATRIX["crds-off"]), "CustomResourceDefinition")
    assert not cs.by_kind(cs.objects({"crds": {"install": False}, "operator": {"replicas": 2}}),
                          "CustomResourceDefinition")  # fmt: skip
    unkept = cs.by_kind(cs.objects({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert all("annotations" not in c["metadata"] for c in unkept)


def test_helm_test_hook_checks_the_webhook_over_tls() -> None:
    objs = cs.objects()
    (pod,) = [o for o in cs.by_kind(objs, "Pod") if o["metadata"]["annotations"]["helm.sh/hook"] == "test"]
    (c,) = pod["spec"]["containers"]
    script = c["args"][0]
    compile(script, "helm-test", "exec")  # the rendered script is valid Python
    assert "https://kresume-webhook.kresume-system.svc:443/inject-pod" in script
    assert 'cafile="/etc/kresume/tls/ca.crt"' in script
    assert pod["spec"]["volumes"][0]["secret"]["secretName"] == "kresume-webhook-tls"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert not [o for o in cs.objects({"tests": {"enabled": False}}) if o["kind"] == "Pod"]


def test_service_account_and_rbac_toggles() -> None:
    objs = cs.objects({"serviceAccount": {"create": False, "name": "existing"}, "rbac": {"create": False}})
    kinds = {o["kind"] for o in objs}
    assert not kinds & {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    assert cs.one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"
    binding = cs.one(cs.objects({"serviceAccount": {"name": "op"}}), "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "op", "namespace": cs.RELEASE_NS}]
