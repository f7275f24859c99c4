"""A real node (containerd + kubelet v1.20) starts, runs pods as real containers, and leaves nothing behind.

One LocalCluster for the module: a hostNetwork busybox pod (non-root, memory limit) runs, its log and exec go
through the API server to the kubelet on 127.0.0.1; a pod without host networking makes the CNI bridge and a
network namespace (nothing is ever sent to them); graceful deletion stops a container; a lost node turns
NotReady and comes back. After stop(): no process, mount, folder, pod log, bridge or namespace of it is left.
Set-up cost: ~10 s to Ready (measured), most of the module's ~60 s is the pods and the clean-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kresume.devtools.kubelet import build, cleanup, images
from kresume.devtools.kubelet.node import default_cache
from kresume.devtools.localcluster import LocalCluster, LocalClusterSettings, available

pytestmark = pytest.mark.slow


def _wait(what: str, probe, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    why = available()
    if why:
        pytest.fail(why, pytrace=False)
    busybox = images.busybox_image(default_cache())
    kresume = build.kresume_image(default_cache())  # from the Dockerfile, no registry; cached by its inputs
    lc = LocalCluster(LocalClusterSettings(images=(busybox, kresume)))
    lc.start()
    try:
        yield lc
    finally:
        lc.stop()


def _pod(name: str, *, host_network: bool = True, command: list[str] | None = None, grace: int = 2) -> dict:
    container = {"name": "c", "image": images.BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
                 "command": command or ["sh", "-c", "echo hello-from-$(id -u); exec sleep 3600"],
                 "securityContext": {"runAsUser": 1000, "runAsNonRoot": True, "allowPrivilegeEscalation": False},
                 "resources": {"limits": {"memory": "64Mi", "cpu": "200m"}}}  # fmt: skip
    if not host_network:
        container = {"name": "c", "image": "k8s.gcr.io/pause:3.2", "imagePullPolicy": "IfNotPresent"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"hostNetwork": host_network, "terminationGracePeriodSeconds": grace,
                     "containers": [container]}}  # fmt: skip


def _phase(lc: LocalCluster, name: str) -> str:
    return lc.plane.kubectl("get", "pod", name, "-o", "jsonpath={.status.phase}", check=False).stdout


def test_node_is_ready_on_loopback(cluster: LocalCluster) -> None:
    node = cluster.nodes[0].node_object()
    assert node is not None and cluster.nodes[0].is_ready()
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses == {"InternalIP": "127.0.0.1", "Hostname": "127.0.0.1"}
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.20.2"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")


def test_pod_runs_as_a_real_container_with_logs_exec_and_limits(cluster: LocalCluster) -> None:
    k = cluster.plane.kubectl
    k("apply", "-f", "-", input=json.dumps(_pod("bb")))
    _wait("pod bb Running", lambda: _phase(cluster, "bb") == "Running")
    pod = json.loads(k("get", "pod", "bb", "-o", "json").stdout)
    assert pod["spec"]["nodeName"] == "127.0.0.1" and pod["status"]["podIP"] == "127.0.0.1"
    _wait("log line", lambda: "hello-from-1000" in k("logs", "bb", check=False).stdout)
    assert k("exec", "bb", "--", "id", "-u").stdout.strip() == "1000"
    limit = k("exec", "bb", "--", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes").stdout.strip()
    assert int(limit) == 64 * 1024 * 1024
    t0 = time.monotonic()
    k("delete", "pod", "bb", "--grace-period=2", "--wait=true", timeout=60)
    assert time.monotonic() - t0 < 30  # sh ignores SIGTERM as PID 1: the kubelet SIGKILLs after the 2 s grace


def test_kresume_image_runs_non_root_with_a_read_only_root(cluster: LocalCluster) -> None:
    k = cluster.plane.kubectl
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kresume-cli", "namespace": "default"},
           "spec": {"hostNetwork": True, "restartPolicy": "Never", "containers": [{
               "name": "c", "image": build.KRESUME_REF, "imagePullPolicy": "IfNotPresent",
               "command": ["sh", "-c", "id -u && kresume --help | head -3 && kresume-sidecar --help | head -1"],
               "securityContext": {"readOnlyRootFilesystem": True, "runAsNonRoot": True,
                                   "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}  # fmt: skip
    k("apply", "-f", "-", input=json.dumps(pod))
    _wait("pod kresume-cli Succeeded", lambda: _phase(cluster, "kresume-cli") in ("Succeeded", "Failed"))
    out = k("logs", "kresume-cli").stdout
    assert _phase(cluster, "kresume-cli") == "Succeeded", out
    assert out.splitlines()[0] == "65532" and "Usage" in out


def test_pod_network_makes_a_bridge_that_stop_removes(cluster: LocalCluster) -> None:
    k = cluster.plane.kubectl
    k("apply", "-f", "-", input=json.dumps(_pod("netpod", host_network=False)))
    _wait("pod netpod Running", lambda: _phase(cluster, "netpod") == "Running")
    assert cleanup.link_exists(cluster.nodes[0].bridge)


def test_lost_node_turns_not_ready_and_comes_back(cluster: LocalCluster) -> None:
    node = cluster.nodes[0]
    k = cluster.plane.kubectl
    k("apply", "-f", "-", input=json.dumps(_pod("survivor")))
    _wait("pod survivor Running", lambda: _phase(cluster, "survivor") == "Running")
    node.lose()
    _wait("node NotReady", lambda: not node.is_ready(), timeout=90)
    k("delete", "pod", "survivor", "--force", "--grace-period=0")
    node.restart_kubelet()
    assert node.is_ready()
    k("apply", "-f", "-", input=json.dumps(_pod("after")))
    _wait("pod after Running", lambda: _phase(cluster, "after") == "Running")


def test_stop_leaves_nothing_behind(cluster: LocalCluster) -> None:
    node = cluster.nodes[0]
    assert node.workdir is not None and node.containerd is not None
    workdir, state, bridge = node.workdir, node.containerd.state, node.bridge
    uids = os.listdir(workdir / "kubelet" / "pods")
    assert uids, "the pods of this module ran on the node"
    assert cleanup.mounts_under(cleanup.MOUNTINFO.read_text(), [workdir, state])
    netns_before = set(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else set()
    assert any(n.startswith("cni-") for n in netns_before)
    problems = cluster.stop()
    assert problems == []
    assert cleanup.mounts_under(cleanup.MOUNTINFO.read_text(), [workdir, state, node.cache]) == []
    assert not workdir.exists() and not state.exists()
    assert not cleanup.link_exists(bridge)
    left_logs = [n for n in cleanup.list_pod_logs() if n.split("_")[:2] in (
        ["default", p] for p in ("bb", "netpod", "survivor", "after", "kresume-cli"))]  # fmt: skip
    assert left_logs == []
    if cleanup.CONTAINER_LOG_DIR.is_dir():
        assert not any(p.name.split("_")[0] in ("bb", "netpod", "survivor", "after")
                       for p in cleanup.CONTAINER_LOG_DIR.iterdir())  # fmt: skip
    netns_after = set(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else set()
    assert netns_after.isdisjoint(n for n in netns_before if n.startswith("cni-"))
    left = subprocess.run(["pgrep", "-af", f"{state}|{workdir}"], capture_output=True, text=True).stdout
    assert left == "", f"processes left: {left}"
    assert not Path("/var/lib/kubelet/device-plugins/kubelet.sock").exists()
