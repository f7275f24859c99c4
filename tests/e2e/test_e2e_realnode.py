"""The product, end to end, on a real node: `kresume demo --node kubelet --preemptions 3` runs the trainer, the
injected sidecar and the operator as containers from locally built images (containerd + kubelet v1.20), with the
chart installed by the Helm SDK and `helm test` passing; preemptions are a graceful pod deletion during a
checkpoint write, one during an upload, and a node loss; every restart resumes from the newest committed
checkpoint. An opted-in pod in a PodSecurity-restricted namespace (PodSecurityPolicy) starts with the injected
containers. Afterwards nothing of the node is left running or mounted.

Runs the demo as a separate process, as a user would, and reads its --json-out. Cost (2 busy cores): the image
builds are cached by their inputs (cold: ~6-9 min, see README), the run itself ~4-6 min.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kresume.devtools.kubelet import cleanup


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_demo_on_a_real_kubelet_survives_write_upload_and_node_loss(tmp_path: Path):
    out = tmp_path / "result.json"
    mounts_before = set(cleanup.mounts_under(cleanup.MOUNTINFO.read_text(), [Path("/var/tmp"), Path("/run")]))
    proc = subprocess.run(
        [sys.executable, "-m", "kresume.devtools.demo", "--node", "kubelet", "--preemptions", "3", "--seed", "7", "--modes", "write,upload,kill",
         "--max-steps", "200", "--step-seconds", "0.05", "--work-dir", str(tmp_path / "demo"), "--json-out", str(out),
         "--timeout", "1500"],
        capture_output=True, text=True, timeout=2300,
    )  # fmt: skip
    assert out.exists(), f"no result (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    result = json.loads(out.read_text())
    for key, value in sorted(result["durations"].items()):  # the numbers for the README (pytest -rA)
        print(f"{key}: {value}")
    for p in result["preemptions"]:
        print(f"preemption {p['index']} {p['mode']}: step {p['last_step_before']} -> resumed {p['resumed_step']}, "
              f"lost {p['lost_steps']}, time to resume {p['time_to_resume_s']:.1f} s")
    assert result["problems"] == [], proc.stdout[-6000:]
    assert proc.returncode == 0 and result["ok"]
    assert result["node"] == "real kubelet" and "node: real kubelet" in proc.stdout
    assert result["helm_test"]["passed"] is True
    restricted = result["restricted_namespace"]
    assert restricted["enforced_by"] == "PodSecurityPolicy kresume-restricted"
    assert "kresume-sidecar" in restricted["containers"] and restricted["hostNetwork_pod_refused"]
    assert result["final_step"] == 200
    assert sorted(p["mode"] for p in result["preemptions"]) == ["kill", "upload", "write"]
    admissions = result["admissions"]
    assert len(admissions) == 4 and admissions[0]["injected_url"] is None
    for adm, pre in zip(admissions[1:], result["preemptions"], strict=True):
        # The injected checkpoint loads; the trainer starts at it, or at the old pod's final save when that was
        # committed after the admission (resume_from() reads the run's latest; the demo's checks verify which).
        assert adm["injected_url"] and adm["injected_step"] == adm["loaded_step"]
        assert adm["start_step"] >= adm["injected_step"]
        assert pre["resumed_step"] == adm["start_step"] and pre["lost_steps"] >= 0
        # The time line is whole on the real node too (issue 15 item 2): the admission from the in-cluster
        # operator's log, the final save's commit from the sidecar log copied while the old pod ran.
        split = pre["timeline"]
        known = ["replacement_created_s", "admission_s", "pod_start_s", "startup_s", "first_step_s", "total_s"]
        if pre["mode"] != "kill":
            known += ["sigterm_to_trainer_exit_s", "final_commit_s", "old_pod_done_s"]
        assert [k for k in known if split.get(k) is None] == [] and split["answer"], split
    assert "demo-train" in result["ckptrun"]
    # Nothing left: no process of the run, no new mount under /var/tmp or /run, no pod log of its namespaces.
    leftovers = subprocess.run(["pgrep", "-af", f"{tmp_path}|kresume-node-|/run/krn-"], capture_output=True,
                               text=True).stdout.strip()  # fmt: skip
    assert leftovers == "", f"the demo left processes behind: {leftovers}"
    mounts_after = set(cleanup.mounts_under(cleanup.MOUNTINFO.read_text(), [Path("/var/tmp"), Path("/run")]))
    assert mounts_after <= mounts_before, f"left mounted: {sorted(mounts_after - mounts_before)}"
    assert not [n for n in cleanup.list_pod_logs() if n.startswith(("kresume-demo", "kresume-system"))]
