"""PodSecurity `restricted` as a v1.20 PodSecurityPolicy (pure: the objects the local cluster installs)."""

from __future__ import annotations

from kresume.devtools import podsecurity


def _by_kind(objs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


def test_restricted_policy_has_the_standard_controls() -> None:
    psps = {p["metadata"]["name"]: p for p in _by_kind(podsecurity.policies())["PodSecurityPolicy"]}
    spec = psps[podsecurity.RESTRICTED]["spec"]
    assert spec["privileged"] is False and spec["allowPrivilegeEscalation"] is False
    assert spec["requiredDropCapabilities"] == ["ALL"]
    assert not (spec["hostNetwork"] or spec["hostPID"] or spec["hostIPC"]) and "hostPorts" not in spec
    assert spec["runAsUser"] == {"rule": "MustRunAsNonRoot"}
    assert "hostPath" not in spec["volumes"] and "*" not in spec["volumes"]
    ann = psps[podsecurity.RESTRICTED]["metadata"]["annotations"]
    assert ann["seccomp.security.alpha.kubernetes.io/allowedProfileNames"] == "runtime/default"
    # the privileged one must allow seccomp profiles too, or the chart's RuntimeDefault pods are refused
    assert psps[podsecurity.PRIVILEGED]["metadata"]["annotations"][
        "seccomp.security.alpha.kubernetes.io/allowedProfileNames"] == "*"


def test_only_unrestricted_namespaces_may_use_the_privileged_policy() -> None:
    binding = _by_kind(podsecurity.policies())["ClusterRoleBinding"][0]
    assert binding["roleRef"]["name"] == f"psp:{podsecurity.RESTRICTED}"
    assert binding["subjects"][0]["name"] == "system:serviceaccounts"
    restricted = _by_kind(podsecurity.namespace_objects("r", restricted=True))
    assert restricted["Namespace"][0]["metadata"]["labels"] == {podsecurity.ENFORCE_LABEL: "restricted"}
    assert "RoleBinding" not in restricted
    open_ns = _by_kind(podsecurity.namespace_objects("o", restricted=False))
    rb = open_ns["RoleBinding"][0]
    assert rb["metadata"]["namespace"] == "o" and rb["roleRef"]["name"] == f"psp:{podsecurity.PRIVILEGED}"
    assert rb["subjects"][0]["name"] == "system:serviceaccounts:o"
