"""The operator as a real process against the session's control plane, installed the way the chart installs it.

``start_operator(...)`` (a context manager) binds the chart's ClusterRole to a ServiceAccount the operator
impersonates (so a missing permission fails the test), writes its kubeconfig, starts ``python -m
kresume.operator`` (:class:`kresume.devtools.operator_process.OperatorProcess`) and stops it afterwards.
``register_webhook(...)`` installs the chart's MutatingWebhookConfiguration pointing at it. Small helpers
for the tests that drive it: :func:`wait_for`, :func:`kget`, :func:`apply`, :func:`post_review`.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import re
import ssl
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jsonpatch
import pytest
import yaml

from kresume import contract, crds
from kresume.devtools import _procs, chart, pki
from kresume.devtools.cluster import ControlPlane
from kresume.devtools.operator_process import OperatorProcess

T = TypeVar("T")
OPERATOR_SA = "kresume-operator"


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.3) -> T:
    """Poll ``fn`` until it returns something truthy (exceptions count as "not yet"); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last error
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


def kget(cp: ControlPlane, *args: str) -> Any:
    """``kubectl get ... -o json`` as a dict."""
    return json.loads(cp.kubectl("get", *args, "-o", "json").stdout)


def apply(cp: ControlPlane, *objs: dict[str, Any]) -> None:
    """``kubectl apply`` the objects."""
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))


@pytest.fixture(scope="session")
def crds_installed(control_plane: ControlPlane) -> None:
    """kresume's CRDs on the session's control plane, Established."""
    for crd in crds.all_crds():
        apply(control_plane, crd)
    for crd in crds.all_crds():
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}",
                              "--timeout=60s")


@dataclass
class RunningOperator:
    """A started operator: its process, webhook port and the CA (PEM file + base64 bundle) that verifies it."""

    proc: OperatorProcess
    port: int
    ca_file: Path
    ca_bundle: str

    @property
    def log(self) -> Path:
        return self.proc.log

    def tail(self, lines: int = 60) -> str:
        return self.proc.tail(lines)

    def admissions(self, namespace: str, key: str) -> list[tuple[str, str]]:
        """(outcome, checkpoint source) of each admission of ``namespace/key`` in the log, in order."""
        line = re.compile(rf"inject-pod {re.escape(namespace)}/{re.escape(key)}: (?P<outcome>\w+) "
                          rf"\(checkpoint from (?P<src>[\w-]+)\)")
        text = self.log.read_text(errors="replace").splitlines()
        return [(m["outcome"], m["src"]) for m in map(line.search, text) if m]


@contextlib.contextmanager
def start_operator(cp: ControlPlane, workdir: Path, *, namespaces: Sequence[str], args: Sequence[str] = (),
                   dev_tls: bool = False, ready_timeout: float = 120.0) -> Iterator[RunningOperator]:
    """Run the operator for ``namespaces`` (kopf patterns) as ServiceAccount ``kresume-operator`` with the
    chart's ClusterRole. ``dev_tls``: start it without TLS files (it makes its own self-signed pair; the path is
    read from its log), else with a pair from :func:`kresume.devtools.pki.make_webhook_tls`."""
    tag = uuid.uuid4().hex[:6]
    role = f"kresume-operator-{tag}"
    home = namespaces[0] if "*" not in namespaces[0] else "default"
    apply(cp, *chart.rbac_manifests(home, OPERATOR_SA, role))
    kubeconfig = cp.make_impersonating_kubeconfig(home, OPERATOR_SA, workdir / f"operator-{tag}.kubeconfig")
    port, = _procs.free_ports(1)
    argv = ["--webhook-host", "127.0.0.1", "--webhook-port", str(port), "--liveness-port", "0", "--metrics-port",
            "0", "--standalone", "--sidecar-image", "kresume:test"]
    tls = None
    if not dev_tls:
        tls = pki.make_webhook_tls(workdir / f"tls-{tag}")
        argv += ["--tls-cert-file", str(tls.cert_file), "--tls-key-file", str(tls.key_file)]
    for ns in namespaces:
        argv += ["--namespace", ns]
    proc = OperatorProcess([*argv, *args], env={**cp.env(), "KUBECONFIG": str(kubeconfig)},
                           log=workdir / f"operator-{tag}.log", webhook_port=port, ready_timeout=ready_timeout)
    try:
        proc.start()
        if tls is not None:
            ca_file, ca_pem = tls.ca_file, tls.ca_pem
        else:
            found = re.search(r"caBundle: (\S+)", proc.log.read_text(errors="replace"))
            assert found, f"no dev certificate path in the operator log:\n{proc.tail()}"
            ca_file = Path(found.group(1))
            ca_pem = ca_file.read_bytes()
        yield RunningOperator(proc, port, ca_file, base64.b64encode(ca_pem).decode())
    finally:
        proc.stop()
        print(proc.tail(200))
        cp.kubectl("delete", "clusterrolebinding,clusterrole", role, "--ignore-not-found", check=False)


