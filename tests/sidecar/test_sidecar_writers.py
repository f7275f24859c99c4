"""The sidecar as a separate process against moto S3 while real trainers write beside it:
Lightning (4 ModelCheckpoint configurations), HF Trainer with save_total_limit, dcp.save on 2 gloo ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

KRESUME = str(Path(sys.executable).with_name("kresume"))  # the installed console script


def _cli(run, *args: str) -> subprocess.CompletedProcess:
    """Run the real ``kresume`` CLI against the run (storage options as ``-o KEY=JSON``)."""
    url, options, env, _ = run
    opts = [a for k, v in options.items() for a in ("-o", f"{k}={json.dumps(v)}")]
    return subprocess.run([KRESUME, args[0], *opts, *args[1:], url], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def _check_store(store, names):
    assert store.verify(checksums=True) == []
    latest = store.latest()
    assert latest is not None
    return latest


@pytest.mark.parametrize("mode", ["default", "last", "link", "topk"])
def test_lightning_every_checkpoint_committed(mode, tmp_path, moto_run, start_sidecar, run_writer, wait_committed):
    watch = tmp_path / "ckpt"
    watch.mkdir()
    store = moto_run[3]
    sc = start_sidecar(watch, moto_run)
    sc.wait_log(lambda r: r.get("msg", "").startswith("watching"))
    # "watching" is logged before the first scan; /readyz turns 200 once that scan is done
    deadline = time.monotonic() + 15
    while sc.get("/readyz")[0] != 200:
        assert time.monotonic() < deadline, sc.tail()
        time.sleep(0.1)
    assert sc.get("/healthz")[0] == 200
    report = run_writer("lightning", str(watch), mode)
    saved = report["saved"]
    steps = {n for n in saved if n != "last.ckpt"}
    assert len(steps) >= 5, saved
    by = wait_committed(store, steps | ({"last.ckpt"} if mode == "last" else set()))
    if mode == "link":
        assert "last.ckpt" not in by  # the symlink is an alias, never uploaded
        sc.wait_log(lambda r: r.get("state") == "alias" and r.get("unit", "").endswith("last.ckpt"))
    for name in steps:
        assert len(by[name]) == 1, f"{name} committed {len(by[name])} times"
    latest = _check_store(store, steps)
    assert latest.step == max(m.step for ms in by.values() for m in ms)
    # acceptance: the CLI names the newest checkpoint and verifies every committed one with checksums
    newest_step = max(m.step for ms in by.values() for m in ms)
    newest_names = {n for n, ms in by.items() if any(m.step == newest_step for m in ms)}
    assert saved[-1] in newest_names or (mode == "link" and saved[-1] == "last.ckpt"), (saved, newest_names)
    out = _cli(moto_run, "latest", "--json")
    assert out.returncode == 0, out.stderr
    cli_latest = json.loads(out.stdout)
    assert cli_latest["step"] == newest_step and cli_latest["url"].rsplit("/", 1)[-1] in newest_names, cli_latest
    out = _cli(moto_run, "verify", "--checksums")
    assert out.returncode == 0 and out.stdout.startswith("ok: ") and "CRC-32C" in out.stdout, (out.stdout, out.stderr)
    status, body = sc.get("/metrics")
    assert status == 200 and "kresume_sidecar_commits_total" in body
    commits = float(next(line.split()[-1] for line in body.splitlines()
                         if line.startswith("kresume_sidecar_commits_total")))
    assert commits >= len(steps)
    rc, out = sc.stop()
    assert rc == 0 and out.startswith("kresume sidecar: committed="), out


def test_hf_trainer_with_save_total_limit(tmp_path, moto_run, start_sidecar, run_writer, wait_committed):
    watch = tmp_path / "out"
    watch.mkdir()
    store = moto_run[3]
    sc = start_sidecar(watch, moto_run)
    sc.wait_log(lambda r: r.get("msg", "").startswith("watching"))
    report = run_writer("hf", str(watch))
    by = wait_committed(store, set(report["saved"]))
    assert not (watch / "checkpoint-5").exists()  # rotated away locally, yet committed
    for name in report["saved"]:
        (m,) = by[name]
        paths = {f.path for f in m.files}
        assert {"trainer_state.json", "model.safetensors", "config.json"} <= paths, paths
        assert m.format == "hf" and m.step == int(name.split("-")[1])
    assert _check_store(store, report["saved"]).step == 15
    assert sc.stop()[0] == 0


def test_dcp_two_gloo_ranks(tmp_path, moto_run, start_sidecar, run_writer, wait_committed):
    watch = tmp_path / "dcp"
    watch.mkdir()
    store = moto_run[3]
    sc = start_sidecar(watch, moto_run)
    sc.wait_log(lambda r: r.get("msg", "").startswith("watching"))
    report = run_writer("dcp", str(watch))
    by = wait_committed(store, set(report["saved"]))
    for name in report["saved"]:
        (m,) = by[name]
        assert {".metadata", "__0_0.distcp", "__1_0.distcp"} <= {f.path for f in m.files}
    assert _check_store(store, report["saved"]).step == 3
    assert sc.stop()[0] == 0
