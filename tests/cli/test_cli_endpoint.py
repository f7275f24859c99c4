"""``kresume ls/latest/restore -o endpoint_url=127.0.0.1:9000`` (no scheme) is a usage error naming the option and
the fix, exit 2, before any client is built; it was a Rust panic with a backtrace and exit 1 (new-user trial)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("args", [["ls"], ["latest"], ["restore", "URL", "dest"]], ids=["ls", "latest", "restore"])
def test_an_endpoint_without_scheme_is_one_line_and_exit_2(cli, tmp_path, args):
    url = "s3://bucket/ns/run/"
    argv = [a if a != "URL" else url for a in args]
    if "URL" not in args:
        argv.append(url)
    proc = cli(argv[0], "-o", "endpoint_url=127.0.0.1:9000", *argv[1:], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "endpoint_url '127.0.0.1:9000'" in lines[0], proc.stderr
    assert "http://127.0.0.1:9000" in lines[0] and "panicked" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "dest").exists()
