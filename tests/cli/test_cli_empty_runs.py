"""A missing bucket or a mistyped run never looks like success (moto S3 and local folders): a missing
bucket is exit 7 naming it from every command, an empty run is exit 4 (3 for `ls`), and `verify` says
what it checked (a first-time user got `ok` exit 0 from `verify` of a bucket that does not exist)."""

from __future__ import annotations

import uuid

import pytest
import torch

from _fixtures.objstores import SESSION_BUCKET

COMMANDS = [
    ["ls", "URL"],
    ["latest", "URL"],
    ["verify", "URL"],
    ["verify", "URL", "--checksums"],
    ["restore", "URL", "dest"],
    ["restore", "URL", "dest", "-c", "m.ckpt"],
    ["prune", "URL", "--keep-last", "1"],
    ["prune", "URL", "--keep-last", "1", "--dry-run", "--orphans-older-than", "0"],
    ["mark-bad", "URL", "m.ckpt"],
    ["commit", "--no-progress", "m.ckpt", "URL"],
]


@pytest.fixture
def ckpt(tmp_path):
    torch.save({"global_step": 1, "w": torch.ones(3)}, tmp_path / "m.ckpt")
    return tmp_path / "m.ckpt"


def _line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a[:1] + a[2:]) for a in COMMANDS])
def test_missing_bucket_is_exit_7_naming_it(cli, moto_s3, tmp_path, ckpt, args):
    bucket = f"no-such-{uuid.uuid4().hex[:10]}"
    url = moto_s3.url(bucket, "runs/ns/run1") + "/"
    proc = cli(*[url if a == "URL" else a for a in args], cwd=tmp_path, env=moto_s3.env)
    assert proc.returncode == 7, proc.stderr
    assert f"bucket or container does not exist: '{bucket}'" in _line(proc)
    assert "ok" not in proc.stdout


@pytest.mark.parametrize("args,code,needle", [
    (["ls", "URL"], 3, "not a kresume run"),
    (["latest", "URL"], 4, "no valid committed checkpoint"),
    (["verify", "URL"], 4, "nothing is committed under this URL"),
    (["restore", "URL", "dest"], 4, "no valid committed checkpoint to restore"),
    (["prune", "URL", "--keep-last", "1"], 4, "nothing to prune"),
    (["mark-bad", "URL", "m.ckpt"], 4, "no committed checkpoint"),
])
@pytest.mark.parametrize("where", ["s3", "file"])
def test_mistyped_run_is_not_success(cli, moto_s3, tmp_path, args, code, needle, where):
    if where == "s3":
        url, env = moto_s3.url(SESSION_BUCKET, f"typo-{uuid.uuid4().hex[:8]}/ns/run") + "/", moto_s3.env
    else:
        url, env = (tmp_path / "x" / "typo").as_uri() + "/", {}
    proc = cli(*[url if a == "URL" else a for a in args], cwd=tmp_path, env=env)
    assert proc.returncode == code, proc.stderr
    line = _line(proc)
    assert needle in line
    assert "check the URL" in line or "kresume ls" in line
    assert proc.stdout == ""


def test_verify_says_what_it_checked(cli, moto_run_url, tmp_path, ckpt):
    url, env = moto_run_url
    for _ in range(2):
        assert cli("commit", "--no-progress", str(ckpt), url, cwd=tmp_path, env=env).returncode == 0
    size = ckpt.stat().st_size
    proc = cli("verify", url, cwd=tmp_path, env=env)
    assert proc.returncode == 0 and proc.stdout == f"ok: 2 checkpoints, 2 files, {2 * size} bytes checked (sizes)\n"
    proc = cli("verify", "--checksums", url, cwd=tmp_path, env=env)
    assert proc.stdout == f"ok: 2 checkpoints, 2 files, {2 * size} bytes checked (sizes and CRC-32C)\n"


@pytest.mark.parametrize("where", ["s3", "file"])
def test_ls_of_a_namespace_or_base_folder_names_the_runs_below(cli, moto_s3, tmp_path, ckpt, where):
    """A first-time user lists the namespace folder: the error names the runs in it and the command for one."""
    if where == "s3":
        base, env = moto_s3.url(SESSION_BUCKET, f"base-{uuid.uuid4().hex[:8]}"), moto_s3.env
    else:
        base, env = (tmp_path / "base").as_uri(), {}
    for run in ("run-a", "run-b"):
        assert cli("commit", "--no-progress", str(ckpt), f"{base}/ns/{run}/", cwd=tmp_path, env=env).returncode == 0
    proc = cli("ls", f"{base}/ns/", cwd=tmp_path, env=env)
    assert proc.returncode == 3, proc.stderr
    line = _line(proc)
    assert "not a kresume run" in line and "run-a/, run-b/" in line and f"kresume ls {base}/ns/run-a/" in line
    line = _line(cli("ls", f"{base}/", cwd=tmp_path, env=env))
    assert "ns/run-a/, ns/run-b/" in line
