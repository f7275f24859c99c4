"""Everything the demo starts, in order, and stops in reverse: control plane, object store, CRDs, namespace,
credentials Secret, ``CheckpointPolicy default``, the operator process behind a URL webhook with our own CA,
and the local node agent. :class:`Stack` is a context manager; a failed start stops what it started.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from kresume import contract
from kresume.devtools import _procs, pki
from kresume.devtools.cluster import ControlPlane, ControlPlaneSettings
from kresume.devtools.demo.settings import DemoSettings
from kresume.devtools.node import NodeAgent, NodeSettings

DEMO_BUCKET = "kresume-demo"
CREDENTIALS_SECRET = "kresume-store-credentials"
OPERATOR_SA = "kresume-operator"
NODE_NAME = "kresume-dev-node"


class Stack:
    """The running pieces; attributes are set by :meth:`start` (``plane``, ``store_server``, ``storage``,
    ``storage_options``, ``store_env``, ``operator``, ``node``, ``logs``: name -> log path)."""

    node_kind = "node agent"
    """How the summary names where the pods ran (:class:`~kresume.devtools.demo.realstack.RealStack`: ``real
    kubelet``)."""
    descriptions: dict[str, str] = {}
    """Preemption descriptions that differ from :data:`kresume.devtools.demo.chaos.DESCRIPTIONS`."""

    def trainer_log(self, runner: Any) -> Any:
        """The reader of ``runner``'s trainer log (a plain file here; CRI format on a real node)."""
        from kresume.devtools.demo.observe import TrainerLog

        return TrainerLog(runner.log_path("trainer"))

    def operator_log(self) -> Path | None:
        """The operator's log file as of now (the time line's admissions); here the operator process writes it
        as it runs. None when there is none."""
        return self.logs.get("operator")

    def __init__(self, settings: DemoSettings, work_dir: Path, say: Callable[[str], None]) -> None:
        self.s, self.work_dir, self.say = settings, work_dir, say
        self.plane: ControlPlane | None = None
        self.store_server: Any = None
        self.operator: Any = None
        self.node: NodeAgent | None = None
        self.api: Any = None
        self.storage = ""
        self.storage_options: dict[str, Any] = {}
        """Options the policy carries (no secrets: those are in the credentials Secret)."""
        self.client_options: dict[str, Any] = {}
        """Options the demo itself uses to read the store (secrets included)."""
        self.store_env: dict[str, str] = {}
        self.logs: dict[str, Path] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop everything started, newest first (node → operator → store → control plane)."""
        self._stack.close()

    # --- start ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every piece (see module docstring); raises the first failure with its log tail."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.say("starting the control plane (etcd, kube-apiserver, kube-controller-manager)")
        self.plane = ControlPlane(ControlPlaneSettings())
        self._stack.callback(self.plane.stop)
        self.plane.start()
        saved = self.work_dir / "control-plane"
        self.logs.update({f"control plane: {k}": saved / v.name for k, v in self.plane.logs.items()})
        self._stack.callback(self._save_plane_logs, saved)  # runs before plane.stop (LIFO)
        self.api = self.plane.api_client()
        self._stack.callback(self.api.close)
        self._start_store()
        self.say("installing CRDs, namespace, credentials Secret and CheckpointPolicy 'default'")
        self._install()
        self._start_operator()
        self.say("starting the local node agent (containers run as local processes; images are ignored)")
        self.node = NodeAgent(self.api, NodeSettings(
            node_name=NODE_NAME, namespaces=(self.s.namespace,), work_dir=self.work_dir / "node",
            log_dir=self.work_dir / "pods"))  # fmt: skip
        self._stack.callback(self.node.stop)
        self.node.start()
        self.logs["pods (one folder per pod, one log per container)"] = self.work_dir / "pods"

    def _save_plane_logs(self, dest: Path) -> None:
        assert self.plane is not None
        dest.mkdir(parents=True, exist_ok=True)
        for path in self.plane.logs.values():
            with contextlib.suppress(OSError):
                shutil.copyfile(path, dest / path.name)

    def warm_up(self, run: str, timeout: float = 120.0) -> float:
        """Server-side dry-run creations of an opted-in pod of ``run`` until the webhook injects the sidecar.

        A dry run goes through admission (the webhook declares ``sideEffects: None``) but stores nothing, so the
        operator's first, cold store lookup happens here and not at the Job's first pod. Returns the seconds it
        took; raises RuntimeError with the operator's log tail after ``timeout``.
        """
        assert self.plane is not None and self.operator is not None
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "generateName": "warm-up-", "namespace": self.s.namespace, "labels": {contract.LABEL_INJECT: "true"},
            "annotations": {contract.ANN_RUN: run}}, "spec": {"restartPolicy": "Never", "containers": [
                {"name": "trainer", "image": "warm-up", "command": ["true"]}]}}  # fmt: skip
        t0 = time.time()
        while time.time() - t0 < timeout:
            res = self.plane.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(pod),
                                     check=False)  # fmt: skip
            if res.returncode == 0:
                names = [c["name"] for c in json.loads(res.stdout)["spec"]["containers"]]
                if contract.SIDECAR_CONTAINER_NAME in names:
                    return time.time() - t0
            time.sleep(1)
        raise RuntimeError(f"the webhook injected no sidecar within {timeout:.0f} s; operator log:\n"
                           f"{self.operator.tail(40)}")

    def _start_store(self) -> None:
        if self.s.store:
            self.storage = self.s.store.rstrip("/")
            self.storage_options = dict(self.s.store_options)
            self.client_options = dict(self.s.store_options)
            self.say(f"using the store {self.storage}")
            if self.storage.startswith("file://"):
                Path(self.storage[len("file://"):]).mkdir(parents=True, exist_ok=True)
            return
        from kresume.devtools import objstores

        self.say("starting SeaweedFS (a local S3 server)")
        # Its own temp dir (not under work_dir): its unix sockets need a path under 108 bytes.
        server = objstores.SeaweedFSServer()
        self._stack.callback(server.stop)
        server.start()
        self._stack.callback(self._save_store_log, server)  # runs before server.stop (LIFO)
        server.create_bucket(DEMO_BUCKET)
        self.store_server = server
        self.storage = server.url(DEMO_BUCKET, "runs")
        opts = server.storage_options
        self.storage_options = {k: v for k, v in opts.items() if k not in ("key", "secret")}
        self.client_options = opts
        self.store_env = server.env
        self.logs["seaweedfs"] = self.work_dir / "seaweedfs.log"

    def _save_store_log(self, server: Any) -> None:
        if server.tmpdir is not None:
            with contextlib.suppress(OSError):
                shutil.copyfile(server.tmpdir / "server.log", self.work_dir / "seaweedfs.log")

    def kubectl_apply(self, *objs: dict[str, Any]) -> None:
        """``kubectl apply -f -`` of ``objs`` as admin."""
        assert self.plane is not None
        self.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))

    def _install(self) -> None:
        from kresume import crds

        assert self.plane is not None
        for crd in crds.all_crds():
            self.kubectl_apply(crd)
        for crd in crds.all_crds():
            self.plane.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}",
                               "--timeout=60s")  # fmt: skip
        ns = self.s.namespace
        objs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}]
        # Pods share the host network on the dev node: the sidecar's metrics port must not collide. The sidecar's
        # grace period is the one the webhook derives from the Job's terminationGracePeriodSeconds, unless set.
        sidecar: dict[str, Any] = {"extraEnv": [{"name": "KRESUME_METRICS_PORT", "value": "0"}]}
        if self.s.ranks > 1:  # DCP shards have no footer: rank > 0 judges them by quiet time (settings docstring)
            sidecar["extraEnv"].append({"name": "KRESUME_SETTLE_SECONDS", "value": str(self.s.settle_seconds)})
        if self.s.sidecar_grace_seconds is not None:
            sidecar["graceSeconds"] = self.s.sidecar_grace_seconds
        policy: dict[str, Any] = {
            "storage": self.storage, "storageOptions": self.storage_options,
            "retention": {"keepLast": 5}, "sidecar": sidecar,
        }  # fmt: skip
        self.kubectl_apply(*objs, *self._policy_objects(ns, policy))

    def _policy_objects(self, ns: str, policy: dict[str, Any]) -> list[dict[str, Any]]:
        """``CheckpointPolicy default`` in ``ns`` with ``policy`` as its spec, and, for an S3 store with keys, the
        credentials Secret it names (``policy`` gets ``credentialsSecret``)."""
        objs: list[dict[str, Any]] = []
        if self.store_env:
            keys = {k: self.store_env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
            objs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": CREDENTIALS_SECRET, "namespace": ns},
                         "stringData": keys})  # fmt: skip
            policy["credentialsSecret"] = CREDENTIALS_SECRET
        objs.append({"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.POLICY_KIND,
                     "metadata": {"name": contract.DEFAULT_POLICY_NAME, "namespace": ns}, "spec": policy})
        return objs

    def _start_operator(self) -> None:
        from kresume.devtools import chart
        from kresume.devtools.operator_process import OperatorProcess

        assert self.plane is not None
        self.say("starting the operator (a separate process) and registering its webhook")
        ns = self.s.namespace
        self.kubectl_apply(*chart.rbac_manifests(ns, OPERATOR_SA, "kresume-demo-operator"))
        kubeconfig = self.plane.make_impersonating_kubeconfig(ns, OPERATOR_SA, self.work_dir / "operator.kubeconfig")
        tls = pki.make_webhook_tls(self.work_dir / "webhook-tls")
        port, live = _procs.free_ports(2)
        self.logs["operator"] = self.work_dir / "operator.log"
        self.operator = OperatorProcess(
            args=["--webhook-host", "127.0.0.1", "--webhook-port", str(port), "--tls-cert-file", str(tls.cert_file),
                  "--tls-key-file", str(tls.key_file), "--namespace", ns, "--liveness-port", str(live),
                  "--metrics-port", "0", "--standalone", "--sidecar-image", "kresume:demo"],
            env={**self.plane.env(), "KUBECONFIG": str(kubeconfig), **_store_env_for_operator(self.store_env)},
            log=self.logs["operator"], webhook_port=port, ready_timeout=180,
        )  # fmt: skip
        self._stack.callback(self.operator.stop)
        self.operator.start()
        self.kubectl_apply(chart.webhook_configuration("kresume-demo", port, tls.ca_bundle))

    # --- the Job ----------------------------------------------------------------------------------------
    def job_manifest(self, train_script: Path) -> dict[str, Any]:
        """The demo's batch/v1 Job: the example Lightning trainer, opted in with the kresume label."""
        s = self.s
        args = ["--max-steps", str(s.planned_steps), "--every-n-steps", str(s.every_n_steps),
                "--step-seconds", str(s.step_seconds), "--report-every", "1", "--save-top-k", "2",
                "--hidden", str(s.hidden)]  # fmt: skip
        return {
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": s.job_name, "namespace": s.namespace},
            "spec": {"backoffLimit": 100, "template": {
                "metadata": {"labels": {contract.LABEL_INJECT: "true"}},
                "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": s.grace_seconds,
                         "containers": [{"name": "trainer", "image": "kresume-demo/trainer:local",
                                         "command": list(s.trainer_command) or ["python", str(train_script)],
                                         "args": args, "env": self.trainer_env()}]},
            }},
        }  # fmt: skip

    def trainer_env(self) -> list[dict[str, Any]]:
        """The trainer container's env for reading the store itself (an injected s3:// URL needs the endpoint
        and keys; other backends their ``FSSPEC_<PROTOCOL>`` options)."""
        env: list[dict[str, Any]] = []
        if self.store_env:  # Lightning reads the injected s3:// URL itself: it needs the endpoint and keys
            env = [
                {"name": key, "valueFrom": {"secretKeyRef": {"name": CREDENTIALS_SECRET, "key": key}}}
                for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            ] + [{"name": k, "value": self.store_env[k]}
                 for k in ("AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3", "AWS_EC2_METADATA_DISABLED")]  # fmt: skip
        elif self.storage_options:
            env = [{"name": f"FSSPEC_{self.storage.split('://')[0].upper()}",
                    "value": json.dumps(self.storage_options)}]  # fmt: skip
        return env


def _store_env_for_operator(store_env: dict[str, str]) -> dict[str, str]:
    # The operator reads credentials from the policy's Secret; only keep botocore from probing EC2 metadata.
    return {"AWS_EC2_METADATA_DISABLED": "true"} if store_env else {}

