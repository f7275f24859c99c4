"""Smoke run of ``python -m bench --quick``: every row runs end to end with tiny inputs, so the
bench cannot rot. Real servers (SeaweedFS, rclone serve s3), real tools (kresume, s5cmd, rclone),
the real sidecar and the example trainer. No timing is asserted: only that each row produced
numbers. (The webhook row runs a control plane; it has its own module and is left out here.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_bench_quick_prints_every_row(tmp_path: Path) -> None:
    out_md = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "transfer,durable,memory,training",
         "--workdir", str(tmp_path / "work"), "--write", str(out_md)],
        cwd=ROOT, capture_output=True, text=True, timeout=1100, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out_md.read_text()
    for server in ("seaweedfs", "rclone"):
        for row in ("upload file 8 MB", "restore file 8 MB", "upload folder 4 x 1 MB", "restore folder 4 x 1 MB"):
            assert f"| {row} | {server} |" in text, f"missing {row} on {server}"
    for tool in ("kresume", "s5cmd", "rclone", "fsspec", "cp"):
        assert f"| {tool} |" in text
    for metric in ("sidecar overhead", "sidecar peak RSS, 16 MB ckpt", "`kresume commit` peak RSS",
                   "training overhead"):
        assert metric in text
    assert "load average at end" in text
    # Inputs and downloads are removed as the rows finish.
    left = [p for p in (tmp_path / "work").rglob("*") if p.is_file()]
    assert left == [], left
