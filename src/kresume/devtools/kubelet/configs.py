"""The configuration files of a real node (pure: settings in, text or dicts out).

The values are the ones measured to work on this machine kind (``../shared/k8s/README.md``, "A real node"):

- containerd 1.6 (Debian bookworm): ``restrict_oom_score_adj = true`` is MANDATORY where root lacks
  CAP_SYS_RESOURCE (runc cannot set the sandbox's ``oom_score_adj`` of -998 and every pod fails with
  ``can't get final child's PID from pipe: EOF``); cgroup v1 with the cgroupfs driver; overlayfs; runc v2 shim.
- kubelet v1.20 (``KubeletConfiguration`` v1beta1): cgroupfs, no QoS cgroups, no node-allocatable enforcement,
  swap tolerated, no iptables chains, anonymous + AlwaysAllow on 127.0.0.1 only.
- CNI: a host-local bridge. It exists only so the node reports Ready (the kubelet's runtime-network check);
  every pod of the local cluster uses ``hostNetwork: true`` and no traffic is ever sent to a bridge address.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SANDBOX_IMAGE = "k8s.gcr.io/pause:3.2"
"""The pause image name kubelet v1.20 and containerd expect by default; built locally (:mod:`.images`)."""
CNI_BIN_DIR = Path("/usr/lib/cni")
"""Where Debian's ``containernetworking-plugins`` installs the plugins."""


def containerd_config(*, root: Path, state: Path, socket: Path, cni_conf_dir: Path,
                      sandbox_image: str = SANDBOX_IMAGE) -> str:
    """containerd 1.6 ``config.toml`` (version 2) for one node.

    ``root``: persistent state (content store, snapshots, metadata: the image cache); ``state``: runtime state
    (task bundles, runc's state via the runc options' ``Root``; removed on clean-up); ``socket``: the gRPC socket
    (under 108 bytes). The shims' own sockets go to ``/run/containerd/s`` whatever the config says (1.6).
    Every other value is ``containerd config default``'s, except the ones the module docstring names.
    """
    return f"""\
version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "warn"

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "{sandbox_image}"
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  systemd_cgroup = false
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf_dir}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{state}/runc"
"""


def kubelet_config(*, port: int, healthz_port: int, address: str = "127.0.0.1",
                   static_pod_dir: Path | None = None) -> dict[str, Any]:
    """``KubeletConfiguration`` (kubelet.config.k8s.io/v1beta1) serving on ``address``:``port`` (the node's address,
    a loopback one: the API server reaches it there for logs/exec) and ``/healthz`` on ``address``:``healthz_port``.

    Eviction thresholds are low (1 % disk, 100 Mi memory) and image GC is off, so a full shared disk does not
    evict the test pods or delete the locally built images (which cannot be pulled again).
    """
    cfg: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": address, "port": port, "readOnlyPort": 0,
        "healthzBindAddress": address, "healthzPort": healthz_port,
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs", "cgroupsPerQOS": False, "enforceNodeAllocatable": [],
        "failSwapOn": False, "makeIPTablesUtilChains": False, "clusterDomain": "cluster.local",
        "evictionHard": {"nodefs.available": "1%", "imagefs.available": "1%", "memory.available": "100Mi"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "4s", "syncFrequency": "10s",
    }  # fmt: skip
    if static_pod_dir is not None:
        cfg["staticPodPath"] = str(static_pod_dir)
    return cfg


def cni_conflist(*, bridge: str, subnet: str, ipam_dir: Path) -> str:
    """A CNI 0.4.0 conflist: ``bridge`` (no gateway, no masquerade: nothing routes through it) with host-local
    IPAM on ``subnet`` (addresses recorded in ``ipam_dir``), then ``portmap`` and ``loopback``."""
    if len(bridge) > 15:
        raise ValueError(f"CNI bridge name {bridge!r}: at most 15 characters (Linux IFNAMSIZ - 1)")
    conf = {
        "cniVersion": "0.4.0", "name": bridge, "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": False, "ipMasq": False,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": str(ipam_dir)}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }  # fmt: skip
    return json.dumps(conf, indent=1)
