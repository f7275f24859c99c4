"""The demo's view of pods run by a real kubelet: the same surface the demo uses of the node agent (``runners``,
``first_seen``, ``preempt``), read from the API server and the node's files.

- :class:`KubeletPod` is one pod: its admitted spec, when it was first listed, whether it is done, the host files
  of its trainer log (the CRI log under ``/var/log/pods``, decoded by :class:`CriLog`) and of its emptyDir volumes
  (under the kubelet's root-dir), and the containers that failed on their own.
- :class:`KubeletPods` lists the namespace's pods every :data:`POLL_SECONDS` on a thread and preempts the way a
  real cluster does: ``write``/``upload`` = pod deletion with the pod's grace period (the kubelet sends SIGTERM,
  waits, SIGKILLs); ``kill`` = node loss: the kubelet and every container of the node die at once, the pods are
  force-deleted as the node lifecycle controller would (faster), and the node comes back. With a
  ``mirror_dir`` it also copies each pod's sidecar log there as it grows (:class:`CriMirror`, with the same
  reader): kubelet v1.20 deletes a pod's log folder once the pod is gone.

On a kubelet before 1.28 the injected sidecar is a regular container that the kubelet never stops (native sidecars
need 1.28+); it leaves by itself a few seconds after the trainer exited (``KRESUME_RESTART_POLICY``,
:mod:`kresume.sidecar.leaving`). A pod counts as done as soon as its ``trainer`` container has terminated, or the
pod is gone or in a final phase, without waiting for that.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kresume import contract
from kresume.devtools.cluster import ControlPlane
from kresume.devtools.demo.checks import epoch
from kresume.devtools.demo.observe import TrainerLog
from kresume.devtools.kubelet import RealNode
from kresume.devtools.kubelet.cleanup import POD_LOG_DIR

POLL_SECONDS = 0.25
"""Period of the pod listing, seconds (an upper bound on how late a new pod is noticed)."""
START_FAILURES = {"ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull", "CreateContainerError",
                  "CreateContainerConfigError", "InvalidImageName", "CrashLoopBackOff", "RunContainerError"}
"""Waiting reasons the kubelet gives a container that cannot start (kubelet v1.20 ``images``/``kuberuntime``)."""


def decode_cri_lines(data: str, partial: str) -> tuple[list[str], str]:
    """Decode CRI log lines (``<RFC3339 time> <stream> <P|F> <text>``; ``P`` = the line continues) into plain
    lines. ``partial`` is the unfinished text carried over from the previous call; returns (lines, partial)."""
    out: list[str] = []
    for raw in data.split("\n"):
        parts = raw.split(" ", 3)
        if len(parts) < 3:
            continue
        text = parts[3] if len(parts) == 4 else ""
        if parts[2] == "P":
            partial += text
        else:
            out.append(partial + text)
            partial = ""
    return out, partial


@dataclass
class CriLog(TrainerLog):
    """A :class:`TrainerLog` over a CRI log file written by containerd (only whole lines are consumed)."""

    _cri_partial: str = ""
    _raw: str = ""

    def read_lines(self) -> list[str]:
        """The container's new whole lines, decoded: a record still being written, and a line continued by
        ``P`` records, wait for the next call."""
        self._raw += self._new_text()
        complete, _, self._raw = self._raw.rpartition("\n")
        lines, self._cri_partial = decode_cri_lines(complete, self._cri_partial)
        return lines

    def read(self) -> list[dict[str, Any]]:
        return self._take(self.read_lines())


MIRRORED = (contract.SIDECAR_CONTAINER_NAME,)
"""Containers whose CRI log :class:`KubeletPods` copies while the pod runs: kubelet v1.20 deletes a pod's log
folder once the pod is gone, and the time line reads the old pod's sidecar log after that (its final commit)."""


@dataclass
class CriMirror:
    """A container's CRI log appended as plain lines to ``dest`` as it grows (a whole line at a time, UTF-8)."""

    source: CriLog
    dest: Path

    def sync(self) -> int:
        """Append the source's new whole lines to ``dest`` (created with its folder on the first line); returns
        how many. Raises OSError when ``dest`` cannot be written."""
        lines = self.source.read_lines()
        if lines:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            with open(self.dest, "a", encoding="utf-8") as f:
                f.write("".join(f"{line}\n" for line in lines))
        return len(lines)


@dataclass
class Failed:
    """A container that ended (or cannot start) on its own."""

    name: str
    reason: str
    exit_code: int | None
    message: str
    log_path: str


@dataclass(frozen=True)
class ContainerTimes:
    """A container's ``startedAt``/``finishedAt`` (epoch seconds; the v1.20 API gives whole seconds)."""

    name: str
    started_at: float | None
    finished_at: float | None


