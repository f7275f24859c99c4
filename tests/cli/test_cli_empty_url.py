"""An empty or blank run URL is refused by every store command with exit 2 and one line (a first-time
user's `kresume commit model.ckpt ""` exited 0 and committed into the current folder)."""

from __future__ import annotations

import pytest
import torch

COMMANDS = [
    ["ls", "URL"],
    ["latest", "URL"],
    ["verify", "URL"],
    ["restore", "URL", "dest"],
    ["prune", "URL", "--keep-last", "1"],
    ["commit", "--no-progress", "m.ckpt", "URL"],
    ["mark-bad", "URL", "some.ckpt"],
]


def _one_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kresume: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def ckpt(tmp_path):
    torch.save({"global_step": 1, "w": torch.ones(3)}, tmp_path / "m.ckpt")
    return tmp_path / "m.ckpt"


@pytest.mark.parametrize("url", ["", "   "], ids=["empty", "blank"])
@pytest.mark.parametrize("args", COMMANDS, ids=[a[0] for a in COMMANDS])
def test_every_command_refuses_an_empty_url(cli, tmp_path, ckpt, args, url):
    proc = cli(*[url if a == "URL" else a for a in args], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "the run URL is empty" in _one_line(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt"]  # nothing written next to it
