"""Can this machine run a real node? (root, containerd, runc, CNI plugins, cgroup v1 memory, kubelet binary)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kresume.devtools.kubelet.configs import CNI_BIN_DIR

SETUP_COMMAND = "scripts/k8s-assets.sh --node"


def missing(assets: Path | None) -> list[str]:
    """What is missing for a real node, one short phrase each (empty: it can run). ``assets``: the directory
    with ``kubelet``, ``kube-scheduler`` and ``pause`` (None: not found at all)."""
    out: list[str] = []
    if os.geteuid() != 0:
        out.append("root (the kubelet and containerd mount, and manage cgroups)")
    for exe in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "umoci", "ip"):
        if shutil.which(exe) is None:
            out.append(f"{exe} on PATH")
    for plugin in ("bridge", "host-local", "loopback", "portmap"):
        if not (CNI_BIN_DIR / plugin).exists():
            out.append(f"the CNI plugin {CNI_BIN_DIR / plugin}")
            break
    if not Path("/sys/fs/cgroup/memory").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        out.append("a cgroup memory controller")
    for name in ("kubelet", "kube-scheduler", "pause"):
        if assets is None or not os.access(assets / name, os.X_OK):
            out.append(f"{name} in the Kubernetes assets")
    return out


def explain(problems: list[str]) -> str:
    """One line for users: what is missing and the command that provides it."""
    return f"a real node needs {', '.join(problems)}; run `{SETUP_COMMAND}` as root"
