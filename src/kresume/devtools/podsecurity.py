"""PodSecurity ``restricted`` on a v1.20 API server, enforced by its PodSecurityPolicy admission plugin.

PodSecurity admission (the ``pod-security.kubernetes.io/enforce`` namespace label) arrived in 1.22/1.23; a 1.20
server has PodSecurityPolicy (policy/v1beta1) instead. This module expresses the Pod Security Standards'
``restricted`` profile (kubernetes.io/docs/concepts/security/pod-security-standards, the controls a PSP can check)
as a PSP, and lets a namespace labelled ``pod-security.kubernetes.io/enforce: restricted`` use only that one:

- :data:`RESTRICTED` — no privileged containers, no privilege escalation, ALL capabilities dropped, no host
  namespaces or ports, non-root users, restricted volume types, seccomp ``runtime/default``;
- :data:`PRIVILEGED` — anything; usable (RoleBinding to the namespace's ServiceAccounts) only in namespaces that
  are *not* labelled restricted (:func:`namespace_objects`);
- every ServiceAccount may use ``restricted`` (ClusterRoleBinding to ``system:serviceaccounts``).

PSP admission authorizes a pod when its creator *or* its ServiceAccount may ``use`` a policy; ``system:masters``
may use every policy, so a pod created as admin is never restricted. Pods in a restricted namespace must be
created by a ServiceAccount (a controller running with per-controller credentials, or impersonation) for the
check to bite — which is how workloads reach a real cluster.
"""

from __future__ import annotations

from typing import Any

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
PRIVILEGED, RESTRICTED = "kresume-privileged", "kresume-restricted"
APISERVER_FLAGS = ("--enable-admission-plugins=PodSecurityPolicy",)
CONTROLLER_MANAGER_FLAGS = ("--use-service-account-credentials=true",)
"""Controllers create pods as their own ServiceAccounts (not as the admin), so PSP sees who they are."""
_ALL_RANGE = [{"min": 0, "max": 65535}]


def policies() -> list[dict[str, Any]]:
    """The two PodSecurityPolicies and their ``use`` ClusterRoles, and the cluster-wide binding of restricted."""
    priv = {
        "apiVersion": "policy/v1beta1", "kind": "PodSecurityPolicy", "metadata": {"name": PRIVILEGED, "annotations": {
            # Without it a PSP forbids every seccomp profile (the chart's pods ask for RuntimeDefault).
            "seccomp.security.alpha.kubernetes.io/allowedProfileNames": "*"}},
        "spec": {"privileged": True, "allowPrivilegeEscalation": True, "allowedCapabilities": ["*"],
                 "volumes": ["*"], "hostNetwork": True, "hostPID": True, "hostIPC": True, "hostPorts": _ALL_RANGE,
                 "runAsUser": {"rule": "RunAsAny"}, "seLinux": {"rule": "RunAsAny"},
                 "supplementalGroups": {"rule": "RunAsAny"}, "fsGroup": {"rule": "RunAsAny"}},
    }  # fmt: skip
    restricted = {
        "apiVersion": "policy/v1beta1", "kind": "PodSecurityPolicy",
        "metadata": {"name": RESTRICTED, "annotations": {
            "seccomp.security.alpha.kubernetes.io/allowedProfileNames": "runtime/default",
            "seccomp.security.alpha.kubernetes.io/defaultProfileName": "runtime/default"}},
        "spec": {"privileged": False, "allowPrivilegeEscalation": False, "requiredDropCapabilities": ["ALL"],
                 "volumes": ["configMap", "emptyDir", "projected", "secret", "downwardAPI", "persistentVolumeClaim",
                             "csi", "ephemeral"],
                 "hostNetwork": False, "hostIPC": False, "hostPID": False,
                 "runAsUser": {"rule": "MustRunAsNonRoot"}, "seLinux": {"rule": "RunAsAny"},
                 "supplementalGroups": {"rule": "MustRunAs", "ranges": [{"min": 1, "max": 65535}]},
                 "fsGroup": {"rule": "MustRunAs", "ranges": [{"min": 1, "max": 65535}]},
                 "readOnlyRootFilesystem": False},
    }  # fmt: skip
    roles = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": f"psp:{n}"},
              "rules": [{"apiGroups": ["policy"], "resources": ["podsecuritypolicies"], "verbs": ["use"],
                         "resourceNames": [n]}]} for n in (PRIVILEGED, RESTRICTED)]  # fmt: skip
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": f"psp:{RESTRICTED}:all-serviceaccounts"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"psp:{RESTRICTED}"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                             "name": "system:serviceaccounts"}]}  # fmt: skip
    return [priv, restricted, *roles, binding]


def namespace_objects(name: str, *, restricted: bool, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The Namespace (labelled ``enforce: restricted`` when ``restricted``) and, when not restricted, the
    RoleBinding that lets its ServiceAccounts use the privileged policy."""
    ns_labels = {**(labels or {}), **({ENFORCE_LABEL: "restricted"} if restricted else {})}
    out: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace",
                                  "metadata": {"name": name, "labels": ns_labels}}]  # fmt: skip
    if not restricted:
        out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": f"psp:{PRIVILEGED}", "namespace": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                "name": f"psp:{PRIVILEGED}"},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                  "name": f"system:serviceaccounts:{name}"}]})  # fmt: skip
    return out


def restricted_pod_security_context() -> dict[str, Any]:
    """A pod ``securityContext`` that meets ``restricted`` (non-root, RuntimeDefault seccomp, an fsGroup)."""
    return {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip


def restricted_container_security_context() -> dict[str, Any]:
    """A container ``securityContext`` that meets ``restricted``."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}
