"""Run the operator as a real process against a cluster, for tests, benchmarks and demos.

Like ``kopf.testing.KopfRunner`` but in a separate process (``python -m kresume.operator``), with
what the chart would install made from the same facts: the RBAC rules (:data:`RBAC_RULES`, the
chart's least-privilege list), and a URL ``MutatingWebhookConfiguration`` pointing at
``https://127.0.0.1:<port>/inject-pod`` with our own CA (:func:`webhook_configuration`).
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kresume import contract
from kresume.devtools import _procs
from kresume.operator.handlers import INJECT_ID

#: The operator's ClusterRole rules (the chart grants the same; reasons in ``kresume.operator``).
RBAC_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": [contract.GROUP], "resources": [contract.POLICY_PLURAL], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [contract.GROUP], "resources": [contract.RUN_PLURAL],
     "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
    {"apiGroups": [contract.GROUP], "resources": [f"{contract.RUN_PLURAL}/status"], "verbs": ["get", "patch", "update"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]


def rbac_manifests(namespace: str, serviceaccount: str, name: str) -> list[dict[str, Any]]:
    """A ClusterRole with :data:`RBAC_RULES` bound to ``system:serviceaccount:<namespace>:<serviceaccount>``."""
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": RBAC_RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": serviceaccount, "namespace": namespace}]},
    ]


def webhook_configuration(name: str, port: int, ca_bundle: str, *, namespace_labels: dict[str, str] | None = None,
                          timeout_seconds: int = 5) -> dict[str, Any]:
    """The chart's MutatingWebhookConfiguration, with a URL client config for a webhook on 127.0.0.1.

    ``failurePolicy: Ignore`` (never block pods), ``objectSelector`` on the opt-in label,
    ``timeoutSeconds`` 5, CREATE of pods only; ``namespace_labels`` narrows it to test namespaces.
    """
    hook: dict[str, Any] = {
        "name": "inject-pod.kresume.dev",
        "clientConfig": {"url": f"https://127.0.0.1:{port}/{INJECT_ID}", "caBundle": ca_bundle},
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"],
                   "scope": "Namespaced"}],
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": timeout_seconds,
        "reinvocationPolicy": "Never",
        "objectSelector": {"matchLabels": {contract.LABEL_INJECT: "true"}},
    }
    if namespace_labels:
        hook["namespaceSelector"] = {"matchLabels": namespace_labels}
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name}, "webhooks": [hook]}


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (racy by nature; callers retry on bind errors)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OperatorProcess:
    """``python -m kresume.operator`` with the given args; output to ``log``.

    ``env`` must reach the cluster (``KUBECONFIG``). :meth:`start` waits until the webhook port
    completes a TLS handshake (kopf opens it only after scanning the cluster's resources).
    """

    args: list[str]
    env: dict[str, str]
    log: Path
    webhook_port: int
    ready_timeout: float = 60.0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> OperatorProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kresume.operator", *self.args], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env={**os.environ, **self.env}, start_new_session=True,
            )
        deadline = time.monotonic() + self.ready_timeout
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.webhook_port), timeout=1) as sock:
                    with ctx.wrap_socket(sock):
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"operator webhook not up on port {self.webhook_port} after {self.ready_timeout} s:\n{self.tail()}")

    def wait_serving(self, kubectl: Any, namespace: str, timeout: float = 90.0) -> float:
        """Create throwaway opted-in pods (``kresume.dev/run: probe``) until one comes back mutated:
        the webhook answers end to end (kopf scanned the cluster, the handler is warm). Returns the
        seconds it took. ``kubectl(*args, input=..., check=...)`` runs kubectl against the cluster."""
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < timeout:
            name = f"kresume-probe-{i}"
            i += 1
            probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": name, "namespace": namespace, "labels": {contract.LABEL_INJECT: "true"},
                "annotations": {contract.ANN_RUN: "probe"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]}}
            import json

            res = kubectl("create", "-o", "json", "-f", "-", input=json.dumps(probe), check=False)
            kubectl("delete", "pod", "-n", namespace, name, "--wait=false", check=False)
            if res.returncode == 0 and contract.ANN_INJECTED in (json.loads(res.stdout)["metadata"].get("annotations") or {}):
                return time.monotonic() - t0
            time.sleep(0.5)
        raise RuntimeError(f"webhook did not mutate a probe pod within {timeout} s:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group (kopf shuts down gracefully), SIGKILL after ``timeout`` s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        _procs.stop_group(self.proc, timeout)

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
