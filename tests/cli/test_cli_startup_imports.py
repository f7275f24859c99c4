"""A one-shot ``kresume restore`` / ``latest`` on the native client loads no heavy module (issue 17 item 1).

Each case runs the real command in a fresh interpreter against the moto S3 server, as the restore init step
does, and records ``sys.modules`` at the moment the command exits (``exit_now``, the CLI's last call). The
restore must have happened (bytes and CRC checked by kresume, file in place); then none of the libraries the
command does not use may have been imported: typer/click/rich/pydantic (the full CLI), fsspec and the
aiobotocore stack (the native client serves s3://), kubernetes/kopf, torch, and kresume's commit-side modules.
Module names only, never times (bench/RESULTS.md "CLI start-up" has the times).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from _fixtures.objstores import SESSION_BUCKET

#: Top-level packages a native-client restore must not import, and kresume modules of other paths.
HEAVY = ("typer", "click", "rich", "pydantic", "fsspec", "s3fs", "aiobotocore", "botocore", "aiohttp",
         "kubernetes", "kopf", "torch", "lightning", "yaml", "watchdog", "prometheus_client")
OTHER_PATHS = ("kresume.store.commit", "kresume.store.partcommit", "kresume.store.prune", "kresume.store.verify",
               "kresume.formats", "kresume.operator", "kresume.sidecar", "kresume.devtools", "kresume.preemption",
               "kresume.resume", "kresume.cli.typer_app", "kresume.cli.store_cmds")

DRIVER = """
import json, os, sys
from kresume.store import deadline
def exit_now(code):
    with open(os.environ["MODULES_OUT"], "w") as f:
        json.dump({"code": code, "modules": sorted(sys.modules)}, f)
    os._exit(code)
deadline.exit_now = exit_now
from kresume.cli import main
main(sys.argv[1:])
"""


def heavy_modules(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(OTHER_PATHS))


def run_recorded(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / f"modules-{uuid.uuid4().hex[:6]}.json"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "KRESUME_", "FSSPEC_"))}
    proc = subprocess.run([sys.executable, "-c", DRIVER, *args], env={**base, **env, "MODULES_OUT": str(out)},
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    return proc, json.loads(out.read_text())


@pytest.fixture
def committed(moto_s3, tmp_path) -> tuple[str, dict[str, str], bytes]:
    """``(run URL, env, data)``: a run on moto with one committed 3 MB checkpoint."""
    from kresume.store.local import snapshot
    from kresume.store.runstore import RunStore

    url = moto_s3.url(SESSION_BUCKET, f"startup-{uuid.uuid4().hex[:10]}/ns/run") + "/"
    data = os.urandom(3 * 2**20)
    src = tmp_path / "ckpt" / "model.ckpt"
    src.parent.mkdir()
    src.write_bytes(data)
    with snapshot(src, root=src.parent) as snap:
        RunStore.open(url, moto_s3.storage_options).commit(snap)
    return url, dict(moto_s3.env), data


def test_a_restore_imports_no_heavy_module(committed, tmp_path):
    url, env, data = committed
    proc, seen = run_recorded(["restore", url, str(tmp_path / "out"), "--no-progress", "--result-file",
                               str(tmp_path / "result.json")], env, tmp_path)
    assert proc.returncode == 0 and seen["code"] == 0, proc.stderr
    assert (tmp_path / "out" / "model.ckpt").read_bytes() == data
    assert json.loads((tmp_path / "result.json").read_text())["source"] == "store"
    assert "kresume.store.native" in seen["modules"] and "obstore" in seen["modules"]  # the native client ran
    assert heavy_modules(seen["modules"]) == []


def test_a_restore_from_the_node_cache_imports_no_heavy_module(committed, moto_s3, tmp_path):
    from kresume.store.local import snapshot
    from kresume.store.nodecache import NodeCache
    from kresume.store.runstore import RunStore

    url, env, data = committed
    cache = tmp_path / "cache"
    store = RunStore.open(url, moto_s3.storage_options)
    manifest = store.resolve_checkpoint(None)
    src = tmp_path / "ckpt" / "model.ckpt"
    with snapshot(src, root=src.parent) as snap:  # what the sidecar does as it commits
        assert NodeCache(cache, max_bytes=2**40).put(store.url, manifest, snap.files) is not None
    proc, seen = run_recorded(["restore", url, str(tmp_path / "b"), "--progress-every", "0", "--cache-dir",
                               str(cache), "--result-file", str(tmp_path / "result.json")], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "result.json").read_text())["source"] == "cache"
    assert (tmp_path / "b" / "model.ckpt").read_bytes() == data
    assert heavy_modules(seen["modules"]) == []


def test_latest_imports_no_heavy_module_and_an_error_keeps_its_exit_code(committed, tmp_path):
    url, env, _ = committed
    proc, seen = run_recorded(["latest", url, "--json"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["url"].startswith(url)
    assert heavy_modules(seen["modules"]) == []
    empty = url.rstrip("/") + "-empty/"
    proc, seen = run_recorded(["restore", empty, str(tmp_path / "c"), "--no-progress"], env, tmp_path)
    assert proc.returncode == 4 and seen["code"] == 4
    assert proc.stderr.startswith("kresume: error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert heavy_modules(seen["modules"]) == []


def test_the_check_sees_a_heavy_module():
    assert heavy_modules(["fsspec.spec", "kresume.store.native", "typer", "kresume.formats.checks"]) == [
        "fsspec.spec", "kresume.formats.checks", "typer"]
