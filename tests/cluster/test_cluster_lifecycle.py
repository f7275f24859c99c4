"""The harness cleans up after itself: missing assets and failed starts fail loudly and leave nothing behind;
stop() ends every process and removes the work directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from kresume.devtools.cluster import AssetsMissingError, ControlPlane, ControlPlaneError, ControlPlaneSettings

TESTS_DIR = Path(__file__).resolve().parents[1]


def test_missing_assets_name_the_fetch_command(tmp_path: Path):
    (tmp_path / "etcd").touch(mode=0o755)
    settings = ControlPlaneSettings(assets_dir=tmp_path, work_root=tmp_path)
    with pytest.raises(AssetsMissingError, match=r"scripts/k8s-assets\.sh") as missing:
        ControlPlane(settings).start()
    assert "kube-apiserver" in str(missing.value) and "'etcd'" not in str(missing.value)
    assert not list(tmp_path.glob("kresume-cp-*"))


def test_fixture_fails_instead_of_skipping_without_assets(tmp_path: Path):
    (tmp_path / "test_needs_cluster.py").write_text("def test_x(control_plane):\n    pass\n")
    empty = tmp_path / "no-assets"
    empty.mkdir()
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "_fixtures.cluster", "-q", "-o", f"pythonpath={TESTS_DIR}",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_needs_cluster.py")],
        capture_output=True, text=True, env={**os.environ, "KUBEBUILDER_ASSETS": str(empty)}, timeout=120,
    )  # fmt: skip
    assert "1 error" in res.stdout and "skipped" not in res.stdout, res.stdout
    assert "Run: scripts/k8s-assets.sh" in res.stdout


def test_failed_start_reports_log_tail_and_leaves_nothing(tmp_path: Path):
    settings = ControlPlaneSettings(apiserver_flags=("--no-such-flag",), controller_manager=False, work_root=tmp_path)
    plane = ControlPlane(settings)
    with pytest.raises(ControlPlaneError, match="unknown flag: --no-such-flag"):
        plane.start()
    assert not list(tmp_path.glob("kresume-cp-*"))
    assert not _our_control_plane_children(tmp_path)


def test_stop_ends_every_process_and_removes_the_workdir(tmp_path: Path):
    plane = ControlPlane(ControlPlaneSettings(work_root=tmp_path)).start()
    try:
        workdir = plane.workdir
        assert workdir is not None and workdir.parent == tmp_path
        children = _our_control_plane_children(tmp_path)
        assert sorted(p.name() for p in children) == ["etcd", "kube-apiserver", "kube-controller-manager"]
        assert any(workdir.glob("etcd-*/member"))  # etcd data lives in the work directory
    finally:
        plane.stop()
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive
    assert not workdir.exists() and plane.workdir is None


def _our_control_plane_children(work_root: Path) -> list[psutil.Process]:
    """Live (non-zombie) descendants of this process whose command line points into ``work_root``."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and str(work_root) in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def test_restart_apiserver_keeps_etcd_data_and_clients(tmp_path: Path):
    with ControlPlane(ControlPlaneSettings(controller_manager=False, work_root=tmp_path)) as plane:
        plane.kubectl("create", "configmap", "survives", "--from-literal=k=v")
        old_pid = next(p.pid for p in plane._procs if p.name == "kube-apiserver")
        took = plane.restart_apiserver(down_seconds=0.5)
        new_pid = next(p.pid for p in plane._procs if p.name == "kube-apiserver")
        assert new_pid != old_pid and not psutil.pid_exists(old_pid or -1)
        assert took > 0
        # Same port, token and CA: the existing kubeconfig works, and the data in etcd is still there.
        out = plane.kubectl("get", "configmap", "survives", "-o", "jsonpath={.data.k}").stdout
        assert out == "v"
        assert [p.name for p in plane._procs] == ["etcd", "kube-apiserver"]
    assert not list(tmp_path.glob("kresume-cp-*"))
