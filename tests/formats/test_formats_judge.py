"""Completeness verdicts on real checkpoints: torch.save, safetensors, HF-shaped folders, dcp.save,
DeepSpeed-shaped tag folders, marker folders; truncated and rewritten copies of each."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file

import kresume
from kresume.formats.judge import ContentReader, judge
from kresume.formats.listing import scan
from kresume.formats.units import Rules, find_units

NOW = time.time_ns()
SETTLE = 2 * 10**9


def verdicts(root, now_ns=None, rules=Rules()):
    listing = scan(root)
    reader = ContentReader(str(root))
    now = now_ns if now_ns is not None else time.time_ns()
    return {u.rel: judge(u, listing, reader, now_ns=now, settle_ns=SETTLE, rules=rules)
            for u in find_units(listing, rules).units}


def touch_later(p, seconds=5):
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def test_torch_file_complete_truncated_then_corrupt(tmp_path):
    torch.save({"w": torch.randn(100, 100)}, tmp_path / "epoch=0-step=5.ckpt")
    data = (tmp_path / "epoch=0-step=5.ckpt").read_bytes()
    (tmp_path / "epoch=0-step=10.ckpt").write_bytes(data[: len(data) // 2])
    v = verdicts(tmp_path)
    assert v["epoch=0-step=5.ckpt"].ok
    assert v["epoch=0-step=10.ckpt"].state == "incomplete"
    later = verdicts(tmp_path, now_ns=time.time_ns() + 10 * SETTLE)
    assert later["epoch=0-step=10.ckpt"].state == "corrupt"
    assert "truncated" in later["epoch=0-step=10.ckpt"].reason


def test_empty_legacy_and_unknown_files(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"x": 1}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    (tmp_path / "state.npz").write_bytes(b"123")
    (tmp_path / "notes.pt").write_text("not torch")
    rules = Rules(include=("*.npz", "*.pt"))
    now = verdicts(tmp_path, rules=rules)
    assert {k: v.state for k, v in now.items()} == {  # a whole legacy file needs no settle window
        "empty.pt": "incomplete", "legacy.pt": "complete", "state.npz": "incomplete", "notes.pt": "incomplete"}
    later = verdicts(tmp_path, now_ns=time.time_ns() + 2 * SETTLE, rules=rules)
    assert later["legacy.pt"].ok and later["state.npz"].ok
    assert later["empty.pt"].state == "corrupt"
    assert later["notes.pt"].state == "corrupt" and "unknown format" in later["notes.pt"].reason


def _hf_folder(d):
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    save_file({"w": torch.randn(32, 32)}, str(d / "model.safetensors"))
    torch.save({"state": {}}, d / "optimizer.pt")
    torch.save({"lr": 1e-3}, d / "scheduler.pt")


def test_hf_checkpoint_folder(tmp_path):
    d = tmp_path / "out" / "checkpoint-10"
    _hf_folder(d)
    assert verdicts(tmp_path)["out/checkpoint-10"].state == "incomplete"  # no trainer_state.json yet
    (d / "trainer_state.json").write_text('{"global_step": 1')
    assert verdicts(tmp_path)["out/checkpoint-10"].state == "incomplete"  # half-written JSON
    (d / "trainer_state.json").write_text(json.dumps({"global_step": 10, "epoch": 1.0}))
    assert verdicts(tmp_path)["out/checkpoint-10"].ok
    (d / ".tmpab12cd").write_bytes(b"x")
    assert "temp file" in verdicts(tmp_path)["out/checkpoint-10"].reason
    (d / ".tmpab12cd").unlink()
    touch_later(d / "optimizer.pt")
    assert "newer than trainer_state.json" in verdicts(tmp_path)["out/checkpoint-10"].reason
    touch_later(d / "trainer_state.json", 10)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:-3])
    touch_later(d / "trainer_state.json", 20)
    v = verdicts(tmp_path)["out/checkpoint-10"]
    assert v.state == "incomplete" and "model.safetensors" in v.reason


def test_dcp_folder_real_save_and_pitfalls(tmp_path):
    d = tmp_path / "step_3"
    state = {"w": torch.randn(64, 64), "b": torch.arange(10), "nested": {"x": torch.ones(5)}}
    dcp.save(state, checkpoint_id=str(d), no_dist=True)
    assert sorted(os.listdir(d))[0] == ".metadata"
    assert verdicts(tmp_path)["step_3"].ok
    # re-save pitfall (writers.md §3): a shard rewritten after the old .metadata
    shard = next(p for p in d.iterdir() if p.suffix == ".distcp")
    touch_later(shard)
    assert "newer than .metadata" in verdicts(tmp_path)["step_3"].reason
    touch_later(d / ".metadata", 10)
    assert verdicts(tmp_path)["step_3"].ok
    # a shard shorter than .metadata's extents
    data = shard.read_bytes()
    shard.write_bytes(data[:-100])
    touch_later(d / ".metadata", 30)
    v = verdicts(tmp_path)["step_3"]
    assert v.state == "corrupt" and ".metadata needs" in v.reason
    shard.write_bytes(data)
    touch_later(d / ".metadata", 40)
    (d / ".metadata.tmp").write_bytes(b"")
    assert verdicts(tmp_path)["step_3"].state == "incomplete"
    (d / ".metadata.tmp").unlink()
    (d / ".metadata").unlink()
    assert "no .metadata" in verdicts(tmp_path)["step_3"].reason


def _ds_model_states(path, world):
    # The shape DeepSpeed writes (engine._save_checkpoint): module, ds_config, an argparse
    # Namespace and dp_world_size; the inert unpickler must read it without importing anything.
    # "module" is a real state_dict(): an OrderedDict carrying a _metadata attribute (pickled with BUILD).
    torch.save({"module": torch.nn.Linear(8, 8).state_dict(), "dp_world_size": world, "mp_world_size": 1,
                "ds_version": "0.19.8", "args": argparse.Namespace(lr=0.1), "global_steps": 3}, path)


def test_deepspeed_tag_waits_for_every_rank(tmp_path):
    root = tmp_path / "ds"
    tag = root / "global_step3"
    tag.mkdir(parents=True)
    _ds_model_states(tag / "mp_rank_00_model_states.pt", world=2)
    torch.save({"optimizer_state_dict": {}}, tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    assert "no `latest`" in verdicts(tmp_path)["ds/global_step3"].reason
    (root / "latest").write_text("global_step3")
    v = verdicts(tmp_path)["ds/global_step3"]
    assert v.state == "incomplete" and "ranks [1] missing" in v.reason and "dp_world_size" in v.reason
    torch.save({"optimizer_state_dict": {}}, tag / "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    assert verdicts(tmp_path)["ds/global_step3"].ok
    # a newer tag being written: latest still names the old one
    new = root / "global_step6"
    new.mkdir()
    shutil.copy(tag / "mp_rank_00_model_states.pt", new / "mp_rank_00_model_states.pt")
    v = verdicts(tmp_path)
    assert v["ds/global_step6"].state == "incomplete" and v["ds/global_step3"].ok
    # latest moved on: the older tag stays complete; a truncated shard is never complete
    (root / "latest").write_text("global_step6")
    data = (tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt").read_bytes()
    (new / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(data[:-30])
    (new / "zero_pp_rank_1_mp_rank_00_optim_states.pt").write_bytes(data)
    v = verdicts(tmp_path)
    assert v["ds/global_step3"].ok
    assert v["ds/global_step6"].state == "incomplete" and "zero_pp_rank_0" in v["ds/global_step6"].reason


def test_marker_folder(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "weights.npy").write_bytes(b"\x93NUMPY" + b"0" * 100)
    assert verdicts(tmp_path) == {}  # no marker: not a unit at all
    (d / ".kresume-complete").write_text("")
    assert verdicts(tmp_path)["run"].ok
    touch_later(d / "weights.npy")
    assert "newer than .kresume-complete" in verdicts(tmp_path)["run"].reason


def test_symlinked_folder_swapped_in_after_scan_is_never_read(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    torch.save({"x": 1}, sub / "passwd.pt")
    listing = scan(tmp_path)
    units = find_units(listing).units
    shutil.rmtree(sub)
    os.symlink("/etc", sub)  # attacker swaps the folder for a link between scan and read
    reader = ContentReader(str(tmp_path))
    v = judge(units[0], listing, reader, now_ns=NOW, settle_ns=SETTLE)
    assert v.state == "corrupt" and "symlink" in v.reason


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another uid")  # tests run as root here
def test_mode_0600_file_names_the_fix(tmp_path_factory):
    base = tmp_path_factory.mktemp("perm")
    os.chmod(base, 0o755)
    for p in base.parents:
        if str(p).startswith("/tmp/") or str(p) == "/tmp":
            os.chmod(p, os.stat(p).st_mode | 0o055)
    d = base / "checkpoint-4"
    _hf_folder(d)
    (d / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    os.chmod(d, 0o755)
    for p in d.iterdir():
        os.chmod(p, 0o644)
    os.chmod(d / "model.safetensors", 0o600)  # what safetensors' mkstemp leaves (writers.md §4)
    code = (
        "import sys,time;from kresume.formats.judge import ContentReader,judge;"
        "from kresume.formats.listing import scan;from kresume.formats.units import find_units;"
        f"l=scan({str(base)!r});u=find_units(l).units[0];"
        f"v=judge(u,l,ContentReader({str(base)!r}),now_ns=time.time_ns(),settle_ns=1);print(v.state);print(v.reason)"
    )
    # the venv's interpreter lives under /root (0700); the formats core is stdlib-only, so the
    # system interpreter of the same minor version runs it as uid 65534
    out = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True, timeout=60,
                         preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)),
                         env={"PATH": "/usr/bin:/bin", "HOME": "/tmp",
                              "PYTHONPATH": os.path.join(os.path.dirname(kresume.__file__), "..")})
    assert out.returncode == 0, out.stderr
    state, reason = out.stdout.splitlines()[:2]
    assert state == "unreadable"
    assert "model.safetensors" in reason and "0600" in reason and "runAsUser: 0" in reason
