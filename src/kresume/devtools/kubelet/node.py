"""A real Kubernetes node on this machine: containerd + kubelet v1.20, registered with a local control plane.

:class:`RealNode` starts a private containerd (``Containerd``), imports the images it is given (the pause image
always), starts the kubelet and waits until the Node is Ready; :meth:`RealNode.stop` removes every container,
stops both, and removes what they left (see :mod:`.cleanup`): nothing stays running or mounted.

The node's name is a loopback address (``--hostname-override=127.0.0.1``): kubelet v1.20 then reports it as the
node's InternalIP and Hostname without its non-loopback check, so the API server reaches the kubelet (logs,
exec) on 127.0.0.1 and every ``hostNetwork: true`` pod gets podIP 127.0.0.1 — nothing is sent to another
address. A second node takes 127.0.0.2 (any 127/8 address is local on Linux).

Node loss (:meth:`RealNode.lose`) is what a dead machine looks like from the API: the kubelet stops renewing,
and its containers are gone. :meth:`RealNode.restart_kubelet` brings it back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kresume.devtools import _procs
from kresume.devtools.cluster import ControlPlane
from kresume.devtools.kubelet import cleanup, configs, images, nodelock, preflight
from kresume.devtools.kubelet.containerd import Containerd

REPO = Path(__file__).resolve().parents[4]
CACHE_ENV = "KRESUME_REALNODE_CACHE"
"""Environment variable overriding the image cache folder (default ``<repo>/.cache/realnode``)."""


class NodeStartError(RuntimeError):
    """The node could not start (missing piece, containerd or kubelet failure, not Ready in time)."""


def default_cache() -> Path:
    """``$KRESUME_REALNODE_CACHE`` or ``<repo>/.cache/realnode``: containerd's root (images) and image archives."""
    return Path(os.environ.get(CACHE_ENV) or REPO / ".cache" / "realnode")


@dataclass(frozen=True)
class RealNodeSettings:
    """How to start a :class:`RealNode`. Times are seconds."""

    address: str = "127.0.0.1"
    """The node's name and address (a 127/8 address; see the module docstring)."""
    cache_dir: Path | None = None
    """Image cache (containerd root + archives); None: :func:`default_cache`. One containerd per cache at a time:
    two nodes get ``<cache>/containerd-<address>`` each."""
    images: tuple[images.Archive, ...] = ()
    """Images to import (when missing or built from other inputs) before the kubelet starts."""
    ready_timeout: float = 180.0
    """Bound on containerd's start and on the Node becoming Ready (~10 s measured)."""
    work_root: Path = Path("/var/tmp")
    """Parent of the node's work folder (kubelet root-dir, logs); on disk, since emptyDir volumes live there."""
    labels: dict[str, str] = field(default_factory=dict)
    """Node labels (``--node-labels``)."""
    private_logs: bool = False
    """Run containerd and the kubelet in a mount namespace of their own where ``/var/log/pods`` is
    ``<workdir>/pod-logs``: needed for a second node on one machine, since kubelet v1.20's container GC deletes
    every ``/var/log/pods`` folder of pods it does not run (measured: the other node's trainer logs vanished).
    The node's mounts then live in that namespace and go away with its processes."""


