"""``kresume demo``'s own checks before anything starts, and its Ctrl-C handling (found in a new-user trial)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from kresume.devtools.demo import interrupt
from kresume.devtools.demo.run import choose_stack
from kresume.devtools.demo.settings import DemoSettings
from kresume.devtools.demo.stack import Stack


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kresume.devtools.demo", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})


def test_unknown_node_is_a_usage_error_naming_the_option() -> None:
    out = _demo("--node", "bogus")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--node" in out.stderr and "auto, kubelet or agent" in out.stderr


def test_file_store_runs_on_the_node_agent_and_kubelet_is_refused() -> None:
    said: list[str] = []
    auto = DemoSettings(store="file:///tmp/ckpts", node="auto")
    assert choose_stack(auto, said.append) is Stack
    assert said and "node agent" in said[0] and "file://" in said[0]
    with pytest.raises(ValueError, match="file:// needs the node agent"):
        choose_stack(DemoSettings(store="file:///tmp/ckpts", node="kubelet"), said.append)


HANDLER = """
import os, signal, sys, weakref
from kresume.devtools.demo import interrupt
interrupt.install()
class T: pass
def swallow(_ref):  # a weakref callback: a KeyboardInterrupt raised here is printed and ignored by Python
    os.kill(os.getpid(), signal.SIGINT)
t = T(); r = weakref.ref(t, swallow); del t
try:
    for _ in range(100):
        interrupt.check()
except KeyboardInterrupt:
    print("stopped", flush=True)
    sys.exit(130)
print("ran on", flush=True)
"""


def test_a_swallowed_ctrl_c_is_raised_again_at_the_next_check() -> None:
    out = subprocess.run([sys.executable, "-c", HANDLER], capture_output=True, text=True, timeout=60)
    assert "Exception ignored" in out.stderr  # Python swallowed the first KeyboardInterrupt ...
    assert out.stdout.strip() == "stopped" and out.returncode == 130  # ... the request was not lost
    assert "SIGINT: stopping everything" in out.stderr


def test_check_is_quiet_without_a_request() -> None:
    assert not interrupt.REQUESTED.is_set()
    interrupt.check()
    assert signal.getsignal(signal.SIGINT) is not interrupt._handler  # importing installs nothing


def test_heartbeat_says_what_is_still_running_with_the_log_tail(tmp_path) -> None:
    import time

    from kresume.devtools.demo import heartbeat

    log = tmp_path / "build.log"
    log.write_text("step 1/9 FROM debian\n\nstep 4/9 RUN pip install kresume\n")
    said: list[str] = []
    with heartbeat.beat(said.append, "building the images", log=log, every=0.05):
        deadline = time.monotonic() + 30
        while len(said) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    count = len(said)
    time.sleep(0.2)
    assert count >= 2 and len(said) == count  # it beats while the body runs, and stops with it
    assert said[0].startswith("… still building the images (0:00)") and said[0].endswith("step 4/9 RUN pip install kresume")
    assert heartbeat.last_line(tmp_path / "missing.log") == ""
