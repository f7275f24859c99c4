"""kresume's own options (``--timeout``, ``--attempts``, ``--debug``) go before the command; written after it, the
usage error (exit 2) says so. A first-time user's ``kresume ls URL --timeout 5`` got only "No such option"."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("flag", "env"), [(["--timeout", "5"], "KRESUME_TIMEOUT"), (["--timeout=5"], "KRESUME_TIMEOUT"),
                                           (["--attempts", "2"], "KRESUME_ATTEMPTS"), (["--debug"], "KRESUME_DEBUG")],
                         ids=["timeout", "timeout=", "attempts", "debug"])
@pytest.mark.parametrize("command", ["ls", "latest", "verify"])
def test_a_global_option_after_the_command_says_where_it_goes(cli, tmp_path, flag, env, command):
    name = flag[0].split("=")[0]
    proc = cli(command, "s3://bucket/ns/run", *flag, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    text = " ".join(proc.stderr.replace("│", " ").split())  # the usage box wraps lines
    assert f"No such option: {name} (an option of kresume itself" in text, proc.stderr
    assert f"`kresume {name}" in text and f"{command} ...`" in text and env in text, proc.stderr


def test_an_unknown_option_keeps_the_plain_usage_error(cli, tmp_path):
    proc = cli("ls", "s3://bucket/ns/run", "--bogus", cwd=tmp_path)
    assert proc.returncode == 2
    assert "No such option: --bogus" in proc.stderr and "kresume itself" not in proc.stderr


def test_the_global_option_before_the_command_is_taken(cli, tmp_path):
    """The same option in its place parses (the command then fails on the store, not on usage)."""
    proc = cli("--timeout", "5", "ls", "s3://", cwd=tmp_path)
    assert proc.returncode == 2 and "No such option" not in proc.stderr, proc.stderr
