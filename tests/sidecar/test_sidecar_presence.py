"""The trainer/sidecar handshake (kresume.preemption.Presence ↔ kresume.sidecar.presence.probe): a real flock held
by another process, the notice, and the native-mode deadline rule (pure)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kresume import contract
from kresume.formats.listing import scan
from kresume.formats.units import find_units
from kresume.preemption import Latch, Presence
from kresume.sidecar.presence import aligned_deadline, probe

HOLDER = """
import sys, time
from kresume.preemption import Presence
p = Presence(sys.argv[1]); assert p.acquire(); p.notice("saving", signal_at=1.5)
print("held", flush=True); time.sleep(600)
"""


def test_probe_sees_a_trainer_process_alive_until_it_dies_however_it_dies(tmp_path):
    assert probe(str(tmp_path)).alive is None  # no hook in use: unknown
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        seen = probe(str(tmp_path))
        assert seen.alive is True and seen.notice["state"] == "saving" and seen.signal_at == 1.5
        assert probe(str(tmp_path)).alive is True  # a probe never takes the lock away
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert probe(str(tmp_path)).alive is False
    finally:
        proc.kill()


def test_two_trainer_processes_share_the_lock_and_a_new_one_removes_an_old_notice(tmp_path):
    a, b = Presence(tmp_path), Presence(tmp_path)
    assert a.acquire() and b.acquire()
    a.notice("saved", checkpoint="x.ckpt")
    a.release()
    assert probe(str(tmp_path)).alive is True  # b still holds its shared lock
    b.release()
    assert probe(str(tmp_path)).alive is False
    assert json.loads((tmp_path / contract.TRAINER_NOTICE).read_text())["checkpoint"] == "x.ckpt"
    c = Presence(tmp_path)
    assert c.acquire()
    assert not (tmp_path / contract.TRAINER_NOTICE).exists()  # a restarted container starts clean
    c.release()


def test_presence_without_a_folder_is_inert(monkeypatch):
    monkeypatch.delenv(contract.ENV_CHECKPOINT_DIR, raising=False)
    p = Presence()
    assert p.acquire() is False and not p.active
    p.notice("saving")  # no-op, no error


def test_handshake_files_are_never_checkpoints(tmp_path):
    p = Presence(tmp_path)
    p.acquire()
    p.notice("saving", signal_at=time.time())
    (tmp_path / "epoch=0-step=5.ckpt").write_bytes(b"x")
    units = find_units(scan(str(tmp_path)))
    assert [u.rel for u in units.units] == ["epoch=0-step=5.ckpt"]
    p.release()


def test_latch_records_the_signal_and_chains_to_a_callable_handler_never_to_the_default():
    calls = []
    prev = signal.signal(signal.SIGUSR1, lambda s, f: calls.append(s))
    try:
        latch = Latch((signal.SIGUSR1,))
        assert latch.install() and not latch.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        assert latch.requested and latch.signum == signal.SIGUSR1 and calls == [signal.SIGUSR1]
        latch.restore()
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        assert calls == [signal.SIGUSR1] * 2  # the previous handler is back
    finally:
        signal.signal(signal.SIGUSR1, prev)


@pytest.mark.parametrize(("age", "expected"), [
    (None, 125.0),   # no notice: the sidecar's own deadline
    (0.1, 124.9),    # legacy: signalled together (25 s grace from t=100 → 124.9)
    (10.0, 115.0),   # native: the trainer used 10 s of the grace period
    (30.0, 100.0),   # the grace period is already over
    (-5.0, 125.0),   # a signal time in the future is ignored
])  # fmt: skip
def test_the_deadline_counts_from_the_trainers_signal(age, expected):
    now_wall = 1_000_000.0
    got = aligned_deadline(125.0, signal_at=None if age is None else now_wall - age, grace_seconds=25.0,
                           now_mono=100.0, now_wall=now_wall)
    assert got == pytest.approx(expected)
