"""The Pod Security Standards check (kresume.podsecurity), control by control, from the published standard's
tables (kubernetes.io/docs/concepts/security/pod-security-standards): each case breaks one control of a pod that
passes restricted, and names the control and the level that catch it."""

from __future__ import annotations

import copy

import pytest

from kresume import podsecurity

GOOD_SC = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
           "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip
GOOD = {"metadata": {"name": "p"}, "spec": {
    "volumes": [{"name": "ckpt", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}],
    "initContainers": [{"name": "init", "securityContext": copy.deepcopy(GOOD_SC)}],
    "containers": [{"name": "main", "securityContext": copy.deepcopy(GOOD_SC)}],
}}  # fmt: skip


def _with(change) -> dict:
    pod = copy.deepcopy(GOOD)
    change(pod["spec"], pod["spec"]["containers"][0]["securityContext"], pod)
    return pod


def test_the_good_pod_passes_both_levels():
    assert podsecurity.violations(GOOD, "restricted") == []
    assert podsecurity.violations(GOOD, "baseline") == []
    with pytest.raises(ValueError, match="baseline or restricted"):
        podsecurity.violations(GOOD, "strict")


CASES = [
    # (id, change, control, level that catches it)
    ("hostprocess", lambda s, c, p: c.update(windowsOptions={"hostProcess": True}), "HostProcess", "baseline"),
    ("hostnetwork", lambda s, c, p: s.update(hostNetwork=True), "Host Namespaces", "baseline"),
    ("hostpid", lambda s, c, p: s.update(hostPID=True), "Host Namespaces", "baseline"),
    ("hostipc", lambda s, c, p: s.update(hostIPC=True), "Host Namespaces", "baseline"),
    ("privileged", lambda s, c, p: c.update(privileged=True), "Privileged Containers", "baseline"),
    ("cap-sys-admin", lambda s, c, p: c["capabilities"].update(add=["SYS_ADMIN"]), "Capabilities", "baseline"),
    ("hostpath", lambda s, c, p: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
     "HostPath Volumes+Volume Types", "baseline"),  # hostPath is no restricted volume type either
    ("hostport", lambda s, c, p: s["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]),
     "Host Ports", "baseline"),
    ("apparmor-field", lambda s, c, p: c.update(appArmorProfile={"type": "Unconfined"}), "AppArmor", "baseline"),
    ("apparmor-annotation", lambda s, c, p: p["metadata"].update(annotations={
        "container.apparmor.security.beta.kubernetes.io/main": "unconfined"}), "AppArmor", "baseline"),
    ("selinux-type", lambda s, c, p: c.update(seLinuxOptions={"type": "spc_t"}), "SELinux", "baseline"),
    ("selinux-user", lambda s, c, p: s.update(securityContext={"seLinuxOptions": {"user": "root"}}), "SELinux",
     "baseline"),
    ("procmount", lambda s, c, p: c.update(procMount="Unmasked"), "/proc Mount Type", "baseline"),
    ("seccomp-unconfined", lambda s, c, p: c.update(seccompProfile={"type": "Unconfined"}), "Seccomp", "baseline"),
    ("sysctl", lambda s, c, p: s.update(securityContext={"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}),
     "Sysctls", "baseline"),
    ("volume-type", lambda s, c, p: s["volumes"].append({"name": "n", "nfs": {"server": "x", "path": "/"}}),
     "Volume Types", "restricted"),
    ("privilege-escalation", lambda s, c, p: c.pop("allowPrivilegeEscalation"), "Privilege Escalation", "restricted"),
    ("non-root-unset", lambda s, c, p: c.pop("runAsNonRoot"), "Running as Non-root", "restricted"),
    ("non-root-false", lambda s, c, p: (s.update(securityContext={"runAsNonRoot": True}), c.update(runAsNonRoot=False)),
     "Running as Non-root", "restricted"),
    ("uid-0", lambda s, c, p: c.update(runAsUser=0), "Running as Non-root user", "restricted"),
    ("pod-uid-0", lambda s, c, p: s.update(securityContext={"runAsUser": 0}), "Running as Non-root user", "restricted"),
    ("seccomp-unset", lambda s, c, p: c.pop("seccompProfile"), "Seccomp", "restricted"),
    ("drop-not-all", lambda s, c, p: c.update(capabilities={"drop": ["NET_RAW"]}), "Capabilities", "restricted"),
    ("add-chown", lambda s, c, p: c["capabilities"].update(add=["CHOWN"]), "Capabilities", "restricted"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "control", "level"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_control_is_caught_at_its_level(change, control, level):
    pod = _with(change)
    found = podsecurity.violations(pod, "restricted")
    assert {v.control for v in found} == set(control.split("+")), found
    assert min(v.level for v in found) == level and all(v.message for v in found)  # "baseline" < "restricted"
    assert bool(podsecurity.violations(pod, "baseline")) == (level == "baseline")


@pytest.mark.parametrize(("change", "ok"), [
    (lambda s, c, p: c["capabilities"].update(add=["NET_BIND_SERVICE"]), True),
    (lambda s, c, p: (s.update(securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "Localhost"}}),
                      c.pop("runAsNonRoot"), c.pop("seccompProfile")), True),  # pod-level values count
    (lambda s, c, p: s.update(securityContext={"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]}), True),
    (lambda s, c, p: c.update(seLinuxOptions={"type": "container_t", "level": "s0:c1"}), True),
    (lambda s, c, p: p["metadata"].update(annotations={
        "container.apparmor.security.beta.kubernetes.io/main": "localhost/my-profile"}), True),
    (lambda s, c, p: s["volumes"].append({"name": "pvc", "persistentVolumeClaim": {"claimName": "x"}}), True),
    (lambda s, c, p: s.update(securityContext={"seccompProfile": {"type": "RuntimeDefault"}}) or
     c.update(seccompProfile={"type": "Unconfined"}), False),  # the container's own value wins
])  # fmt: skip
def test_allowed_values_pass_and_container_values_win(change, ok):
    assert (podsecurity.violations(_with(change)) == []) == ok


def test_violations_name_the_container_or_volume_at_fault():
    pod = _with(lambda s, c, p: (s["initContainers"][0]["securityContext"].pop("runAsNonRoot"),
                                 s["volumes"].append({"name": "h", "hostPath": {"path": "/x"}})))
    found = {(v.control, v.container, v.volume) for v in podsecurity.violations(pod)}
    assert found == {("Running as Non-root", "init", None), ("HostPath Volumes", None, "h"),
                     ("Volume Types", None, "h")}
