"""Acceptance (issue 3): 20 random kill -9 points across uploads never leave a pointer or manifest
naming an incomplete checkpoint, and restarts finish the work.

A writer thread saves real checkpoints (``torch.save`` files of 8-24 MiB and ``dcp.save`` folders)
into the watched folder while the sidecar runs as a separate process against moto S3. The sidecar
is killed with SIGKILL at 20 seeded random moments — a random delay after a random log line
(a checkpoint queued, a commit, the start of watching) — and restarted each time. After every
kill the store is read directly: every manifest names exactly the files of the local checkpoint
with their sizes and CRC-32C, ``verify(checksums=True)`` is clean, and the pointer names a
committed checkpoint. At the end every checkpoint is committed exactly once and both the pointer
and ``kresume latest`` name the newest.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kresume.cli import app
from _fixtures.common import file_crc32c

SEED = 20261129
KILLS = 20
CHECKPOINTS = 12
INTERVAL = 2.5  # s between checkpoints: the writer spans about as long as the kill loop


def _write_checkpoints(watch: Path, rng: random.Random, written: list[str], stop: threading.Event) -> None:
    """Save CHECKPOINTS real checkpoints (every 4th a DCP folder), step 10, 20, …; appends names."""
    import torch.distributed.checkpoint as dcp

    for i in range(1, CHECKPOINTS + 1):
        if stop.is_set():
            return
        step = i * 10
        mib = rng.uniform(8, 24)  # large enough that an upload to moto spans a few hundred ms
        if i % 4 == 0:
            name = f"step_{step}"
            state = {"w": torch.randn(int(mib * 2**17)), "b": torch.randn(int(mib * 2**17)),
                     "step": torch.tensor(step)}
            dcp.save(state, checkpoint_id=str(watch / name))
        else:
            name = f"epoch=0-step={step}.ckpt"
            torch.save({"w": torch.randn(int(mib * 2**18)), "global_step": step, "epoch": 0}, watch / name)
        written.append(name)
        stop.wait(INTERVAL * rng.uniform(0.6, 1.4))


def _local_files(watch: Path, name: str) -> dict[str, tuple[int, str]]:
    """relpath ("" for a file checkpoint) → (size, crc32c) of the local checkpoint."""
    p = watch / name
    if p.is_file():
        return {"": (p.stat().st_size, file_crc32c(str(p)))}
    return {str(f.relative_to(p)): (f.stat().st_size, file_crc32c(str(f))) for f in p.rglob("*") if f.is_file()}


def _assert_sound(store, watch: Path, crc_cache: dict) -> list:
    """Every manifest names the complete local checkpoint; objects verify; the pointer is committed."""
    manifests = store.list()
    for m in manifests:
        if m.name not in crc_cache:
            crc_cache[m.name] = _local_files(watch, m.name)
        got = {f.path: (f.size, f.crc32c) for f in m.files}
        assert got == crc_cache[m.name], f"manifest {m.id} ({m.name}) does not name the complete checkpoint"
    assert store.verify(checksums=True) == []
    ptr = store.read_pointer()
    if ptr is not None:
        assert ptr.checkpoint in {m.id for m in manifests}, f"pointer names uncommitted {ptr.checkpoint}"
    return manifests


def _in_flight(sc) -> bool:
    """True when the killed process had queued/uploading work: a unit logged complete, not committed."""
    queued, done = set(), set()
    for r in sc.logs():
        msg = r.get("msg", "")
        if msg.startswith("complete:"):
            queued.add(r.get("unit"))
        elif msg.startswith("committed"):
            done.add(r.get("unit"))
    return bool(queued - done)


def _cli(*args: str, options: dict) -> str:
    opts = []
    for key, value in options.items():
        opts += ["-o", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    result = CliRunner().invoke(app, [*args[:1], *opts, *args[1:]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.slow
def test_twenty_random_kill9_points_never_commit_a_partial(tmp_path, moto_run, start_sidecar, wait_committed):
    url, options, _, store = moto_run
    watch = tmp_path / "ckpt"
    watch.mkdir()
    rng = random.Random(SEED)
    written: list[str] = []
    stop = threading.Event()
    writer = threading.Thread(target=_write_checkpoints, args=(watch, random.Random(SEED + 1), written, stop),
                              name="ckpt-writer", daemon=True)
    flags = ("--concurrency", "1", "--rescan-seconds", "2")
    crc_cache: dict = {}
    moments = []
    triggers = {"complete": lambda r: r.get("msg", "").startswith("complete:"),
                "committed": lambda r: r.get("msg", "").startswith("committed"),
                "watching": lambda r: r.get("msg", "").startswith("watching")}
    writer.start()
    try:
        for _ in range(KILLS):
            sc = start_sidecar(watch, moto_run, *flags)
            # Most kills follow a checkpoint's completion closely, so they land mid-upload even when
            # uploads are fast (a quiet CI machine); the rest hit commits and start-up.
            trigger = rng.choice(["complete", "complete", "complete", "committed", "watching"])
            delay = rng.uniform(0.0, 0.25 if trigger == "complete" else 0.6)
            sc.wait_log(triggers["watching"], timeout=60)  # interpreter start-up is slow on a loaded machine
            try:
                sc.wait_log(triggers[trigger], timeout=INTERVAL * 2)
            except AssertionError:
                assert sc.proc.poll() is None, f"sidecar died by itself:\n{sc.tail()}"
                trigger = "timeout"
            time.sleep(delay)
            os.kill(sc.proc.pid, signal.SIGKILL)
            assert sc.proc.wait(30) == -signal.SIGKILL
            moments.append((trigger, round(delay, 2), _in_flight(sc)))
            _assert_sound(store, watch, crc_cache)
        writer.join(CHECKPOINTS * INTERVAL * 1.5)
        assert not writer.is_alive()
    finally:
        stop.set()
    assert len(written) == CHECKPOINTS
    print("kill moments (trigger, delay s, work in flight):", moments)
    # the kills really hit work in progress, not only idle moments
    assert sum(1 for m in moments if m[2]) >= 4, moments

    sc = start_sidecar(watch, moto_run, *flags)
    sc.wait_log(triggers["watching"], timeout=60)  # before that, SIGTERM finds no handler yet
    wait_committed(store, set(written), 120)
    newest = written[-1]
    newest_id = next(m.id for m in store.list() if m.name == newest)
    deadline = time.monotonic() + 60  # the pointer moves right after the manifest (maybe by an earlier process)
    while (ptr := store.read_pointer()) is None or ptr.checkpoint != newest_id:
        assert time.monotonic() < deadline, f"pointer {ptr} never named the newest {newest_id}:\n{sc.tail()}"
        time.sleep(0.25)
    rc, out = sc.stop()
    assert rc == 0 and out.startswith("kresume sidecar: committed="), out
    manifests = _assert_sound(store, watch, crc_cache)
    counts = {n: sum(1 for m in manifests if m.name == n) for n in written}
    assert counts == {n: 1 for n in written}, counts
    assert store.read_pointer().checkpoint == newest_id
    print("kill moments (trigger, delay s, work in flight):", moments)
    latest = json.loads(_cli("latest", "--json", url, options=options))
    assert latest["step"] == CHECKPOINTS * 10 and newest in latest["url"], latest


def test_sigterm_mid_write_commits_the_checkpoint_finished_within_grace(tmp_path, moto_run, start_sidecar):
    """SIGTERM arrives while step 20 is half written (the file is open, no zip end record yet); the
    trainer finishes it 1 s later, inside the grace period: the sidecar commits it, moves the pointer
    to it, prints the one-line summary and exits 0. (test_sidecar_faults.py covers SIGTERM between
    saves of a running writer.)"""
    store = moto_run[3]
    watch = tmp_path / "ckpt"
    watch.mkdir()
    torch.save({"w": torch.randn(2**20), "global_step": 10, "epoch": 0}, watch / "epoch=0-step=10.ckpt")
    sc = start_sidecar(watch, moto_run, "--grace-seconds", "20")
    sc.wait_log(lambda r: r.get("msg", "").startswith("committed"), 60)
    staged = tmp_path / "whole.ckpt"
    torch.save({"w": torch.randn(3 * 2**20), "global_step": 20, "epoch": 0}, staged)
    data = staged.read_bytes()
    target = watch / "epoch=0-step=20.ckpt"
    with open(target, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        sc.wait_log(lambda r: r.get("unit") == target.name and r.get("state") == "incomplete", 30)
        sc.proc.send_signal(signal.SIGTERM)
        sc.wait_log(lambda r: r.get("msg", "").startswith("signal 15"), 30)
        time.sleep(1.0)
        f.write(data[len(data) // 2:])
    sc.proc.wait(40)  # exits by itself once nothing is left to commit (a second SIGTERM would end it at once)
    rc, out = sc.stop()
    assert rc == 0, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kresume sidecar: committed=2 abandoned=0"), out
    assert "newest_step=20" in lines[0], out
    ptr = store.read_pointer()
    assert ptr is not None and ptr.step == 20 and ptr.url.endswith(target.name), ptr
    (m,) = [m for m in store.list() if m.name == target.name]
    assert m.files[0].size == len(data)
    assert store.verify(checksums=True) == []
