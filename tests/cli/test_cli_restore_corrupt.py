"""A restore that finds a corrupt object says how to move on: mark it bad, or pick an older id."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "KRESUME_"))}
    return subprocess.run([Path(sys.executable).parent / "kresume", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_corrupt_object_exit_9_names_the_fix(tmp_path):
    torch.save({"global_step": 5, "w": torch.ones(1000)}, tmp_path / "epoch=0-step=5.ckpt")
    url = (tmp_path / "store" / "ns" / "run").as_uri()
    assert _run("commit", "epoch=0-step=5.ckpt", url, cwd=tmp_path).returncode == 0
    (obj,) = (tmp_path / "store" / "ns" / "run" / "checkpoints").rglob("*.ckpt")
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one bit pattern changed
    obj.write_bytes(bytes(data))
    proc = _run("restore", url, str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 9, proc.stderr
    assert "crc32c" in proc.stderr and f"kresume mark-bad {url} " in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
