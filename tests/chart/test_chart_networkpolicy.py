"""The chart's optional NetworkPolicy and the injected containers' default resources (offline renders, real Helm SDK).

A default-deny cluster blocks the webhook unless the API server may reach it: the policy opens the webhook port
(to the peers given, or to any), opens metrics only to the peers given, and restricts egress only when rules are
given (DNS added). The operator passes the chart's sidecar resources to the injection (KRESUME_SIDECAR_RESOURCES).
"""

from __future__ import annotations

import json

from chart import chart_support as cs
from kresume.injection import DEFAULT_RESOURCES


def _policy(values: dict) -> dict:
    return cs.one(cs.objects(values), "NetworkPolicy")


def test_no_network_policy_by_default() -> None:
    assert cs.by_kind(cs.objects(), "NetworkPolicy") == []


def test_network_policy_selects_the_operator_pods_and_opens_only_the_webhook_port() -> None:
    objs = cs.objects({"networkPolicy": {"enabled": True}})
    pol, deploy = cs.one(objs, "NetworkPolicy"), cs.one(objs, "Deployment")
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert pol["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert pol["spec"]["policyTypes"] == ["Ingress"], "no egress rules given: egress stays open"
    assert pol["spec"]["ingress"] == [{"ports": [{"port": 9443, "protocol": "TCP"}]}], "webhook from anywhere"
    ports = {p["name"]: p["containerPort"] for p in deploy["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports["webhook"] == 9443


def test_network_policy_peers_metrics_and_egress_follow_values() -> None:
    values = cs.MATRIX["network-policy"]
    spec = _policy(values)["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    webhook, metrics = spec["ingress"]
    assert webhook == {"ports": [{"port": 9443, "protocol": "TCP"}], "from": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]}
    assert metrics["ports"] == [{"port": 9090, "protocol": "TCP"}]
    assert metrics["from"] == values["networkPolicy"]["metricsFrom"]
    dns, store = spec["egress"]
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    assert store == values["networkPolicy"]["egress"][0]
    no_dns = _policy({"networkPolicy": {**values["networkPolicy"], "allowDNS": False}})["spec"]
    assert no_dns["egress"] == values["networkPolicy"]["egress"]


def test_network_policy_follows_a_custom_webhook_port() -> None:
    spec = _policy({"networkPolicy": {"enabled": True}, "operator": {"ports": {"webhook": 8443}}})["spec"]
    assert spec["ingress"][0]["ports"] == [{"port": 8443, "protocol": "TCP"}]


def _sidecar_resources_env(values: dict) -> dict:
    deploy = cs.one(cs.objects(values), "Deployment")
    env = {e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    return json.loads(env["KRESUME_SIDECAR_RESOURCES"])


def test_sidecar_resources_default_to_the_injections_and_follow_values() -> None:
    assert _sidecar_resources_env({}) == DEFAULT_RESOURCES, "the chart default is the measured default"
    custom = {"requests": {"cpu": "250m", "memory": "300Mi"}, "limits": {"memory": "1Gi"}}
    assert _sidecar_resources_env({"operator": {"sidecarResources": custom}}) == custom