@contextlib.contextmanager
def register_webhook(cp: ControlPlane, op: RunningOperator, namespace_labels: dict[str, str],
                     timeout_seconds: int = 10) -> Iterator[str]:
    """The chart's webhook configuration for ``op``, narrowed to namespaces with ``namespace_labels``.

    ``timeout_seconds`` 10 (the API maximum) instead of the chart's 5: this shared 2-core machine runs at load
    10+, where a busy operator can miss 5 s; the pod would then be (correctly) admitted unmutated.
    """
    name = f"kresume-{uuid.uuid4().hex[:6]}"
    apply(cp, chart.webhook_configuration(name, op.port, op.ca_bundle, timeout_seconds=timeout_seconds,
                                          namespace_labels=namespace_labels))
    try:
        yield name
    finally:
        cp.kubectl("delete", "mutatingwebhookconfiguration", name, "--ignore-not-found", check=False)


@pytest.fixture
def webhook_operator(control_plane: ControlPlane, k8s_namespace: str, crds_installed: None, tmp_path: Path
                     ) -> Iterator[RunningOperator]:
    """The operator for ``k8s_namespace`` behind the chart's webhook configuration and RBAC, serving end to end
    (a probe pod came back mutated). The namespace gets a ``default`` policy on a ``file://`` store, which
    tests replace with their own."""
    cp, ns = control_plane, k8s_namespace
    cp.kubectl("label", "namespace", ns, f"kresume-test={ns}")
    with start_operator(cp, tmp_path, namespaces=[ns], args=["--refresh-interval", "2"]) as op, \
            register_webhook(cp, op, {"kresume-test": ns}):
        apply(cp, {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.POLICY_KIND,
                   "metadata": {"name": "default", "namespace": ns},
                   "spec": {"storage": f"file://{tmp_path}/probe-store"}})
        print(f"webhook serving after {op.proc.wait_serving(cp.kubectl, ns):.1f} s")
        yield op


def s3_policy(cp: ControlPlane, ns: str, base: str, server: Any, *, name: str = "default",
              extra: dict[str, Any] | None = None) -> None:
    """A policy on an S3 server of the objstores fixtures with its keys in a credentials Secret (as users do)."""
    opts = server.storage_options
    apply(cp,
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-s3-creds", "namespace": ns},
           "stringData": {"AWS_ACCESS_KEY_ID": opts["key"], "AWS_SECRET_ACCESS_KEY": opts["secret"]}},
          {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.POLICY_KIND,
           "metadata": {"name": name, "namespace": ns},
           "spec": {"storage": base, "credentialsSecret": f"{name}-s3-creds", **(extra or {}),
                    "storageOptions": {"client_kwargs": opts["client_kwargs"],
                                       "config_kwargs": opts["config_kwargs"]}}})


def review(pod: dict[str, Any], namespace: str, *, dry_run: bool = False, uid: str | None = None) -> dict[str, Any]:
    """An admission.k8s.io/v1 AdmissionReview of a pod CREATE, as kube-apiserver sends it."""
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:job-controller"},
            "object": pod, "oldObject": None, "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def post_review(op: RunningOperator, body: dict[str, Any] | bytes, *, path: str = "/inject-pod",
                timeout: float = 15.0) -> dict[str, Any]:
    """POST an AdmissionReview to the operator over HTTPS (verified against its CA, as kube-apiserver does)."""
    ctx = ssl.create_default_context(cafile=str(op.ca_file))
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"https://127.0.0.1:{op.port}{path}", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    with opener.open(req, timeout=timeout) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


def patched(rev: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """The pod the API server would store: the review's object with the answer's JSON patch applied."""
    resp = answer["response"]
    assert resp["uid"] == rev["request"]["uid"]
    assert resp["allowed"] is True, resp
    pod = copy.deepcopy(rev["request"]["object"])
    if "patch" not in resp:
        return pod
    assert resp["patchType"] == "JSONPatch"
    out: dict[str, Any] = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(resp["patch"])))
    return out


def env_of(pod: dict[str, Any], container: str = "trainer") -> dict[str, Any]:
    """``{name: value}`` of a container's env."""
    c = next(c for c in pod["spec"]["containers"] if c["name"] == container)
    return {e["name"]: e.get("value") for e in c.get("env", [])}