def _times(statuses: list[dict[str, Any]] | None) -> list[ContainerTimes]:
    out = []
    for c in statuses or []:
        state = c.get("state") or {}
        cur = state.get("running") or state.get("terminated") or {}
        out.append(ContainerTimes(c["name"], epoch(cur.get("startedAt") or ""),
                                  epoch((state.get("terminated") or {}).get("finishedAt") or "")))
    return out


@dataclass
class KubeletPod:
    """One pod of the namespace as the kubelet runs it."""

    pod: dict[str, Any]
    node_root: Path
    """The kubelet's ``--root-dir`` on the pod's node."""
    node_logs: Path = POD_LOG_DIR
    """The node's ``/var/log/pods`` as this process sees it (:attr:`RealNode.pod_log_dir`)."""
    failed_at: float | None = None
    """Epoch seconds from which the Job controller may replace the pod: when the demo asked for its deletion or
    killed its node, else when it was first seen terminating (``deletionTimestamp``: the Job controller of 1.20
    no longer counts it as active), gone, or in a final phase. The lower bound of the replacement's admission."""
    done: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False
    """Set when the demo preempted it (its containers' exits are then not failures)."""
    gone: bool = False
    """Set once a listing no longer holds the pod (deleted)."""
    mirrors: dict[str, CriMirror] = field(default_factory=dict)
    """Container name -> the copy of its log that outlives the pod (:meth:`mirror`)."""

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def logs_dir(self) -> Path:
        """``/var/log/pods/<namespace>_<name>_<uid>`` (one folder per container, ``<restart>.log`` in it)."""
        m = self.pod["metadata"]
        return self.node_logs / f"{m['namespace']}_{m['name']}_{m['uid']}"

    def log_path(self, container: str) -> Path:
        """The CRI log of the container's first run (the Job's pods never restart containers)."""
        return self.logs_dir / container / "0.log"

    def mirror(self, folder: Path, containers: tuple[str, ...] = MIRRORED) -> None:
        """Copy ``containers``' logs to ``folder/<pod name>/<container>.log`` from now on (:meth:`sync_mirrors`)."""
        for name in containers:
            self.mirrors[name] = CriMirror(CriLog(self.log_path(name)), folder / self.name / f"{name}.log")

    def sync_mirrors(self) -> None:
        """Bring every mirror up to date with its container's log (a log not there yet or gone: nothing new)."""
        for m in self.mirrors.values():
            m.sync()

    def plain_log_path(self, container: str) -> Path:
        """The container's log as plain lines (what the node agent's ``log_path`` gives): its mirror, which
        holds the lines copied so far and outlives the pod."""
        m = self.mirrors.get(container)
        return m.dest if m is not None else self.logs_dir / container / "not-mirrored.log"

    @property
    def volume_dirs(self) -> dict[str, str]:
        """emptyDir volume name -> its host folder under the kubelet's root-dir."""
        base = self.node_root / "pods" / self.uid / "volumes" / "kubernetes.io~empty-dir"
        return {v["name"]: str(base / v["name"]) for v in self.pod["spec"].get("volumes") or [] if "emptyDir" in v}

    @property
    def init(self) -> list[ContainerTimes]:
        """Init containers' start and end times from the pod's last status (the time line's input, as the node
        agent's runner gives them)."""
        return _times((self.pod.get("status") or {}).get("initContainerStatuses"))

    @property
    def regular(self) -> list[ContainerTimes]:
        """Containers' start and end times from the pod's last status."""
        return _times((self.pod.get("status") or {}).get("containerStatuses"))

    def update(self, pod: dict[str, Any] | None) -> None:
        """Take a newer copy of the pod (None: deleted) and set ``done``/``failed_at``."""
        if pod is not None:
            self.pod = pod
        else:
            self.gone = True
        status = (pod or {}).get("status") or {}
        trainer = next((c for c in status.get("containerStatuses") or [] if c["name"] == "trainer"), None)
        over = pod is None or status.get("phase") in ("Failed", "Succeeded")
        terminating = pod is not None and bool(pod["metadata"].get("deletionTimestamp"))
        if (over or terminating) and self.failed_at is None:
            self.failed_at = time.time()
        if over or (trainer is not None and "terminated" in (trainer.get("state") or {})):
            self.done.set()

    def failed_containers(self) -> list[Failed]:
        """Containers that terminated non-zero or cannot start, while the demo did not stop the pod."""
        if self.stopping:
            return []
        out: list[Failed] = []
        status = self.pod.get("status") or {}
        for c in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            state = c.get("state") or {}
            term, wait = state.get("terminated"), state.get("waiting")
            path = str(self.log_path(c["name"]))
            if term and term.get("exitCode", 0) != 0:
                out.append(Failed(c["name"], term.get("reason") or "Error", term.get("exitCode"),
                                  term.get("message") or "", path))  # fmt: skip
            elif wait and wait.get("reason") in START_FAILURES:
                out.append(Failed(c["name"], wait["reason"], None, wait.get("message") or "", path))
        return out


