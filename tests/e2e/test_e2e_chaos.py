"""The product, end to end: `kresume demo --preemptions 3` on the real control plane, SeaweedFS, the operator
process and the local node agent; a real Lightning Job is preempted during a checkpoint write, during an
upload and by SIGKILL, and every restart must resume from the newest committed checkpoint.

Runs the demo as a separate process (as a user would) and reads its --json-out. About 4-6 min on 2 busy
cores (the trainer's torch + Lightning import dominates every restart).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_demo_survives_three_preemptions_with_zero_bad_resumes(tmp_path: Path):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "kresume.devtools.demo", "--preemptions", "3", "--seed", "7", "--max-steps", "200",
         "--step-seconds", "0.05", "--work-dir", str(tmp_path / "demo"), "--json-out", str(out), "--timeout", "1200"],
        capture_output=True, text=True, timeout=1400,
    )  # fmt: skip
    assert out.exists(), f"no result (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    result = json.loads(out.read_text())
    for p in result["preemptions"]:  # the numbers for bench/RESULTS.md (shown with pytest -rA)
        print(f"preemption {p['index']} {p['mode']}: step {p['last_step_before']} -> resumed {p['resumed_step']}, "
              f"lost {p['lost_steps']}, time to resume {p['time_to_resume_s']:.1f} s")
    assert result["problems"] == [], proc.stdout[-6000:]
    assert proc.returncode == 0 and result["ok"]
    assert result["final_step"] == 200
    modes = sorted(p["mode"] for p in result["preemptions"])
    assert modes == ["kill", "upload", "write"]
    admissions = result["admissions"]
    assert len(admissions) == 4 and admissions[0]["injected_url"] is None
    for adm, pre in zip(admissions[1:], result["preemptions"], strict=True):
        assert adm["injected_url"] and adm["start_step"] == adm["injected_step"] == adm["loaded_step"]
        assert pre["resumed_step"] == adm["start_step"] and pre["lost_steps"] >= 0
    assert "demo-train" in result["ckptrun"]
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], "the demo left processes behind"
