"""CLI helpers: run the installed ``kresume`` console script as a user would, against a real store."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from _fixtures.objstores import SESSION_BUCKET

KRESUME = Path(sys.executable).parent / "kresume"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``kresume *args`` in ``cwd`` with a clean credential environment plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "KRESUME_", "FSSPEC_"))}
    return subprocess.run([str(KRESUME), *args], cwd=cwd, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def cli():
    """``cli(*args, cwd=, env=) -> CompletedProcess`` (see :func:`run_cli`)."""
    return run_cli


@pytest.fixture
def moto_run_url(moto_s3) -> tuple[str, dict[str, str]]:
    """``(url, env)``: a fresh run URL in the moto server's session bucket and the env that reaches it."""
    return moto_s3.url(SESSION_BUCKET, f"cli-{uuid.uuid4().hex[:10]}/ns/run") + "/", dict(moto_s3.env)
