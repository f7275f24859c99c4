"""The real node's configuration files and clean-up decisions (pure; no processes)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from kresume.devtools.kubelet import cleanup, configs


def test_containerd_config_keeps_the_mandatory_settings() -> None:
    text = configs.containerd_config(root=Path("/c/root"), state=Path("/run/s"), socket=Path("/run/s/c.sock"),
                                     cni_conf_dir=Path("/c/cni"))  # fmt: skip
    cfg = tomllib.loads(text)
    cri = cfg["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True  # root lacks CAP_SYS_RESOURCE here (shared/k8s/README.md)
    assert cri["sandbox_image"] == configs.SANDBOX_IMAGE
    assert cri["stream_server_address"] == "127.0.0.1" and cri["disable_tcp_service"] is True
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {"SystemdCgroup": False, "Root": "/run/s/runc"}
    assert cfg["root"] == "/c/root" and cfg["state"] == "/run/s" and cfg["grpc"]["address"] == "/run/s/c.sock"
    assert cri["cni"]["conf_dir"] == "/c/cni"


def test_kubelet_config_serves_on_loopback_only() -> None:
    cfg = configs.kubelet_config(port=12345, healthz_port=12346)
    assert cfg["address"] == cfg["healthzBindAddress"] == "127.0.0.1"
    assert (cfg["port"], cfg["healthzPort"], cfg["readOnlyPort"]) == (12345, 12346, 0)
    assert cfg["cgroupDriver"] == "cgroupfs" and cfg["cgroupsPerQOS"] is False
    assert cfg["imageGCHighThresholdPercent"] == 100  # local images cannot be pulled again


def test_cni_conflist_is_a_bridge_without_gateway() -> None:
    conf = json.loads(configs.cni_conflist(bridge="krn1x1", subnet="10.99.1.0/24", ipam_dir=Path("/s/ipam")))
    bridge = conf["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["isGateway"] is False and bridge["ipMasq"] is False
    assert bridge["ipam"]["dataDir"] == "/s/ipam"
    with pytest.raises(ValueError, match="15 characters"):
        configs.cni_conflist(bridge="a-very-long-bridge", subnet="10.0.0.0/24", ipam_dir=Path("/x"))


MOUNTINFO = """\
22 1 8:1 / / rw - ext4 /dev/vda rw
100 22 8:1 /var/tmp/n/kubelet /var/tmp/n/kubelet rw - ext4 /dev/vda rw
101 100 0:50 / /var/tmp/n/kubelet/pods/u1/volumes/kubernetes.io~secret/tok rw - tmpfs tmpfs rw
102 22 0:51 / /run/krn-x/io.containerd.runtime.v2.task/k8s.io/abc/rootfs rw - overlay overlay rw
103 22 0:52 / /var/tmp/n2/with\\040space rw - tmpfs tmpfs rw
104 22 0:53 / /var/tmp/nother rw - tmpfs tmpfs rw
"""


def test_mounts_under_lists_deepest_first_and_only_below_the_roots() -> None:
    got = cleanup.mounts_under(MOUNTINFO, [Path("/var/tmp/n"), Path("/run/krn-x/"), Path("/var/tmp/n2")])
    assert got[0] == Path("/var/tmp/n/kubelet/pods/u1/volumes/kubernetes.io~secret/tok")
    assert set(got) == {Path("/var/tmp/n/kubelet"), Path("/var/tmp/n/kubelet/pods/u1/volumes/kubernetes.io~secret/tok"),
                        Path("/run/krn-x/io.containerd.runtime.v2.task/k8s.io/abc/rootfs"),
                        Path("/var/tmp/n2/with space")}  # fmt: skip
    assert Path("/var/tmp/nother") not in got  # a sibling with the same prefix is not below the root


def test_pod_log_dirs_match_on_the_uid() -> None:
    names = ["ns_a_u1", "ns_b_u2", "ns_with_underscore_u3"]
    assert cleanup.pod_log_dirs(names, ["u1", "u3"]) == ["ns_a_u1", "ns_with_underscore_u3"]
