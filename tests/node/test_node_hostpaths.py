"""What a dev-node container needs from the host file system: its command as exec finds it, the interpreters of a
script, PATH/HOME/workingDir and absolute arguments (small files in tmp_path; no cluster)."""

from __future__ import annotations

import os
from pathlib import Path

from kresume.devtools.node import hostpaths, podspec


def _exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_resolve_command_searches_path_in_order_and_skips_non_executables(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    (a).mkdir()
    (a / "tool").write_text("not executable")
    _exe(b / "tool", "#!/bin/sh\n")
    env = {"PATH": f"relative:{a}:{b}"}
    assert hostpaths.resolve_command("tool", env, "/", []) == f"{b}/tool"
    assert hostpaths.resolve_command("missing", env, "/", []) is None
    assert hostpaths.resolve_command("./b/tool", {}, str(tmp_path), []) == f"{b}/tool"
    assert hostpaths.resolve_command("/bin/sh", {}, "/", []) == "/bin/sh"


def test_resolve_command_looks_into_volumes_at_their_host_folder(tmp_path: Path):
    _exe(tmp_path / "vol" / "run.sh", "#!/bin/sh\n")
    binds = [podspec.Mount(str(tmp_path / "vol"), "/scripts")]
    assert hostpaths.resolve_command("run.sh", {"PATH": "/scripts"}, "/", binds) == "/scripts/run.sh"
    assert hostpaths.resolve_command("/scripts/run.sh", {}, "/", binds) == "/scripts/run.sh"


def test_interpreters_follow_shebangs_and_env(tmp_path: Path):
    python = _exe(tmp_path / "venv bin" / "python", "#!/bin/sh\nexec true\n")
    tool = _exe(tmp_path / "venv bin" / "tool", "#!/usr/bin/env python -u\nprint(1)\n")
    env = {"PATH": f"{tmp_path / 'venv bin'}:/usr/bin:/bin"}
    assert hostpaths.interpreters(str(tool), env, "/", []) == ["/usr/bin/env", str(python), "/bin/sh"]
    assert hostpaths.interpreters("/bin/sh", env, "/", []) == []  # a binary
    assert hostpaths.interpreters(str(tmp_path / "nope"), env, "/", []) == []


def test_needed_paths_cover_command_interpreter_env_workdir_arguments_and_extra(tmp_path: Path):
    venv = tmp_path / "checkout" / ".venv" / "bin"
    python = venv / "python"
    python.parent.mkdir(parents=True)
    os.symlink("/bin/sh", python)  # a venv's python is a link to the base interpreter
    env = {"PATH": f"{venv}:/usr/bin", "HOME": "/tmp/home-x", "PYTHONPATH": "/tmp/pp"}
    got = hostpaths.needed_paths(["python", "/tmp/s/train.py", "--data=/tmp/d/x", "-v", "rel"], env, "/tmp/wd",
                                 [], extra=["/tmp/x/src"])  # fmt: skip
    for want in (str(python), str(venv), "/usr/bin", "/tmp/home-x", "/tmp/pp", "/tmp/wd", "/tmp/s/train.py",
                 "/tmp/d/x", "/tmp/x/src", os.path.realpath("/bin/sh")):  # fmt: skip
        assert want in got, want
    assert "rel" not in got and "-v" not in got
