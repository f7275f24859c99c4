"""`kresume operator` start-up errors: one line, exit 2, no endless retries."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_no_kubernetes_credentials_fails_fast_with_the_fix(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "KUBECONFIG"))}
    env.update(KUBECONFIG=str(tmp_path / "missing"), HOME=str(tmp_path), TMPDIR=str(tmp_path))
    proc = subprocess.run([Path(sys.executable).parent / "kresume", "operator", "--metrics-port", "0",
                           "--liveness-port", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "no Kubernetes credentials" in proc.stderr and "set KUBECONFIG" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("kresume-webhook-*")), "the dev TLS key must not be left behind"


# Run as the container runs it (`kresume operator`, operator/entrypoint.sh), with kopf replaced by one INFO line
# of the admission logger: the kresume CLI's callback configures logging at WARNING first.
_AS_THE_CONTAINER = """
import logging, sys
import kresume.operator.runner as runner
def run(config):
    logging.getLogger("kresume.operator.admission").info("inject-pod ns/run: injected (checkpoint from store) in 1.0 ms")
    logging.getLogger("aiohttp.access").info("127.0.0.1 POST /inject-pod 200")  # one per webhook call
runner.run = run
from kresume.cli import main
main(["operator", "--standalone", "--log-level", sys.argv[1]])
"""


def test_the_log_level_applies_when_run_through_the_kresume_cli(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    for level, shown in (("INFO", True), ("WARNING", False)):
        proc = subprocess.run([sys.executable, "-c", _AS_THE_CONTAINER, level], env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        line = "INFO kresume.operator.admission: inject-pod ns/run: injected (checkpoint from store) in 1.0 ms"
        assert (line in proc.stderr) is shown, proc.stderr
        assert "POST /inject-pod" not in proc.stderr  # aiohttp's access line is kept out unless DEBUG
        if shown:  # the time line's format: local time with milliseconds first
            assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ", proc.stderr), proc.stderr
