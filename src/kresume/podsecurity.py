"""The Pod Security Standards' ``baseline`` and ``restricted`` checks of a pod (pure: a dict in, violations out).

Rules from the published standard, kubernetes.io/docs/concepts/security/pod-security-standards (the policy the
PodSecurity admission controller enforces, 1.23+; the version-gated ones are given as of its latest version).
``restricted`` is ``baseline`` plus the restricted controls. "Containers" means ``containers``,
``initContainers`` and ``ephemeralContainers``; a container field that is absent takes the pod-level
``securityContext`` value where the standard says so (runAsNonRoot, runAsUser, seccompProfile).

Baseline: HostProcess; host namespaces (hostNetwork, hostPID, hostIPC); privileged; capabilities added beyond
the default set; hostPath volumes; hostPort; AppArmor; SELinux type/user/role; procMount; seccomp Unconfined;
unsafe sysctls. Restricted: volume types; allowPrivilegeEscalation false; runAsNonRoot true; runAsUser not 0;
seccomp RuntimeDefault or Localhost; capabilities drop ALL and add at most NET_BIND_SERVICE.

kresume uses it to prove that every container it injects passes ``restricted`` (tests over the injection golden
files), whatever the user's own containers do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

LEVELS = ("baseline", "restricted")

#: Capabilities baseline allows to add (the standard's list, the container runtimes' default set).
BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})  # fmt: skip
#: The only capability restricted allows to add.
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
#: Sysctls baseline allows (the standard's "safe" set).
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})  # fmt: skip
#: SELinux types baseline allows (besides unset/empty).
SELINUX_TYPES = frozenset({"container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
#: Volume types restricted allows.
RESTRICTED_VOLUMES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                                "persistentVolumeClaim", "projected", "secret"})  # fmt: skip
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


@dataclass(frozen=True)
class Violation:
    """One control a pod fails. ``container``/``volume``: the container or volume at fault (None for pod-level
    fields); ``field``: the path as the standard names it; ``message``: what is wrong and the allowed values."""

    level: str
    control: str
    field: str
    message: str
    container: str | None = None
    volume: str | None = None


def _containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(kind) or []:
            yield kind, c


def violations(pod: dict[str, Any], level: str = "restricted") -> list[Violation]:
    """Every control of ``level`` (``baseline`` or ``restricted``) that ``pod`` (a core/v1 Pod dict, camelCase)
    fails, in the standard's order. Empty: the pod passes. Raises ValueError for an unknown level."""
    if level not in LEVELS:
        raise ValueError(f"level {level!r}: choose baseline or restricted")
    spec = pod.get("spec") or {}
    psc = spec.get("securityContext") or {}
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    out: list[Violation] = []

    def bad(lvl: str, control: str, field: str, message: str, container: str | None = None,
            volume: str | None = None) -> None:  # fmt: skip
        if lvl == "baseline" or level == "restricted":
            out.append(Violation(lvl, control, field, message, container, volume))

    # --- baseline -------------------------------------------------------------------------------------
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        bad("baseline", "HostProcess", "spec.securityContext.windowsOptions.hostProcess", "must be unset or false")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            bad("baseline", "Host Namespaces", f"spec.{key}", "must be unset or false")
    for vol in spec.get("volumes") or []:
        if "hostPath" in vol:
            bad("baseline", "HostPath Volumes", "spec.volumes[*].hostPath", "must be unset", volume=vol.get("name"))
    for name in psc.get("sysctls") or []:
        if name.get("name") not in SAFE_SYSCTLS:
            bad("baseline", "Sysctls", "spec.securityContext.sysctls[*].name", f"{name.get('name')!r} is not a safe sysctl")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp == "Unconfined":
        bad("baseline", "Seccomp", "spec.securityContext.seccompProfile.type", "must not be Unconfined")
    if (psc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
        bad("baseline", "AppArmor", "spec.securityContext.appArmorProfile.type", "must be unset, RuntimeDefault or Localhost")
    out += _selinux(psc.get("seLinuxOptions") or {}, "spec.securityContext", None)
    for kind, c in _containers(spec):
        name, sc = c.get("name"), c.get("securityContext") or {}
        where = f"spec.{kind}[*].securityContext"
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            bad("baseline", "HostProcess", f"{where}.windowsOptions.hostProcess", "must be unset or false", name)
        if sc.get("privileged"):
            bad("baseline", "Privileged Containers", f"{where}.privileged", "must be unset or false", name)
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            bad("baseline", "Capabilities", f"{where}.capabilities.add",
                f"adds {', '.join(sorted(added - BASELINE_CAPABILITIES))} (beyond the default set)", name)
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                bad("baseline", "Host Ports", f"spec.{kind}[*].ports[*].hostPort", "must be unset or 0", name)
        if (sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            bad("baseline", "AppArmor", f"{where}.appArmorProfile.type", "must be unset, RuntimeDefault or Localhost", name)
        profile = ann.get(_APPARMOR_ANNOTATION + str(name))
        if profile is not None and profile != "runtime/default" and not profile.startswith("localhost/"):
            bad("baseline", "AppArmor", f"metadata.annotations[{_APPARMOR_ANNOTATION}{name}]",
                "must be unset, runtime/default or localhost/*", name)
        out += _selinux(sc.get("seLinuxOptions") or {}, where, name)
        if sc.get("procMount") not in (None, "Default"):
            bad("baseline", "/proc Mount Type", f"{where}.procMount", "must be unset or Default", name)
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp == "Unconfined":
            bad("baseline", "Seccomp", f"{where}.seccompProfile.type", "must not be Unconfined", name)

        # --- restricted (per container) ---------------------------------------------------------------
        if sc.get("allowPrivilegeEscalation") is not False:
            bad("restricted", "Privilege Escalation", f"{where}.allowPrivilegeEscalation", "must be false", name)
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            bad("restricted", "Running as Non-root", f"{where}.runAsNonRoot",
                "must be true (here or in spec.securityContext)", name)
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad("restricted", "Running as Non-root user", f"{where}.runAsUser", "must not be 0", name)
        if (seccomp or pod_seccomp) not in ("RuntimeDefault", "Localhost"):
            bad("restricted", "Seccomp", f"{where}.seccompProfile.type",
                "must be RuntimeDefault or Localhost (here or in spec.securityContext)", name)
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad("restricted", "Capabilities", f"{where}.capabilities.drop", "must include ALL", name)
        if added - RESTRICTED_CAPABILITIES:
            bad("restricted", "Capabilities", f"{where}.capabilities.add",
                f"adds {', '.join(sorted(added - RESTRICTED_CAPABILITIES))} (only NET_BIND_SERVICE is allowed)", name)

    # --- restricted (pod) -------------------------------------------------------------------------------
    for vol in spec.get("volumes") or []:
        kinds = [k for k in vol if k != "name"]
        if kinds and not set(kinds) <= RESTRICTED_VOLUMES:
            bad("restricted", "Volume Types", "spec.volumes[*]",
                f"{', '.join(kinds)} is not an allowed volume type", volume=vol.get("name"))
    if level == "baseline":
        out = [v for v in out if v.level == "baseline"]
    return out


def _selinux(opts: dict[str, Any], where: str, container: str | None) -> list[Violation]:
    found = []
    if opts.get("type") not in (None, "", *SELINUX_TYPES):
        found.append(Violation("baseline", "SELinux", f"{where}.seLinuxOptions.type",
                               f"{opts.get('type')!r} is not an allowed type", container))  # fmt: skip
    for key in ("user", "role"):
        if opts.get(key) not in (None, ""):
            found.append(Violation("baseline", "SELinux", f"{where}.seLinuxOptions.{key}", "must be unset",
                                   container))  # fmt: skip
    return found
