"""`kresume operator` start-up errors: one line, exit 2, no endless retries."""

from __future__ import annotations

import os
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