class RealNode:
    """containerd + kubelet for ``plane``. After :meth:`start`: ``name``, ``workdir``, ``logs``, ``timings``."""

    def __init__(self, plane: ControlPlane, settings: RealNodeSettings | None = None) -> None:
        self.plane, self.s = plane, settings or RealNodeSettings()
        self.name = self.s.address
        self.cache = self.s.cache_dir or default_cache()
        self.workdir: Path | None = None
        self.logs: dict[str, Path] = {}
        self.timings: dict[str, float] = {}
        self.containerd: Containerd | None = None
        self._kubelet: _procs.ManagedProcess | None = None
        self._kubelet_argv: list[str] = []
        self._netns_before: set[str] = set()
        self._had_netns_dir = True
        self._pod_logs_before: set[str] = set()
        self._had_pod_log_dir = True
        self.bridge = ""
        self._lock = nodelock.NodeLock(self.name)
        self.pod_log_dir = cleanup.POD_LOG_DIR
        """Where this node's pod logs are (``/var/log/pods``, or ``<workdir>/pod-logs`` with ``private_logs``)."""

    def __enter__(self) -> RealNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- start -----------------------------------------------------------------------------------------------
    def start(self) -> RealNode:
        """Take the machine-wide lock of the node's address (:mod:`.nodelock`), start containerd, import images,
        start the kubelet, wait for Ready. Raises :class:`NodeStartError` (also when another process runs a node
        with this address); a failed start cleans up what it started."""
        assert self.plane.assets is not None, "start() the control plane first"
        problems = preflight.missing(self.plane.assets)
        if problems:
            raise NodeStartError(preflight.explain(problems))
        try:
            self._lock.acquire()
        except nodelock.NodeAddressBusy as busy:
            raise NodeStartError(str(busy)) from None
        t0 = time.monotonic()
        try:
            self._start(t0)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, t0: float) -> None:
        assert self.plane.assets is not None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"kresume-node-{self.name}-", dir=self.s.work_root))
        # The containerd socket path must stay under 108 bytes: runtime state goes to a short /run folder.
        state = Path(tempfile.mkdtemp(prefix="krn-", dir="/run"))
        cni = self.workdir / "cni"
        cni.mkdir()
        self.bridge = f"krn{os.getpid() % 100000}x{self.name.rsplit('.', 1)[-1]}"[:15]
        third = 64 + int.from_bytes(os.urandom(1), "big") % 128
        (cni / "10-kresume.conflist").write_text(configs.cni_conflist(
            bridge=self.bridge, subnet=f"10.{third}.{self.name.rsplit('.', 1)[-1]}.0/24", ipam_dir=state / "ipam"))
        self._netns_before = _netns()
        self._had_netns_dir = NETNS_DIR.is_dir()
        self._pod_logs_before = cleanup.list_pod_logs()
        self._had_pod_log_dir = cleanup.POD_LOG_DIR.is_dir()
        root = self.cache / f"containerd-{self.name}"
        self.logs["containerd"] = self.workdir / "containerd.log"
        wrap: tuple[str, ...] = ()
        if self.s.private_logs:
            self.pod_log_dir = self.workdir / "pod-logs"
            self.pod_log_dir.mkdir()
            cleanup.POD_LOG_DIR.mkdir(parents=True, exist_ok=True)  # the bind target
            wrap = ("unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                    'mount --bind "$0" /var/log/pods && exec "$@"', str(self.pod_log_dir))  # fmt: skip
        self.containerd = Containerd(root=root, state=state, cni_conf_dir=cni, log=self.logs["containerd"],
                                     start_timeout=self.s.ready_timeout, wrap=wrap)  # fmt: skip
        try:
            self.containerd.start()
        except Exception as exc:
            raise NodeStartError(f"containerd: {exc}") from exc
        self.timings["containerd_s"] = time.monotonic() - t0
        pause = images.pause_image(self.plane.assets / "pause", self.cache)
        for archive in (pause, *self.s.images):
            self.ensure_image(archive)
        self.timings["images_s"] = time.monotonic() - t0
        self._write_kubelet_files()
        self._spawn_kubelet()
        self.wait_ready()
        self.timings["ready_s"] = time.monotonic() - t0

    def ensure_image(self, archive: images.Archive) -> bool:
        """Import ``archive`` unless containerd has ``archive.ref`` built from the same inputs; True if imported."""
        assert self.containerd is not None
        if self.containerd.image_inputs(archive.ref) == archive.key:
            return False
        self.containerd.import_image(archive.path, archive.ref, archive.key)
        return True

    def _write_kubelet_files(self) -> None:
        assert self.workdir is not None and self.containerd is not None
        root = self.workdir / "kubelet"
        root.mkdir()
        port, healthz = _procs.free_ports(2)
        self.kubelet_port, self.healthz_port = port, healthz
        config = self.workdir / "kubelet-config.yaml"
        config.write_text(yaml.safe_dump(configs.kubelet_config(port=port, healthz_port=healthz, address=self.name)))
        self.logs["kubelet"] = self.workdir / "kubelet.log"
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.s.labels.items()))
        enter = ["nsenter", f"--mount=/proc/{self.containerd.pid}/ns/mnt", "--"] if self.s.private_logs else []
        self._kubelet_argv = [
            *enter, str(self.plane.assets / "kubelet"), f"--config={config}", f"--root-dir={root}",
            f"--cert-dir={self.workdir / 'pki'}", f"--kubeconfig={self.plane.kubeconfig}",
            "--container-runtime=remote", f"--container-runtime-endpoint={self.containerd.endpoint}",
            f"--pod-infra-container-image={configs.SANDBOX_IMAGE}", f"--hostname-override={self.name}",
            "--runtime-request-timeout=5m", *([f"--node-labels={labels}"] if labels else []),
        ]  # fmt: skip

    def _spawn_kubelet(self) -> None:
        # PR_SET_PDEATHSIG fires when the *thread* that started the child ends: a kubelet restarted from a
        # short-lived thread (the demo's node loss) must not die with it (atexit and stop() still end it).
        self._kubelet = _procs.ManagedProcess("kubelet", self._kubelet_argv, self.logs["kubelet"],
                                              env={"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"},
                                              stop_grace_s=15.0,
                                              die_with_parent=threading.current_thread() is threading.main_thread())  # fmt: skip
        try:
            self._kubelet.start()
        except _procs.ProcessStartError as exc:
            raise NodeStartError(str(exc)) from exc

    def node_object(self) -> dict | None:
        """The Node as the API server has it, or None."""
        res = self.plane.kubectl("get", "node", self.name, "-o", "json", check=False)
        return json.loads(res.stdout) if res.returncode == 0 else None

    def is_ready(self) -> bool:
        """True when the Node's ``Ready`` condition is ``True``."""
        node = self.node_object() or {}
        conds = (node.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)

    def wait_ready(self) -> None:
        """Poll until the Node is Ready; raises :class:`NodeStartError` with the kubelet's log tail on exit or
        after ``ready_timeout``."""
        assert self._kubelet is not None
        deadline = time.monotonic() + self.s.ready_timeout
        while not self.is_ready():
            if not self._kubelet.running:
                raise NodeStartError(f"kubelet exited with code {self._kubelet.returncode}; last lines of "
                                     f"{self.logs['kubelet']}:\n{self._kubelet.log_tail()}")  # fmt: skip
            if time.monotonic() > deadline:
                raise NodeStartError(f"node {self.name} not Ready after {self.s.ready_timeout:.0f} s; last lines of "
                                     f"{self.logs['kubelet']}:\n{self._kubelet.log_tail()}")  # fmt: skip
            time.sleep(0.5)

    # --- faults ----------------------------------------------------------------------------------------------
    def lose(self) -> None:
        """Node loss: SIGKILL the kubelet and every container of the node (the Node object stays, turning
        NotReady once its lease expires; its pods stay until someone deletes them)."""
        if self._kubelet is not None:
            self._kubelet.stop(grace_s=0)
        if self.containerd is not None:
            self.containerd.kill_tasks()

    def restart_kubelet(self) -> None:
        """Start the kubelet again (same root-dir, name and ports), wait until it answers ``/healthz`` (the Node
        may still look Ready from before) and the Node is Ready."""
        if self._kubelet is not None and self._kubelet.running:
            self._kubelet.stop()
        self._spawn_kubelet()
        deadline = time.monotonic() + self.s.ready_timeout
        probe = _procs.http_ready(f"http://{self.name}:{self.healthz_port}/healthz", ok_statuses=lambda s: s == 200)
        while not probe():
            assert self._kubelet is not None
            if not self._kubelet.running or time.monotonic() > deadline:
                raise NodeStartError(f"kubelet of {self.name} did not come back; last lines of "
                                     f"{self.logs['kubelet']}:\n{self._kubelet.log_tail()}")  # fmt: skip
            time.sleep(0.5)
        self.wait_ready()

    # --- stop ------------------------------------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Stop the kubelet, remove every container, stop containerd, unmount and delete what they made (see
        :mod:`.cleanup`), delete the Node object. Returns problems left (empty when clean); idempotent."""
        t0 = time.monotonic()
        problems: list[str] = []
        if self._kubelet is not None:
            self._kubelet.stop()
            self._kubelet = None
        if self.containerd is not None:
            problems += self.containerd.stop()
            self.containerd = None
        if self.workdir is not None:
            root = self.workdir / "kubelet"
            uids = os.listdir(root / "pods") if (root / "pods").is_dir() else []
            left = cleanup.unmount_all([self.workdir])
            problems += [f"still mounted: {p}" for p in left]
            # Pod log folders of this node: the ones of its pods now, and every one made since it started.
            ours = set(cleanup.pod_log_dirs(cleanup.list_pod_logs(), uids))
            ours |= cleanup.list_pod_logs() - self._pod_logs_before
            cleanup.remove_pod_logs(ours, remove_parents=not self._had_pod_log_dir)
            cleanup.remove_device_plugin_dir()
            if not left:
                shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        if self.bridge:
            cleanup.delete_link(self.bridge)
            if cleanup.link_exists(self.bridge):
                problems.append(f"CNI bridge {self.bridge} still exists")
            self.bridge = ""
        cleanup.delete_netns(n for n in _netns() - self._netns_before if n.startswith("cni-"))
        if not self._had_netns_dir:
            with contextlib.suppress(OSError):
                NETNS_DIR.rmdir()
        if self.plane.workdir is not None:  # the plane may be gone already
            self.plane.kubectl("delete", "node", self.name, "--ignore-not-found", "--wait=false", check=False,
                               timeout=20)  # fmt: skip
        self._lock.release()
        self.timings["stop_s"] = time.monotonic() - t0
        return problems


NETNS_DIR = Path("/var/run/netns")
"""Where ``ip netns`` and containerd's CRI keep named network namespaces."""


def _netns() -> set[str]:
    return set(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else set()
