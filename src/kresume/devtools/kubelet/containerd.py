"""One private containerd instance (its own socket, state and root; never the machine's own containerd).

``root`` holds the content store, snapshots and image metadata and is kept between runs: it is the image cache
(locally built images cannot be pulled again). Everything else is removed by :meth:`Containerd.stop`: running
tasks are killed, containers (and their snapshots) deleted, the ``state`` folder (sockets, shim bundles) and
every mount below ``state`` and ``root`` removed. Images are imported with ``ctr`` into the ``k8s.io``
namespace, the one the CRI plugin serves to the kubelet.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

from kresume.devtools import _procs
from kresume.devtools.kubelet import cleanup, configs

K8S_NAMESPACE = "k8s.io"
"""containerd namespace of the CRI plugin (the kubelet's images and containers)."""
IMAGE_LABEL = "dev.kresume.inputs"
"""Image label holding the key of the inputs an image was built from (see :mod:`.images`)."""


class ContainerdError(RuntimeError):
    """containerd did not start, or a ``ctr`` command failed; the message has its output or the log tail."""


class Containerd:
    """A containerd process: ``start()``, ``ctr(...)``, ``import_image(...)``, ``stop()``.

    ``root`` (kept: the image cache), ``state`` (removed on stop; short path: the socket lives there),
    ``cni_conf_dir`` (the node's CNI config), ``log`` (containerd's output).
    """

    def __init__(self, *, root: Path, state: Path, cni_conf_dir: Path, log: Path,
                 start_timeout: float = 60.0, wrap: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.root, self.state, self.cni_conf_dir, self.log = root, state, cni_conf_dir, log
        self.wrap = wrap
        """argv prefix (e.g. ``unshare --mount …``: containerd then runs in its own mount namespace)."""
        self.socket = state / "containerd.sock"
        self.config = state / "config.toml"
        self.start_timeout = start_timeout
        self._proc: _procs.ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        """The CRI endpoint for the kubelet's ``--container-runtime-endpoint``."""
        return f"unix://{self.socket}"

    def start(self) -> Containerd:
        """Write the config, start containerd, wait until ``ctr version`` answers. Raises :class:`ContainerdError`."""
        if len(str(self.socket)) > 100:
            raise ContainerdError(f"containerd socket path {self.socket} is too long for a unix socket (max ~107)")
        exe = shutil.which("containerd")
        if exe is None:
            raise ContainerdError("containerd is not installed: apt-get install containerd runc "
                                  "containernetworking-plugins (scripts/k8s-assets.sh --node does it)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        self.config.write_text(configs.containerd_config(root=self.root, state=self.state, socket=self.socket,
                                                         cni_conf_dir=self.cni_conf_dir))  # fmt: skip
        self._proc = _procs.ManagedProcess(
            "containerd", [*self.wrap, exe, "--config", str(self.config)], self.log, ready=self._answers,
            start_timeout_s=self.start_timeout, stop_grace_s=10.0,
        )
        try:
            self._proc.start()
        except _procs.ProcessStartError as exc:
            raise ContainerdError(str(exc)) from exc
        return self

    def _answers(self) -> bool:
        return self.socket.exists() and self.ctr("version", check=False).returncode == 0

    @property
    def pid(self) -> int | None:
        """containerd's pid (``unshare`` execs it, so a wrapped start has the same pid)."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    def ctr(self, *args: str, check: bool = True, timeout: float = 600,
            namespace: str = K8S_NAMESPACE) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run ``ctr --address <socket> -n <namespace> *args``; raises :class:`ContainerdError` on failure
        when ``check``."""
        cmd = ["ctr", "--address", str(self.socket), "-n", namespace, *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise ContainerdError(f"{' '.join(cmd[3:])} exited {res.returncode}: {(res.stderr or res.stdout).strip()}")
        return res

    # --- images -----------------------------------------------------------------------------------------------
    def image_inputs(self, ref: str) -> str | None:
        """The inputs key (label :data:`IMAGE_LABEL`) of image ``ref``, "" when it has none, None when absent."""
        res = self.ctr("images", "ls", f"name=={ref}", check=False)
        lines = [ln for ln in res.stdout.splitlines()[1:] if ln.split() and ln.split()[0] == ref]
        if not lines:
            return None
        labels = lines[0].split()[-1]
        for item in labels.split(","):
            key, _, value = item.partition("=")
            if key == IMAGE_LABEL:
                return value
        return ""

    def import_image(self, archive: Path, ref: str, inputs: str) -> float:
        """Import the OCI archive ``archive`` as image ``ref`` (``repo:tag``; the archive's index names the image
        ``tag`` or ``repo:tag``, ctr's ``--base-name`` rule), unpack it for overlayfs, label it with ``inputs``.
        Returns the seconds taken; raises :class:`ContainerdError`."""
        t0 = time.monotonic()
        repo = ref.rsplit(":", 1)[0]
        self.ctr("images", "import", "--base-name", repo, str(archive))
        listed = self.ctr("images", "ls", "-q").stdout.split()
        if ref not in listed:
            raise ContainerdError(f"importing {archive} did not create image {ref} (images now: {listed})")
        self.ctr("images", "label", ref, f"{IMAGE_LABEL}={inputs}")
        return time.monotonic() - t0

    # --- clean-up ----------------------------------------------------------------------------------------------
    def kill_tasks(self) -> int:
        """SIGKILL every running task (container process) in the CRI namespace, as a machine crash would; the CRI
        plugin sees the exits, so the kubelet finds the containers exited. Returns how many were signalled."""
        tasks = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "-a", "-s", "SIGKILL", task, check=False)
        return len(tasks)

    def remove_containers(self) -> None:
        """Kill every task and delete every container (with its snapshot) in the CRI namespace."""
        if not self.running:
            return
        for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 15
        for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            while self.ctr("tasks", "delete", "-f", task, check=False).returncode != 0 and time.monotonic() < deadline:
                time.sleep(0.2)
        for cid in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "delete", cid, check=False)

    def stop(self) -> list[str]:
        """Remove containers, stop containerd, unmount what is left below ``state``/``root``, delete ``state``.

        Returns problems (empty when clean): mounts that would not go away.
        """
        with contextlib.suppress(Exception):
            self.remove_containers()
        if self._proc is not None:
            self._proc.stop()
            self._proc = None
        left = cleanup.unmount_all([self.state, self.root / "io.containerd.runtime.v2.task"])
        snapshot_mounts = [p for p in cleanup.mounts_under(cleanup.MOUNTINFO.read_text(), [self.root])]
        problems = [f"still mounted: {p}" for p in left + snapshot_mounts]
        shutil.rmtree(self.state, ignore_errors=True)
        cleanup.remove_empty_dirs()
        return problems
