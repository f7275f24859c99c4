"""What a person at a terminal sees when something is wrong: one line, a documented exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from kresume import resume_from



def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "KRESUME_"))}
    return subprocess.run([Path(sys.executable).parent / "kresume", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def run_url(tmp_path: Path) -> str:
    torch.save({"global_step": 5, "epoch": 0, "w": torch.ones(10)}, tmp_path / "epoch=0-step=5.ckpt")
    url = (tmp_path / "store" / "ns" / "run").as_uri()
    assert _run("commit", "epoch=0-step=5.ckpt", url, cwd=tmp_path).returncode == 0
    return url


@pytest.mark.parametrize("args,code,needle", [
    (["commit", "missing.ckpt", "URL"], 10, "does not exist"),
    (["commit", "truncated.ckpt", "URL"], 10, "incomplete or corrupt"),
    (["restore", "URL", "afile"], 10, "restore destination unusable"),
    (["restore", "URL", "dest", "--checkpoint", "nonsense"], 4, "no committed checkpoint"),
    (["ls", "-o", 'client_kwargs={"a":', "URL"], 2, "does not parse"),
    (["ls", "-o", "=1", "URL"], 2, "empty KEY"),
    (["prune", "URL", "--keep-last", "0"], 2, "keep-last"),
    (["latest", "foo://x"], 2, "unknown protocol"),
])
def test_errors_are_one_line_with_documented_codes(args, code, needle, run_url, tmp_path):
    (tmp_path / "truncated.ckpt").write_bytes((tmp_path / "epoch=0-step=5.ckpt").read_bytes()[:600])
    (tmp_path / "afile").write_text("x")
    proc = _run(*[run_url if a == "URL" else a for a in args], cwd=tmp_path)
    assert proc.returncode == code, proc.stderr
    assert needle in proc.stderr or needle in proc.stdout
    assert "Traceback" not in proc.stderr


def test_ls_shows_bad_marks(run_url, tmp_path):
    cid = _run("latest", "--json", run_url, cwd=tmp_path).stdout.split('"id": "')[1].split('"')[0]
    assert _run("mark-bad", run_url, cid, cwd=tmp_path).returncode == 0
    assert '"bad": true' in _run("ls", "--json", run_url, cwd=tmp_path).stdout
    assert _run("latest", run_url, cwd=tmp_path).returncode == 4


def test_resume_from_local_warns_when_no_restore_was_configured(monkeypatch):
    monkeypatch.setenv("KRESUME_RESUME_FROM", "s3://b/ns/run/checkpoints/x/epoch=0-step=5.ckpt")
    monkeypatch.delenv("KRESUME_RESUME_PATH", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resume_from(local=True) is None
    assert any("kresume.dev/restore" in str(w.message) for w in caught)