class KubeletPods:
    """Follows the pods of ``namespace`` labelled ``job-name=<job>`` on the real nodes; see the module docstring."""

    def __init__(self, plane: ControlPlane, nodes: list[RealNode], namespace: str, job: str,
                 say: Any = print, mirror_dir: Path | None = None) -> None:  # fmt: skip
        self.plane, self.nodes, self.namespace, self.job, self.say = plane, nodes, namespace, job, say
        self.mirror_dir = mirror_dir
        """Where each pod's :data:`MIRRORED` logs are copied while it runs (None: not copied)."""
        self.runners: dict[str, KubeletPod] = {}
        self.first_seen: dict[str, float] = {}
        """Pod UID -> epoch seconds of the first listing that held it (an upper bound of its admission)."""
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-kubelet-pods", daemon=True)
        self.errors = 0

    def start(self) -> KubeletPods:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _node(self, node_name: str) -> RealNode:
        node = next((n for n in self.nodes if n.name == node_name), self.nodes[0])
        assert node.workdir is not None
        return node

    def poll_once(self) -> None:
        """List the Job's pods once: new ones are recorded (with the listing's time), others updated."""
        t = time.time()
        res = self.plane.kubectl("get", "pods", "-n", self.namespace, "-l", f"job-name={self.job}", "-o", "json",
                                 check=False, timeout=20)  # fmt: skip
        if res.returncode != 0:
            self.errors += 1
            return
        listed = {p["metadata"]["uid"]: p for p in json.loads(res.stdout)["items"]}
        with self._lock:
            for uid, pod in listed.items():
                if uid not in self.runners:
                    if not pod["spec"].get("nodeName"):
                        continue  # not scheduled yet: no node folder to point at
                    self.first_seen[uid] = t
                    node = self._node(pod["spec"]["nodeName"])
                    assert node.workdir is not None
                    runner = KubeletPod(pod, node.workdir / "kubelet", node.pod_log_dir)
                    if self.mirror_dir is not None:
                        runner.mirror(self.mirror_dir)
                    self.runners[uid] = runner
                self.runners[uid].update(pod)
                self.runners[uid].sync_mirrors()
            for uid, runner in self.runners.items():
                if uid not in listed and not runner.gone:
                    runner.sync_mirrors()  # the last lines, if the kubelet has not removed the folder yet
                    runner.update(None)

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the API server may be busy; count and go on
                self.errors += 1

    def preempt(self, namespace: str, name: str, *, kill: bool = False) -> KubeletPod:
        """Preempt pod ``name`` (see the module docstring); returns its runner at once."""
        with self._lock:
            runner = next(r for r in self.runners.values() if r.name == name)
        runner.stopping = True
        runner.failed_at = time.time()
        if not kill:
            grace = int(runner.pod["spec"].get("terminationGracePeriodSeconds", 30))
            self.plane.kubectl("delete", "pod", "-n", namespace, name, f"--grace-period={grace}", "--wait=false")
            return runner
        node = next(n for n in self.nodes if n.name == runner.pod["spec"].get("nodeName"))
        threading.Thread(target=self._lose_node, args=(node, namespace), name="demo-node-loss", daemon=True).start()
        return runner

    def _lose_node(self, node: RealNode, namespace: str) -> None:
        """Node loss, then the node lifecycle controller's part (force-delete the node's pods), then recovery."""
        t0 = time.time()
        node.lose()
        res = self.plane.kubectl("get", "pods", "-n", namespace, "--field-selector", f"spec.nodeName={node.name}",
                                 "-o", "name", check=False)  # fmt: skip
        for pod in res.stdout.split():
            self.plane.kubectl("delete", "-n", namespace, pod, "--force", "--grace-period=0", check=False)
        node.restart_kubelet()
        self.say(f"node {node.name} is back (kubelet restarted, Ready) {time.time() - t0:.0f} s after its loss")


def trainer_env(pod: dict[str, Any]) -> dict[str, str]:
    """The literal env values of the pod's ``trainer`` container (what the webhook injected)."""
    c = next(c for c in pod["spec"]["containers"] if c["name"] == "trainer")
    return {e["name"]: e.get("value") for e in c.get("env") or [] if "value" in e}


def has_sidecar(pod: dict[str, Any]) -> bool:
    """True when the webhook injected the kresume sidecar (a regular or a native one)."""
    names = [c["name"] for c in pod["spec"].get("containers") or []]
    names += [c["name"] for c in pod["spec"].get("initContainers") or []]
    return contract.SIDECAR_CONTAINER_NAME in names
