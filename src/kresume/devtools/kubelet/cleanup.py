"""Leave nothing behind: what a real node mounts, creates and writes outside its own folders, found and removed.

What kubelet v1.20 + containerd 1.6 leave (measured here, ``../shared/k8s/README.md``):

- mounts: the kubelet bind-mounts its ``--root-dir`` onto itself and mounts every pod volume (emptyDir on
  tmpfs with ``medium: Memory``, Secret/ConfigMap/projected tmpfs) under ``<root-dir>/pods/<uid>/volumes``;
  containerd mounts each container's overlayfs rootfs under ``<state>/io.containerd.runtime.v2.task/...`` and
  the sandbox's ``/dev/shm`` under ``<state>/io.containerd.grpc.v1.cri/sandboxes/<id>/shm``;
- files outside the root-dir: ``/var/lib/kubelet/device-plugins`` (the path is compiled in),
  ``/var/log/pods/<ns>_<pod>_<uid>`` and the ``/var/log/containers/*.log`` links to them;
- network: the CNI bridge (created at the first non-host-network sandbox) and ``/var/run/netns/cni-*``
  namespaces of such sandboxes.

Pure parts (:func:`mounts_under`, :func:`pod_log_dirs`) are unit-tested; the rest are thin shells.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
POD_LOG_DIR = Path("/var/log/pods")
CONTAINER_LOG_DIR = Path("/var/log/containers")
DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (proc(5))."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts_under(mountinfo: str, roots: Iterable[Path]) -> list[Path]:
    """Mount points in ``mountinfo`` (the text of ``/proc/self/mountinfo``) at or below any of ``roots``,
    deepest first (the order they can be unmounted in). A path mounted several times appears as often."""
    prefixes = [str(r).rstrip("/") for r in roots]
    found: list[Path] = []
    for line in mountinfo.splitlines():
        parts = line.split()
        if len(parts) < 5:
            continue
        point = _unescape(parts[4])
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all(roots: Iterable[Path], *, attempts: int = 5) -> list[Path]:
    """Unmount everything at or below ``roots`` (deepest first; lazily as a last resort). Returns what is still
    mounted afterwards (empty on success)."""
    roots = list(roots)
    left: list[Path] = []
    for attempt in range(attempts):
        left = mounts_under(MOUNTINFO.read_text(), roots)
        if not left:
            return []
        lazy = ["-l"] if attempt == attempts - 1 else []
        for point in left:
            subprocess.run(["umount", *lazy, str(point)], capture_output=True, check=False)
    return mounts_under(MOUNTINFO.read_text(), roots)


def pod_log_dirs(names: Iterable[str], uids: Iterable[str]) -> list[str]:
    """Entries of ``/var/log/pods`` (``<namespace>_<pod>_<uid>``) that belong to one of ``uids``."""
    wanted = set(uids)
    return sorted(n for n in names if n.rsplit("_", 1)[-1] in wanted)


def list_pod_logs() -> set[str]:
    """The entries of ``/var/log/pods`` now."""
    return set(os.listdir(POD_LOG_DIR)) if POD_LOG_DIR.is_dir() else set()


def remove_pod_logs(names: Iterable[str], *, remove_parents: bool) -> None:
    """Remove the ``/var/log/pods`` entries ``names`` and the ``/var/log/containers`` links into them; then the two
    folders themselves when empty and ``remove_parents`` (the node created them)."""
    names = set(names)
    for name in names:
        shutil.rmtree(POD_LOG_DIR / name, ignore_errors=True)
    if CONTAINER_LOG_DIR.is_dir():
        for link in CONTAINER_LOG_DIR.iterdir():
            with contextlib.suppress(OSError):
                target = Path(os.readlink(link))
                if target.parent.parent.name in names and target.parent.parent.parent == POD_LOG_DIR:
                    link.unlink()
    if remove_parents:
        for d in (POD_LOG_DIR, CONTAINER_LOG_DIR):
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty


def remove_device_plugin_dir() -> None:
    """``/var/lib/kubelet/device-plugins`` (kubelet v1.20 compiles the path in): its socket and checkpoint, then
    the folders when empty (a system kubelet's state next to them is kept)."""
    for name in ("kubelet.sock", "kubelet_internal_checkpoint", "DEPRECATION"):
        with contextlib.suppress(OSError):
            (DEVICE_PLUGIN_DIR / name).unlink()
    for d in (DEVICE_PLUGIN_DIR, DEVICE_PLUGIN_DIR.parent):
        with contextlib.suppress(OSError):
            d.rmdir()


SHIM_DIRS = (Path("/run/containerd/s"), Path("/run/containerd/runc/k8s.io"), Path("/run/containerd/runc"),
             Path("/run/containerd"))
"""Folders containerd 1.6 creates for its shims whatever its config says; removed when empty (a system
containerd's files in them are left alone)."""


def remove_empty_dirs(dirs: Iterable[Path] = SHIM_DIRS) -> None:
    """``rmdir`` each of ``dirs`` in order, ignoring ones that are absent or not empty."""
    for d in dirs:
        with contextlib.suppress(OSError):
            d.rmdir()


def delete_link(name: str) -> None:
    """Delete the network interface ``name`` (the CNI bridge) if it exists."""
    if Path("/sys/class/net", name).exists():
        subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)


def delete_netns(names: Iterable[str]) -> None:
    """Delete the named network namespaces (``ip netns delete``: unmounts and removes ``/var/run/netns/NAME``)."""
    for name in names:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def link_exists(name: str) -> bool:
    """True when a network interface ``name`` exists."""
    return Path("/sys/class/net", name).exists()
