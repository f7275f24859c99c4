"""One real node per loopback address: a second stack fails at once naming the holder, never hangs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kresume.devtools import localcluster
from kresume.devtools.kubelet import nodelock

HOLD = """
import sys, time
from pathlib import Path
from kresume.devtools.kubelet import nodelock
nodelock.NodeLock(sys.argv[1], Path(sys.argv[2]) if sys.argv[2] else None).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holder_process(address: str, lock_dir: Path | None) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, address, str(lock_dir or "")], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held", "the holder process did not take the lock"
    return proc


def test_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    proc = _holder_process("127.0.0.9", tmp_path)
    try:
        with pytest.raises(nodelock.NodeAddressBusy) as err:
            nodelock.NodeLock("127.0.0.9", tmp_path).acquire()
        assert f"pid {proc.pid}" in str(err.value)
        assert "--node agent" in str(err.value)
        assert nodelock.holder("127.0.0.9", tmp_path) is not None
        # another address is free
        other = nodelock.NodeLock("127.0.0.10", tmp_path).acquire()
        other.release()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


def test_lock_of_a_killed_holder_is_free(tmp_path: Path) -> None:
    proc = _holder_process("127.0.0.9", tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert nodelock.lock_path("127.0.0.9", tmp_path).exists()  # a stale file ...
    assert nodelock.holder("127.0.0.9", tmp_path) is None  # ... holds nobody back
    lock = nodelock.NodeLock("127.0.0.9", tmp_path).acquire()
    lock.release()
    lock.release()  # idempotent


def test_auto_mode_check_names_the_running_node() -> None:
    """`kresume demo --node auto` asks localcluster.available(): a held address is a reason to use the agent."""
    address = f"127.0.{os.getpid() % 200 + 20}.{int(time.time()) % 200 + 20}"
    proc = _holder_process(address, None)
    try:
        why = localcluster.available(address)
        assert why is not None and f"pid {proc.pid}" in why and address in why
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    nodelock.lock_path(address).unlink(missing_ok=True)
