"""The local node agent: a Node object, pod binding, and a :class:`PodRunner` per pod bound to it.

A development tool standing in for kubelet + scheduler on a machine without them (the control plane of
:mod:`kresume.devtools.cluster` has neither). It

- registers a Node (``Ready``, capacity of this machine) and renews its ``Ready`` heartbeat every
  ``heartbeat_seconds`` (the 1.20 node lifecycle controller marks a Node ``Unknown`` after 40 s without one
  and evicts its pods about 5 min later, ``../shared/k8s/README.md``);
- binds pending pods without ``spec.nodeName`` (in ``namespaces``, or all) to itself through ``pods/binding``,
  and runs every pod whose ``spec.nodeName`` is this node (see :mod:`kresume.devtools.node.podrunner`);
- finishes graceful deletions (``kubectl delete pod``): SIGTERM, grace, SIGKILL, delete with grace 0;
- :meth:`NodeAgent.preempt` does what a node does to a preempted pod; ``kill=True`` is a SIGKILL without grace.

Images are ignored: containers run as local processes from ``command``/``args`` with the pod's env, and
``PATH`` starts with this Python's ``bin`` folder so ``python`` and ``kresume`` are this venv's. Pods share the
host network (podIP = 127.0.0.1). Use it for local runs only.

As root, each container runs in a private mount namespace with its ``volumeMounts`` and a private ``/tmp`` (a
folder of its pod's sandbox). The host file system is the container's image here, so the private ``/tmp`` keeps
the host entries ``/tmp/<name>`` the container needs visible at the same path: those holding its command and the
command's ``#!`` interpreters, PATH/PYTHONPATH/HOME entries, workingDir, absolute arguments, and this agent's own
Python (``sys.prefix``, ``sys.path``: a checkout under ``/tmp`` with its venv and editable sources). Resolving
only the command before hiding would not do: the interpreter then imports from the venv and the checkout. A
command that is not found is a ``StartError`` (exit code 128) at once, as kubelet reports it.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kresume.devtools.node import runtime, status
from kresume.devtools.node.podrunner import NodeContext, PodRunner, StopRequest

log = logging.getLogger("kresume.devtools.node")
NODE_LABEL = "kresume.dev/dev-node"
"""Label on Nodes registered by this agent (value ``"true"``)."""
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class NodeSettings:
    """How a :class:`NodeAgent` runs. Times are seconds."""

    node_name: str = "kresume-dev-node"
    """Name of the Node object."""
    namespaces: tuple[str, ...] = ()
    """Bind unassigned pods only in these namespaces; empty = every namespace. Pods whose ``spec.nodeName``
    already names this node run wherever they are."""
    work_dir: Path | None = None
    """Parent of pod sandboxes (emptyDir folders, private /tmp, HOME); removed per pod when it ends. None: a
    temporary folder removed at :meth:`NodeAgent.stop`."""
    log_dir: Path | None = None
    """Where container logs are kept (``<ns>_<pod>_<uid8>/<container>.log``), never removed. None:
    ``<work_dir>/logs``."""
    heartbeat_seconds: float = 10.0
    """Period of the Node ``Ready`` heartbeat (must stay well under the 40 s node-monitor grace period)."""
    resync_seconds: float = 5.0
    """Full pod relist period; watch events trigger a relist at once."""
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)
    """First entry of containers' PATH (this venv's ``bin``: ``python``, ``kresume``)."""
    mount_namespace: bool | None = None
    """Run containers in private mount namespaces (volumeMounts at their mountPath); None: when root."""
    delete_node_on_stop: bool = True
    """Delete the Node object at :meth:`NodeAgent.stop`."""
    host_root: Path | None = None
    """``hostPath`` volumes are resolved under this folder (``/var/lib/x`` → ``<host_root>/var/lib/x``), so two
    agents on one machine have two "node disks" (the node-local cache tests); None: the real host paths."""
    shutdown_grace: float = 3.0
    """Grace given to running containers at :meth:`NodeAgent.stop` before SIGKILL."""


class NodeAgent:
    """See the module docstring. Context manager; ``start()``/``stop()``; thread-safe public methods.

    ``api_client`` is a ``kubernetes.client.ApiClient`` with rights on nodes, pods, pods/binding,
    pods/status, secrets and configmaps.
    """

    def __init__(self, api_client: Any, settings: NodeSettings | None = None) -> None:
        import kubernetes.client as k

        self.settings = s = settings or NodeSettings()
        self.api = api_client
        self.core = k.CoreV1Api(api_client)
        self._own_work_dir = s.work_dir is None
        self.work_dir = s.work_dir or Path(tempfile.mkdtemp(prefix="kresume-node-"))
        self.log_dir = s.log_dir or self.work_dir / "logs"
        self.runners: dict[str, PodRunner] = {}
        self.first_seen: dict[str, float] = {}
        """Pod UID -> epoch seconds of the first pod listing that held it (an upper bound of its admission)."""
        """Pod UID -> runner, for every pod this agent ran (finished ones included)."""
        self._lock = threading.RLock()
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.spawner: runtime.Spawner | None = None
        self.mount_points = runtime.MountPoints()
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        self.capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{mem // 1024}Ki", "pods": "110"}

    # --- lifecycle ----------------------------------------------------------------------------------------
    def __enter__(self) -> NodeAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> NodeAgent:
        """Register the Node, start heartbeat, watch and reconcile threads; returns self."""
        s = self.settings
        self.spawner = runtime.Spawner()
        mount_ns = s.mount_namespace if s.mount_namespace is not None else os.geteuid() == 0
        self.ctx = NodeContext(
            node_name=s.node_name, core=self.core, spawner=self.spawner, mount_points=self.mount_points,
            work_dir=self.work_dir, log_dir=self.log_dir, mount_namespace=mount_ns, capacity=self.capacity,
            base_env={"PATH": f"{s.bin_dir}:{DEFAULT_PATH}", "LANG": "C.UTF-8",
                      "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"},
            on_change=lambda _r: None,
            host_paths=(str(s.bin_dir), sys.prefix, sys.exec_prefix, *sys.path), host_root=s.host_root,
        )  # fmt: skip
        self._register_node()
        log.warning("kresume dev node %s: images are ignored; containers run as local processes from their "
                    "command/args with PATH=%s first; logs in %s", s.node_name, s.bin_dir, self.log_dir)  # fmt: skip
        for target, name in ((self._heartbeat_loop, "heartbeat"), (self._watch_loop, "watch"),
                             (self._reconcile_loop, "reconcile")):  # fmt: skip
            t = threading.Thread(target=target, name=f"kresume-node-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """Stop every pod (SIGTERM, ``shutdown_grace``, SIGKILL), the threads, and delete the Node; idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._dirty.set()
        with self._lock:
            runners = list(self.runners.values())
        for r in runners:
            r.stop(StopRequest(grace=self.settings.shutdown_grace, finish="none", reason="NodeShutdown"))
        for r in runners:
            r.done.wait(self.settings.shutdown_grace + 10)
        runtime.kill_all()
        if self.spawner is not None:
            self.spawner.close()
        if self.settings.delete_node_on_stop:
            try:
                self.core.delete_node(self.settings.node_name)
            except Exception:  # noqa: BLE001 - the API server may already be gone
                pass
        if self._own_work_dir:
            import shutil

            shutil.rmtree(self.work_dir / "pods", ignore_errors=True)

    # --- public API ---------------------------------------------------------------------------------------
    def find(self, namespace: str, name: str) -> PodRunner | None:
        """The newest runner of pod ``namespace/name`` (None if this agent never ran it)."""
        with self._lock:
            found = [r for r in self.runners.values() if (r.namespace, r.name) == (namespace, name)]
        return found[-1] if found else None

    def preempt(self, namespace: str, name: str, *, kill: bool = False,
                reason: str = status.PREEMPTION_REASON, message: str = "") -> PodRunner:  # fmt: skip
        """Preempt a running pod like a node does; returns its runner at once (``runner.done`` is set when over).

        Adds the ``DisruptionTarget`` condition (``reason``), sends SIGTERM to every container, waits the pod's
        ``terminationGracePeriodSeconds`` (``kill=True``: none, SIGKILL at once), SIGKILLs what is left, sets
        phase ``Failed`` and deletes the pod object with grace 0. Raises KeyError if the pod does not run here.
        """
        runner = self.find(namespace, name)
        if runner is None or runner.done.is_set():
            raise KeyError(f"pod {namespace}/{name} is not running on node {self.settings.node_name}")
        how = "SIGKILL without grace" if kill else f"SIGTERM, {runner.grace:g} s grace, SIGKILL"
        message = message or f"preempted on kresume dev node {self.settings.node_name} ({how})"
        runner.stop(StopRequest(grace=0 if kill else runner.grace, finish="delete", reason="Preempted",
                                message=message,
                                conditions=[(status.DISRUPTION_TARGET, reason if not kill else status.KILL_REASON,
                                             message)]))  # fmt: skip
        return runner

    # --- node ---------------------------------------------------------------------------------------------
    def _node_status(self) -> dict[str, Any]:
        now = status.rfc3339(time.time())
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now,
                 "message": "kresume dev node is posting ready status"}  # fmt: skip
        return {
            "conditions": [ready], "capacity": self.capacity, "allocatable": self.capacity,
            "addresses": [{"type": "InternalIP", "address": status.HOST_IP},
                          {"type": "Hostname", "address": self.settings.node_name}],
            "nodeInfo": {"kubeletVersion": "kresume-dev-node", "containerRuntimeVersion": "kresume-dev://local",
                         "operatingSystem": "linux", "architecture": os.uname().machine,
                         "kernelVersion": os.uname().release, "osImage": "local processes (images ignored)",
                         "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
        }  # fmt: skip

    def _register_node(self) -> None:
        from kubernetes.client.exceptions import ApiException

        name = self.settings.node_name
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", NODE_LABEL: "true"}}}  # fmt: skip
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self._patch_node_status()

    def _patch_node_status(self) -> None:
        self.core.patch_node_status(self.settings.node_name, {"status": self._node_status()},
                                    _content_type="application/strategic-merge-patch+json")  # fmt: skip

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(self.settings.heartbeat_seconds):
            try:
                self._patch_node_status()
            except Exception as exc:  # noqa: BLE001 - keep beating; the API server may be restarting
                log.warning("node heartbeat failed: %s", exc)

    # --- pods ---------------------------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        import kubernetes.watch

        ns = self.settings.namespaces
        while not self._stopping.is_set():
            w = kubernetes.watch.Watch()
            try:
                if len(ns) == 1:
                    stream = w.stream(self.core.list_namespaced_pod, ns[0], timeout_seconds=30)
                else:
                    stream = w.stream(self.core.list_pod_for_all_namespaces, timeout_seconds=30)
                for _event in stream:
                    self._dirty.set()
                    if self._stopping.is_set():
                        break
            except Exception:  # noqa: BLE001 - reconnect
                self._stopping.wait(1)
            finally:
                w.stop()

    def _list_pods(self) -> list[dict[str, Any]]:
        ns = self.settings.namespaces
        if ns:
            items = [p for n in ns for p in self.core.list_namespaced_pod(n).items]
            mine = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.settings.node_name}")
            seen = {p.metadata.uid for p in items}
            items += [p for p in mine.items if p.metadata.uid not in seen]
        else:
            items = self.core.list_pod_for_all_namespaces().items
        return [self.api.sanitize_for_serialization(p) for p in items]

    def _reconcile_loop(self) -> None:
        while not self._stopping.is_set():
            self._dirty.wait(self.settings.resync_seconds)
            self._dirty.clear()
            if self._stopping.is_set():
                return
            try:
                self._reconcile(self._list_pods())
            except Exception as exc:  # noqa: BLE001 - try again at the next event/resync
                log.warning("pod reconcile failed: %s", exc)
                self._stopping.wait(1)

    def _reconcile(self, pods: list[dict[str, Any]]) -> None:
        node = self.settings.node_name
        present = set()
        for pod in pods:
            meta, spec = pod["metadata"], pod.get("spec") or {}
            present.add(meta["uid"])
            self.first_seen.setdefault(meta["uid"], time.time())
            deleting = meta.get("deletionTimestamp") is not None
            if not spec.get("nodeName"):
                if not deleting and (not self.settings.namespaces or meta["namespace"] in self.settings.namespaces):
                    self._bind(pod)
                continue
            if spec["nodeName"] != node:
                continue
            with self._lock:
                runner = self.runners.get(meta["uid"])
            if runner is None:
                if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                if deleting:
                    self._force_delete(pod)
                    continue
                runner = PodRunner(self.ctx, pod)
                with self._lock:
                    self.runners[meta["uid"]] = runner
                runner.note(f"bound to {node}: starting")
                runner.start()
            elif deleting and not runner.done.is_set():
                grace = float(meta.get("deletionGracePeriodSeconds") or 0)
                runner.stop(StopRequest(grace=grace, finish="delete", reason="Deleted",
                                        message="pod deleted through the API"))  # fmt: skip
        with self._lock:
            gone = [r for uid, r in self.runners.items() if uid not in present and not r.done.is_set()]
        for r in gone:
            r.stop(StopRequest(grace=0, finish="none", reason="PodDeleted"))

    def _bind(self, pod: dict[str, Any]) -> None:
        import kubernetes.client as k
        from kubernetes.client.exceptions import ApiException

        meta = pod["metadata"]
        body = k.V1Binding(metadata=k.V1ObjectMeta(name=meta["name"], uid=meta["uid"]),
                           target=k.V1ObjectReference(api_version="v1", kind="Node", name=self.settings.node_name))
        try:
            self.core.create_namespaced_pod_binding(meta["name"], meta["namespace"], body, _preload_content=False)
            self._dirty.set()
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def _force_delete(self, pod: dict[str, Any]) -> None:
        import kubernetes.client as k
        from kubernetes.client.exceptions import ApiException

        meta = pod["metadata"]
        try:
            self.core.delete_namespaced_pod(meta["name"], meta["namespace"], body=k.V1DeleteOptions(
                grace_period_seconds=0, preconditions=k.V1Preconditions(uid=meta["uid"])))  # fmt: skip
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
