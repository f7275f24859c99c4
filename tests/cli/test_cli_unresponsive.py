"""A store that does not answer fails within a documented bound (issue 12 item 3), exit 8.

Two real sockets: a closed port (connection refused) and a listening socket that accepts every
connection and never answers. Measured before: refused took 36 s to fail; the silent endpoint made
``kresume ls`` and ``commit`` hang for more than 15 minutes. The bound is ``--timeout`` (seconds
without an answer, default 30) plus the watchdog's 2 s; requests also carry connect/read timeouts.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from kresume.devtools.objstores.servers import AZURITE_ACCOUNT, AZURITE_KEY, S3_KEY, S3_REGION, S3_SECRET

BUDGET = 4
BOUND = BUDGET + 2 + 10
"""Seconds: the budget, the watchdog's grace, and the CLI's start-up on a loaded 2-core machine."""


def _target(backend: str, endpoint: str) -> tuple[str, list[str], dict[str, str]]:
    """(run URL, -o options, env) of ``backend`` pointed at ``endpoint``."""
    if backend == "s3":
        return ("s3://bucket/ns/run/", ["-o", f'client_kwargs={{"endpoint_url": "{endpoint}"}}',
                                        "-o", f"key={S3_KEY}", "-o", f"secret={S3_SECRET}"],
                {"AWS_DEFAULT_REGION": S3_REGION, "AWS_EC2_METADATA_DISABLED": "true"})
    if backend == "gcs":
        return ("gs://bucket/ns/run/", ["-o", f"endpoint_url={endpoint}", "-o", "token=anon", "-o", "project=p"],
                {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"})
    conn = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};")
    return "az://container/ns/run/", ["-o", f"connection_string={conn}"], {}


def _timed(cli, tmp_path, *args, env):
    t0 = time.monotonic()
    proc = cli("--timeout", str(BUDGET), *args, cwd=tmp_path, env=env)
    return proc, time.monotonic() - t0


@pytest.mark.parametrize("backend", ["s3", "gcs", "azure"])
def test_silent_store_fails_within_the_budget(cli, tmp_path, silent_endpoint, backend):
    url, opts, env = _target(backend, silent_endpoint)
    ckpt = tmp_path / "epoch=0-step=1.ckpt"
    torch.save({"w": torch.zeros(10), "global_step": 1}, ckpt)
    for args in (("ls", url, *opts), ("commit", str(ckpt), url, *opts)):
        proc, elapsed = _timed(cli, tmp_path, *args, env=env)
        print(f"{backend} {args[0]}: exit {proc.returncode} after {elapsed:.1f} s")
        assert proc.returncode == 8, (args[0], proc.stderr)
        assert elapsed < BOUND, (args[0], elapsed)
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith("kresume: error: ") and "store unreachable" in line and "--timeout" in line, proc.stderr


def test_refused_connection_fails_fast(cli, tmp_path, closed_endpoint):
    url, opts, env = _target("s3", closed_endpoint)
    proc, elapsed = _timed(cli, tmp_path, "ls", url, *opts, env=env)
    print(f"s3 ls refused: exit {proc.returncode} after {elapsed:.1f} s")
    assert proc.returncode == 8, proc.stderr
    assert elapsed < BOUND
    assert "store unreachable" in proc.stderr


def test_the_budget_ends_with_the_command_in_process(tmp_path):
    """An in-process caller (a test runner) must outlive a command's budget: its watchdog stops
    when the command ends, or it would end the caller's process 30 s later."""
    from typer.testing import CliRunner

    from kresume.cli import app, store_cmds

    result = CliRunner().invoke(app, ["--timeout", "1", "ls", (tmp_path / "x").as_uri() + "/"])
    assert result.exit_code != 0  # not a run; what matters is what is left running
    deadline = time.monotonic() + 10
    while any(t.name == "kresume-budget" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "kresume-budget" for t in threading.enumerate())
    assert store_cmds._budget == []
    time.sleep(3.5)  # past the 1 s budget and the watchdog's grace: still alive
