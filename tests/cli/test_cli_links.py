"""`kresume commit` of a folder with symlinks: a link leading out of the folder is refused (its file
would be missing from the committed checkpoint, and nothing outside the folder is ever read); a
relative link inside it is committed and comes back on restore."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "KRESUME_"))}
    return subprocess.run([Path(sys.executable).parent / "kresume", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def hf_folder(root: Path) -> Path:
    folder = root / "checkpoint-300"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "trainer_state.json").write_text('{"global_step": 300}')
    return folder


@pytest.mark.parametrize("target", ["ABS", "../weights.bin", "sub/../../weights.bin"])
def test_a_link_out_of_the_folder_is_refused_with_the_fix(tmp_path, target):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x07" * 64)
    folder = hf_folder(tmp_path)
    os.symlink(str(weights) if target == "ABS" else target, folder / "pytorch_model.bin")
    url = (tmp_path / "store" / "ns" / "run").as_uri()
    proc = _run("commit", str(folder), url, cwd=tmp_path)
    assert proc.returncode == 10, proc.stderr
    assert "pytorch_model.bin: " in proc.stderr and "is a link to" in proc.stderr and "Copy the file into the folder" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _run("latest", url, cwd=tmp_path).returncode == 4  # nothing was committed


def test_a_relative_link_inside_the_folder_is_committed_and_restored(tmp_path):
    folder = hf_folder(tmp_path)
    (folder / "model.safetensors.bin").write_bytes(b"\x07" * 64)
    os.symlink("model.safetensors.bin", folder / "pytorch_model.bin")
    url = (tmp_path / "store" / "ns" / "run").as_uri()
    assert _run("commit", str(folder), url, cwd=tmp_path).returncode == 0
    proc = _run("restore", url, str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    restored = tmp_path / "out" / "checkpoint-300" / "pytorch_model.bin"
    assert restored.is_symlink() and restored.read_bytes() == b"\x07" * 64
