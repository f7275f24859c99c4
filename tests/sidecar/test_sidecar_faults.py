"""Faults with the sidecar as a real process on moto S3: truncated files, links out of the folder,
deletion and rewrite mid-upload, kill -9 and restart, SIGTERM while writing and uploading."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import torch

SECRET = "AKIAKRESUMETESTSECRET/do-not-upload"


def _all_object_bytes(store):
    fs, root = store.fs, store.root
    for path in fs.find(root):
        yield path, fs.cat_file(path)


def _pointer_sound(store):
    """The pointer (if any) names a manifest whose objects all verify."""
    ptr = store.read_pointer()
    if ptr is None:
        return None
    assert store.read_manifest(ptr.checkpoint) is not None, f"pointer names uncommitted {ptr.checkpoint}"
    assert store.verify(ptr.checkpoint, checksums=True) == []
    return ptr


def test_truncated_and_symlinks_never_committed_or_read(tmp_path, moto_run, start_sidecar, wait_committed):
    store = moto_run[3]
    outside = tmp_path / "secrets"
    outside.mkdir()
    creds = outside / "credentials.json"
    creds.write_text(json.dumps({"aws_secret_access_key": SECRET}))
    watch = tmp_path / "w" / "ckpt"
    watch.mkdir(parents=True)
    torch.save({"w": torch.randn(1000), "global_step": 10}, watch / "epoch=0-step=10.ckpt")
    good = (watch / "epoch=0-step=10.ckpt").read_bytes()
    (watch / "epoch=0-step=20.ckpt").write_bytes(good[: len(good) // 2])  # truncated forever
    (watch / "..ckpt").write_bytes(good)  # a name starting with ".." is just a name
    os.symlink("../../../../../../../etc/passwd", watch / "last.ckpt")
    os.symlink(str(creds), watch / "creds.ckpt")
    os.symlink("/etc", watch / "checkpoint-3")
    os.symlink(str(outside), watch / "outside-dir")
    evil = watch / "evil"
    evil.mkdir()
    os.symlink("/etc/passwd", evil / "passwd")
    os.symlink(str(creds), evil / "credentials.json")
    (evil / "weights.bin").write_bytes(b"\x00" * 100)
    (evil / ".kresume-complete").write_text("")
    linked = watch / "linked"  # a relative link inside the folder is kept and restored
    linked.mkdir()
    (linked / "weights.bin").write_bytes(b"\x01" * 100)
    os.symlink("weights.bin", linked / "pytorch_model.bin")
    (linked / ".kresume-complete").write_text("")
    sc = start_sidecar(watch, moto_run)
    by = wait_committed(store, {"epoch=0-step=10.ckpt", "..ckpt", "linked"})
    sc.wait_log(lambda r: r.get("unit") == "epoch=0-step=20.ckpt" and r.get("state") == "corrupt", 30)
    # A folder with links leading out of it would be committed without those files: refused, loudly.
    sc.wait_log(lambda r: r.get("unit") == "evil" and "outside the checkpoint folder" in r.get("msg", ""), 30)
    assert "epoch=0-step=20.ckpt" not in by and "evil" not in by
    (m,) = by["linked"]
    assert {f.path for f in m.files} == {"weights.bin", ".kresume-complete"}
    assert {(ln.path, ln.target) for ln in m.links} == {("pytorch_model.bin", "weights.bin")}
    restored = store.restore(tmp_path / "restored", m.id)
    assert (restored / "pytorch_model.bin").read_bytes() == b"\x01" * 100
    passwd = open("/etc/passwd", "rb").read()[:64]
    for path, data in _all_object_bytes(store):
        assert SECRET.encode() not in data, path
        assert passwd not in data, path
    assert store.verify(checksums=True) == []
    assert sc.stop()[0] == 0


def test_deleted_and_rewritten_mid_upload(tmp_path, moto_run, start_sidecar, wait_committed):
    store = moto_run[3]
    watch = tmp_path / "ckpt"
    watch.mkdir()
    sc = start_sidecar(watch, moto_run, "--concurrency", "1")
    sc.wait_log(lambda r: r.get("msg", "").startswith("watching"))
    a, b = watch / "epoch=0-step=10.ckpt", watch / "epoch=0-step=20.ckpt"
    torch.save({"w": torch.randn(12 * 2**20), "global_step": 10}, a)  # 48 MiB
    sc.wait_log(lambda r: r.get("unit") == a.name and r.get("msg", "").startswith("complete"))
    a.unlink()  # Lightning deletes the previous checkpoint right after the next save
    torch.save({"w": torch.randn(12 * 2**20), "global_step": 20}, b)
    sc.wait_log(lambda r: r.get("unit") == b.name and r.get("msg", "").startswith("complete"))
    with open(b, "r+b") as f:  # an in-place O_TRUNC-style rewrite while it is queued/uploading
        data = f.read()
        f.seek(0)
        f.truncate()
        f.write(data[: len(data) // 3])
        f.flush()
        time.sleep(0.5)
        f.write(data[len(data) // 3:])
    by = wait_committed(store, {a.name, b.name}, 90)
    assert store.verify(checksums=True) == []
    # whatever committed for b is the whole file (the rewrite wrote identical bytes back)
    (mb,) = by[b.name]
    assert mb.files[0].size == len(data)
    assert sc.stop()[0] == 0


def test_kill9_mid_upload_then_restart(tmp_path, moto_run, start_sidecar, wait_committed):
    store = moto_run[3]
    watch = tmp_path / "ckpt"
    watch.mkdir()
    names = []
    for i in range(1, 5):
        names.append(f"epoch=0-step={i * 10}.ckpt")
        torch.save({"w": torch.randn(10 * 2**20), "global_step": i * 10}, watch / names[-1])  # 40 MiB each
    rng = random.Random(7)
    for _ in range(3):
        sc = start_sidecar(watch, moto_run, "--concurrency", "1")
        sc.wait_log(lambda r: r.get("msg", "").startswith("complete"))
        time.sleep(rng.uniform(0.05, 1.0))
        os.kill(sc.proc.pid, signal.SIGKILL)
        sc.proc.wait(30)
        _pointer_sound(store)
        assert store.verify(checksums=True) == []  # only complete checkpoints are ever committed
    sc = start_sidecar(watch, moto_run)
    by = wait_committed(store, set(names), 120)
    assert all(len(by[n]) == 1 for n in names), {n: len(by[n]) for n in names}
    assert _pointer_sound(store).step == 40
    assert sc.stop()[0] == 0


def test_sigterm_while_writing_and_uploading(tmp_path, moto_run, start_sidecar):
    store = moto_run[3]
    watch = tmp_path / "ckpt"
    watch.mkdir()
    sc = start_sidecar(watch, moto_run, "--grace-seconds", "20")
    sc.wait_log(lambda r: r.get("msg", "").startswith("watching"))
    writer = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "sidecar_writers.py"),
                               "torch", str(watch), "8", "24", "0.3"], stdout=subprocess.PIPE, text=True)
    try:
        saved_before = []
        for line in writer.stdout:
            saved_before.append(json.loads(line))
            if len(saved_before) == 3:
                break
        t0 = time.monotonic()
        rc, out = sc.stop(signal.SIGTERM, timeout=40)
        elapsed = time.monotonic() - t0
    finally:
        writer.kill()
        writer.wait()
    assert rc == 0
    assert out.startswith("kresume sidecar: committed=") and "abandoned=" in out and "bytes=" in out, out
    assert len(out.strip().splitlines()) == 1
    assert elapsed < 25
    ptr = _pointer_sound(store)
    newest_before = int(saved_before[-1]["saved_one"].split("step=")[1].split(".")[0])
    assert ptr is not None and ptr.step >= newest_before, (ptr, saved_before)
    assert store.verify(checksums=True) == []
