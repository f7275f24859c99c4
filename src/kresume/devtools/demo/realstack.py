"""The demo's stack on a real node: a :class:`~kresume.devtools.localcluster.LocalCluster` (control plane +
scheduler + containerd + kubelet) with kresume's and the trainer's images built locally, SeaweedFS, and the chart
installed with the Helm SDK — the operator runs in its container from kresume's image with the chart's RBAC —
then ``helm test``, the namespace, Secret and ``CheckpointPolicy default``.

Networking: every pod uses ``hostNetwork: true`` and talks to 127.0.0.1 only. The webhook is registered by URL
(``webhook.url=https://127.0.0.1:PORT/inject-pod``, the chart's CA and certificate) rather than through the chart's
Service: the API server reaches a Service-backed webhook through the Service's ClusterIP (no kube-proxy here, and
not a loopback address) or, with ``--enable-aggregator-routing``, through its Endpoints — and Endpoints refuse
loopback addresses (core/v1 validation: "may not be in the loopback range"), while a hostNetwork pod's only other
address is the machine's own interface, which the demo must never send traffic to. The Service still exists;
on a real cluster the chart's default (Service) applies. The operator reaches the API server at 127.0.0.1 through
``KUBERNETES_SERVICE_HOST``/``PORT`` (extraEnv), with its ServiceAccount token.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kresume import contract
from kresume.devtools import _procs, podsecurity
from kresume.devtools.demo import heartbeat
from kresume.devtools.demo.kubeletpods import KubeletPods
from kresume.devtools.demo.settings import DemoSettings
from kresume.devtools.demo.stack import Stack
from kresume.devtools.kubelet import build
from kresume.devtools.kubelet.node import default_cache
from kresume.devtools.kubelet import RealNodeSettings
from kresume.devtools.localcluster import LocalCluster, LocalClusterSettings

RELEASE, RELEASE_NAMESPACE = "kresume", "kresume-system"
SYSTEM_NODE, TRAIN_NODE = "127.0.0.1", "127.0.0.2"
"""The two nodes: the operator (and the chart's test pod) on the first, the Job's pods on the second, so a node
loss of the Job's node is what it is on a cluster: the control plane and the operator live on."""
NODE_KIND = "real kubelet"
"""How the summary names this node (the node agent's stack says ``node agent``)."""
DESCRIPTIONS = {"kill": "node loss (kubelet and containers killed, pods force-deleted)"}
"""Preemption descriptions that differ from the node agent's."""


class RealStack(Stack):
    """:class:`Stack` on a real kubelet (see the module docstring). ``node`` is a :class:`KubeletPods`."""

    node_kind = NODE_KIND
    descriptions = DESCRIPTIONS

    def trainer_log(self, runner: Any) -> Any:
        from kresume.devtools.demo.kubeletpods import CriLog

        return CriLog(runner.log_path("trainer"))

    def operator_log(self) -> Path | None:
        """The in-cluster operator's log so far (``kubectl logs --timestamps``: each line behind the container
        runtime's UTC time, which :func:`kresume.devtools.demo.timeline.parse_admissions` prefers), saved as
        ``operator.log`` in the work dir and registered as ``logs["operator"]``. None when it cannot be read
        (the time line's admission parts are then "-")."""
        if self.plane is None:
            return None
        try:
            res = self.plane.kubectl("logs", "-n", RELEASE_NAMESPACE, f"deploy/{RELEASE}", "--timestamps",
                                     check=False, timeout=60)  # fmt: skip
        except subprocess.TimeoutExpired:
            self.say("the operator's log could not be read: kubectl logs took over 60 s")
            return None
        if res.returncode != 0:
            self.say(f"the operator's log could not be read: {(res.stderr or res.stdout).strip()[-300:]}")
            return None
        path = self.work_dir / "operator.log"
        path.write_text(res.stdout)
        self.logs["operator"] = path
        return path

    def __init__(self, settings: DemoSettings, work_dir: Path, say: Callable[[str], None]) -> None:
        super().__init__(settings, work_dir, say)
        self.cluster: LocalCluster | None = None
        self.helm_test: dict[str, Any] = {}
        self.restricted: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    def start(self) -> None:
        t0 = time.time()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        cache = default_cache()
        log = self.work_dir / "build-images.log"
        self.logs["image builds"] = log
        self.say("building the images from their Dockerfiles without a registry (cached by inputs; cold: minutes)")
        with heartbeat.beat(self.say, f"building the images (log: {log})", log=log):
            kresume_img = build.kresume_image(cache, log)
            trainer_img = build.trainer_image(cache, log)
        self.timings["images_s"] = time.time() - t0
        self.say(f"images ready in {self.timings['images_s']:.0f} s: {kresume_img.ref}, {trainer_img.ref}")
        self.say(f"starting the control plane (etcd, kube-apiserver, controller-manager, scheduler) and two real "
                 f"nodes (containerd + kubelet v1.20): {SYSTEM_NODE} for the operator, {TRAIN_NODE} for the Job")
        self.cluster = LocalCluster(LocalClusterSettings(images=(kresume_img, trainer_img), nodes=(
            RealNodeSettings(address=SYSTEM_NODE), RealNodeSettings(address=TRAIN_NODE, private_logs=True))))
        self._stack.callback(self._stop_cluster)
        with heartbeat.beat(self.say, "starting the control plane and the nodes (image imports into containerd: "
                                      "~90 s each the first time)"):
            self.cluster.start()
        self.plane = self.cluster.plane
        nodes = self.cluster.nodes
        self.logs.update({"kubelets and containerds (one folder per node)": self.work_dir / "nodes",
                          "pods (CRI logs, one folder per pod)": self.work_dir / "pods"})  # fmt: skip
        self._stack.callback(self._save_node_logs)
        self.timings["cluster_s"] = time.time() - t0
        self.say("nodes Ready: " + ", ".join(f"{n.name} ({n.timings.get('ready_s', 0):.0f} s)" for n in nodes))
        self.api = self.plane.api_client()
        self._stack.callback(self.api.close)
        self._start_store()
        self._install_chart()
        self.say("installing the namespace, credentials Secret and CheckpointPolicy 'default'")
        self._install_policy()
        self.say("checking an opted-in pod in a namespace labelled PodSecurity restricted (PodSecurityPolicy)")
        self.restricted = self.check_restricted_namespace()
        self.say(f"restricted namespace: admitted under {self.restricted['enforced_by']} with "
                 f"{', '.join(self.restricted['containers'])}; a hostNetwork pod was refused")
        self.logs["sidecar logs (copied while each pod ran)"] = self.work_dir / "sidecar-logs"
        self.node = KubeletPods(self.plane, self.cluster.nodes, self.s.namespace, self.s.job_name, self.say,  # type: ignore[assignment]
                                mirror_dir=self.work_dir / "sidecar-logs")  # fmt: skip
        self._stack.callback(self.node.stop)  # type: ignore[union-attr]
        self.node.start()  # type: ignore[union-attr]
        self.timings["stack_s"] = time.time() - t0

    def _stop_cluster(self) -> None:
        if self.cluster is not None:
            problems = self.cluster.stop()
            if problems:
                self.say("clean-up problems: " + "; ".join(problems))

    def _save_node_logs(self) -> None:
        """Copy the kubelet's and containerd's logs and the pods' CRI logs into the work folder (before stop)."""
        assert self.cluster is not None
        for node in self.cluster.nodes:
            dest = self.work_dir / "nodes" / node.name
            dest.mkdir(parents=True, exist_ok=True)
            for path in node.logs.values():
                with contextlib.suppress(OSError):
                    shutil.copyfile(path, dest / path.name)
        pods = self.work_dir / "pods"
        pods.mkdir(exist_ok=True)
        from kresume.devtools.kubelet.cleanup import POD_LOG_DIR

        for logs in {POD_LOG_DIR, *(n.pod_log_dir for n in self.cluster.nodes)}:
            if not logs.is_dir():
                continue
            for entry in logs.iterdir():
                if entry.name.startswith(f"{self.s.namespace}_") or entry.name.startswith(f"{RELEASE_NAMESPACE}_"):
                    with contextlib.suppress(OSError):
                        shutil.copytree(entry, pods / entry.name, dirs_exist_ok=True)

    # --- the chart ------------------------------------------------------------------------------------------
    def chart_values(self, webhook_port: int, liveness_port: int, metrics_port: int) -> dict[str, Any]:
        """Values the demo installs the chart with (host network, free ports, the URL webhook, local image)."""
        assert self.plane is not None
        repo, tag = build.KRESUME_REF.rsplit(":", 1)
        api_port = self.plane.server.rsplit(":", 1)[1]
        return {
            "image": {"repository": repo, "tag": tag, "pullPolicy": "IfNotPresent"},
            "operator": {
                "hostNetwork": True, "namespaces": [], "logLevel": "INFO",
                "ports": {"webhook": webhook_port, "liveness": liveness_port, "metrics": metrics_port},
                "extraEnv": [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                             {"name": "KUBERNETES_SERVICE_PORT", "value": api_port},
                             {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"}],
                "readinessProbe": {"initialDelaySeconds": 1, "periodSeconds": 2},
                # On its own node, as on a real cluster: the node loss of the Job's node must not take it down.
                "nodeSelector": {"kubernetes.io/hostname": SYSTEM_NODE},
            },
            "webhook": {"url": f"https://127.0.0.1:{webhook_port}/inject-pod"},
        }  # fmt: skip

    def _install_chart(self) -> None:
        import helm_python as helm

        from kresume.devtools.chart import CHART

        assert self.plane is not None
        self.say(f"installing the chart with the Helm SDK: release {RELEASE} in {RELEASE_NAMESPACE}, operator in "
                 f"its container ({build.KRESUME_REF}), the chart's RBAC")
        values = self.chart_values(*_procs.free_ports(3))
        t0 = time.time()
        assert self.cluster is not None
        self.cluster.create_namespace(RELEASE_NAMESPACE)  # its ServiceAccounts may run hostNetwork pods
        cfg = helm.Config(kubeconfig_path=str(self.plane.kubeconfig), namespace=RELEASE_NAMESPACE)
        self._stack.callback(cfg.close)
        cfg.install(str(CHART), RELEASE, values, namespace=RELEASE_NAMESPACE, create_namespace=True)
        self._wait_operator(timeout=240)
        self.timings["helm_install_s"] = time.time() - t0
        self.say(f"operator Deployment ready ({self.timings['helm_install_s']:.0f} s); running `helm test`")
        t0 = time.time()
        try:
            res = cfg.test(RELEASE, timeout=180, logs=True)
        except helm.HelmReleaseError as exc:
            raise RuntimeError(f"helm test {RELEASE} failed: {exc}") from exc
        self.helm_test = {"passed": True, "seconds": round(time.time() - t0, 1),
                          "logs": str(res.get("logs", "")).strip()}  # fmt: skip
        self.say(f"helm test passed in {self.helm_test['seconds']:.0f} s: {self.helm_test['logs'][-160:]}")
        self.operator = _OperatorLogs(self.plane)

    def _wait_operator(self, timeout: float) -> None:
        """Until the operator pod is Ready; fails at once (with its log) when it crash-loops or cannot start."""
        from kresume.devtools.demo.kubeletpods import START_FAILURES

        assert self.plane is not None
        deadline = time.time() + timeout
        status: dict[str, Any] = {}
        while time.time() < deadline:
            res = self.plane.kubectl("get", "pods", "-n", RELEASE_NAMESPACE, "-l",
                                     "app.kubernetes.io/component=operator", "-o", "json", check=False)  # fmt: skip
            items = json.loads(res.stdout)["items"] if res.returncode == 0 else []
            for pod in items:
                status = pod.get("status") or {}
                conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
                if conds.get("Ready") == "True":
                    return
                for c in status.get("containerStatuses") or []:
                    waiting = (c.get("state") or {}).get("waiting") or {}
                    if c.get("restartCount", 0) >= 2 or waiting.get("reason") in START_FAILURES - {"CrashLoopBackOff"}:
                        log = self.plane.kubectl("logs", "-n", RELEASE_NAMESPACE, pod["metadata"]["name"],
                                                 "--previous", "--tail=20", check=False)  # fmt: skip
                        raise RuntimeError(f"the operator pod does not start ({waiting.get('reason') or 'restarts'}"
                                           f"): {(log.stdout or log.stderr).strip()[-1500:]}")
            time.sleep(1)
        raise RuntimeError(f"the operator pod is not Ready after {timeout:.0f} s: {json.dumps(status)[:800]}")

    def _install_policy(self, namespace: str | None = None) -> None:
        """The credentials Secret and ``CheckpointPolicy default`` in ``namespace`` (default: the demo's, created
        here with the privileged policy allowed: its pods use the host network)."""
        assert self.plane is not None and self.cluster is not None
        ns = namespace or self.s.namespace
        if namespace is None:
            self.cluster.create_namespace(ns)
        policy: dict[str, Any] = {
            "storage": self.storage, "storageOptions": self.storage_options, "retention": {"keepLast": 5},
            # Pods share the host network: the sidecar's metrics port must not collide.
            "sidecar": {"extraEnv": [{"name": "KRESUME_METRICS_PORT", "value": "0"}], "graceSeconds": 8},
        }  # fmt: skip
        self.kubectl_apply(*self._policy_objects(ns, policy))

    # --- PodSecurity restricted ----------------------------------------------------------------------------
    def check_restricted_namespace(self, timeout: float = 180.0) -> dict[str, Any]:
        """An opted-in pod in a namespace labelled ``pod-security.kubernetes.io/enforce: restricted`` (enforced by
        PodSecurityPolicy, :mod:`kresume.devtools.podsecurity`) starts with the injected containers.

        The pod is created as the namespace's ``default`` ServiceAccount (impersonation: admin may use every
        policy), on the pod network (``restricted`` forbids hostNetwork; nothing is sent to its address: the
        sidecar only retries the store at its own loopback). First the same pod with ``hostNetwork: true`` must be
        refused (the check bites). Returns what happened; raises RuntimeError when a step fails.
        """
        assert self.cluster is not None and self.plane is not None
        t0 = time.time()
        ns = f"{self.s.namespace}-restricted"
        self.cluster.create_namespace(ns, restricted=True)
        self._install_policy(ns)
        sa = f"system:serviceaccount:{ns}:default"
        self.kubectl_apply(
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "create-pods", "namespace": ns},
             "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "delete"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "create-pods", "namespace": ns},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "create-pods"},
             "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]})  # fmt: skip
        self._wait_for_serviceaccount(ns, timeout)
        pod = restricted_pod(ns)
        bad = json.loads(json.dumps(pod))
        bad["spec"]["hostNetwork"] = True
        res = self.plane.kubectl("create", f"--as={sa}", "--dry-run=server", "-f", "-", input=json.dumps(bad),
                                 check=False)  # fmt: skip
        if res.returncode == 0 or "PodSecurityPolicy" not in res.stderr:
            raise RuntimeError(f"a hostNetwork pod in restricted namespace {ns} was not refused: {res.stderr or res.stdout}")
        refused = res.stderr.strip().splitlines()[-1][:300]
        self.plane.kubectl("create", f"--as={sa}", "-f", "-", input=json.dumps(pod))
        deadline = time.time() + timeout
        got: dict[str, Any] = {}
        while time.time() < deadline:
            got = json.loads(self.plane.kubectl("get", "pod", "-n", ns, "restricted-check", "-o", "json").stdout)
            states = {c["name"]: c.get("state", {}) for c in got.get("status", {}).get("containerStatuses") or []}
            if len(states) >= 2 and all("running" in st for st in states.values()):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"the restricted pod did not start with its containers in {timeout:.0f} s: "
                               f"{json.dumps(got.get('status', {}))[:600]}")
        containers = [c["name"] for c in got["spec"]["containers"]]
        psp = got["metadata"].get("annotations", {}).get("kubernetes.io/psp", "")
        self.plane.kubectl("delete", "pod", "-n", ns, "restricted-check", "--grace-period=0", "--force", check=False)
        out = {"namespace": ns, "enforced_by": f"PodSecurityPolicy {psp}", "containers": containers,
               "hostNetwork_pod_refused": refused, "seconds": round(time.time() - t0, 1)}  # fmt: skip
        if psp != podsecurity.RESTRICTED or contract.SIDECAR_CONTAINER_NAME not in containers:
            raise RuntimeError(f"restricted check: admitted under {psp!r} with containers {containers}")
        return out

    def _wait_for_serviceaccount(self, ns: str, timeout: float) -> None:
        assert self.plane is not None
        deadline = time.time() + timeout
        while time.time() < deadline:
            res = self.plane.kubectl("get", "sa", "-n", ns, "default", "-o", "jsonpath={.secrets[0].name}", check=False)
            if res.returncode == 0 and res.stdout.strip():
                return
            time.sleep(0.5)
        raise RuntimeError(f"ServiceAccount {ns}/default got no token in {timeout:.0f} s")

    # --- the Job ---------------------------------------------------------------------------------------------
    def job_manifest(self, train_script: Path) -> dict[str, Any]:
        """The node agent's Job, run from the trainer image (``/app/train.py``) on the host network."""
        job = super().job_manifest(train_script)
        spec = job["spec"]["template"]["spec"]
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
        spec["nodeSelector"] = {"kubernetes.io/hostname": TRAIN_NODE}
        c = spec["containers"][0]
        c["image"], c["imagePullPolicy"] = build.TRAINER_REF, "IfNotPresent"
        if not self.s.trainer_command:
            c["command"] = ["python", "/app/train.py"]
        return job


def restricted_pod(namespace: str) -> dict[str, Any]:
    """An opted-in pod that meets PodSecurity ``restricted``: the trainer image sleeping, non-root, no host
    network, RuntimeDefault seccomp, ALL capabilities dropped."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "restricted-check", "namespace": namespace, "labels": {contract.LABEL_INJECT: "true"},
        "annotations": {contract.ANN_RUN: "restricted-check"}},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2,
                 "securityContext": podsecurity.restricted_pod_security_context(),
                 "containers": [{"name": "trainer", "image": build.TRAINER_REF, "imagePullPolicy": "IfNotPresent",
                                 "command": ["python", "-c", "import time; time.sleep(3600)"],
                                 "securityContext": podsecurity.restricted_container_security_context()}]}}  # fmt: skip


class _OperatorLogs:
    """``tail()`` of the operator pod's log (what the node agent's stack offers from its operator process)."""

    def __init__(self, plane: Any) -> None:
        self.plane = plane

    def tail(self, lines: int = 40) -> str:
        res = self.plane.kubectl("logs", "-n", RELEASE_NAMESPACE, "deploy/" + RELEASE, f"--tail={lines}", check=False)
        return res.stdout or res.stderr

    def stop(self) -> None:
        """The operator is stopped with the cluster."""
