"""Every injected golden pod against the PodSecurity "restricted" standard (kresume.podsecurity, from
kubernetes.io/docs/concepts/security/pod-security-standards): what kresume adds (the sidecar, the restore step,
the checkpoint volume) never violates it, and a pod that passed before injection still passes after it.

The user's own containers may not be restricted-compliant (most inputs set no securityContext); their violations
are theirs. The one exception on kresume's side is a trainer running as uid 0: the sidecar must share its uid to
read its files (0600 safetensors), so it cannot be non-root either; such a pod is not restricted anyway. And the
node-local tier (policy ``nodeCache``) is a hostPath volume, which the baseline standard forbids: a namespace that
turns it on must allow hostPath (docs/preemption.md "Node-local tier").
"""

from __future__ import annotations

import pytest
import yaml

from kresume import contract, podsecurity
from injection.test_injection_golden import CASES, DATA, MODES, load

OURS = {contract.SIDECAR_CONTAINER_NAME, contract.RESTORE_CONTAINER_NAME}
PARAMS = [(c, m) for c in CASES for m in MODES]
#: Controls a kresume container may fail, and only because the user's trainer runs as root (see module docstring).
ROOT_TRAINER = {"Running as Non-root", "Running as Non-root user"}


def _golden(case: str, mode: str) -> dict:
    return yaml.safe_load((DATA / f"{case}.{mode}.yaml").read_text())


def _ours(violations: list[podsecurity.Violation]) -> list[podsecurity.Violation]:
    return [v for v in violations
            if v.container in OURS or v.volume in (contract.VOLUME_NAME, contract.NODE_CACHE_VOLUME)]


@pytest.mark.parametrize("case, mode", PARAMS, ids=[f"{c}-{m}" for c, m in PARAMS])
def test_what_kresume_injects_passes_restricted(case, mode):
    before, after = load(DATA / f"{case}.yaml"), _golden(case, mode)
    ours = _ours(podsecurity.violations(after, "restricted"))
    if case == "root-trainer":
        assert {v.control for v in ours} == ROOT_TRAINER, ours
    elif case == "node-cache":
        assert {(v.control, v.volume) for v in ours} == {("HostPath Volumes", contract.NODE_CACHE_VOLUME),
                                                         ("Volume Types", contract.NODE_CACHE_VOLUME)}, ours
    else:
        assert ours == [], ours
    if not podsecurity.violations(before, "restricted"):
        assert podsecurity.violations(after, "restricted") == [], "a restricted pod stays restricted"


def test_some_inputs_are_restricted_so_the_whole_pod_check_runs():
    clean = [c for c in CASES if not podsecurity.violations(load(DATA / f"{c}.yaml"), "restricted")]
    assert "restricted-pod" in clean
    injected = _golden("restricted-pod", "native")
    names = [c["name"] for c in injected["spec"]["initContainers"]]
    assert names == [contract.RESTORE_CONTAINER_NAME, contract.SIDECAR_CONTAINER_NAME]  # both are checked


@pytest.mark.parametrize("case, mode", PARAMS, ids=[f"{c}-{m}" for c, m in PARAMS])
def test_injected_containers_carry_the_security_context_and_default_resources(case, mode):
    pod = _golden(case, mode)
    spec = pod["spec"]
    ours = [c for c in [*(spec.get("initContainers") or []), *spec["containers"]] if c["name"] in OURS]
    if case in ("bare-pod-no-run", "parallel-job-pod"):
        assert ours == []
        return
    assert ours
    for c in ours:
        sc = c["securityContext"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        assert sc.get("runAsNonRoot") is (None if case == "root-trainer" else True)
        assert c["resources"] == (CASES[case][0].get("sidecar", {}).get("resources")
                                  or {"requests": {"cpu": "100m", "memory": "192Mi"}, "limits": {"memory": "512Mi"}})
