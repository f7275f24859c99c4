"""Content checks on real files: torch.save zips, safetensors, and truncated copies of them."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from kresume.formats import checks


def _fd_check(path, fn):
    fd = os.open(path, os.O_RDONLY)
    try:
        return fn(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def torch_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("t") / "m.ckpt"
    torch.save({"w": torch.randn(256, 256), "step": 7}, p)
    return p


@pytest.fixture(scope="module")
def st_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("s") / "model.safetensors"
    save_file({"a": torch.randn(64, 64), "b": torch.zeros(3)}, str(p), metadata={"format": "pt"})
    return p


def _truncate_copy(src, dst, n):
    dst.write_bytes(src.read_bytes()[:n])
    return dst


def test_torch_zip_complete(torch_file):
    assert _fd_check(torch_file, checks.check_zip).ok
    assert _fd_check(torch_file, lambda fd, s: checks.check_file(fd, s, "m.ckpt")).ok


@pytest.mark.parametrize("cut", ["half", "minus1", "minus22", "before_cd", "zero", "ten"])
def test_torch_zip_truncations_are_incomplete(torch_file, tmp_path, cut):
    data = torch_file.read_bytes()
    cd = data.rfind(b"PK\x01\x02")
    n = {"half": len(data) // 2, "minus1": len(data) - 1, "minus22": len(data) - 22,
         "before_cd": cd, "zero": 0, "ten": 10}[cut]
    p = _truncate_copy(torch_file, tmp_path / "t.ckpt", n)
    v = _fd_check(p, lambda fd, s: checks.check_file(fd, s, "t.ckpt"))
    assert v.state == "incomplete", v


def test_legacy_torch_file_has_a_rule_and_other_content_none(tmp_path):
    p = tmp_path / "legacy.pt"
    torch.save({"x": 1}, p, _use_new_zipfile_serialization=False)
    assert _fd_check(p, lambda fd, s: checks.check_file(fd, s, "legacy.pt")).ok  # judged from content
    q = tmp_path / "other.pt"
    q.write_bytes(b"\x00" * 100)  # neither torch format: no rule (the judge refuses it as unknown)
    assert _fd_check(q, lambda fd, s: checks.check_file(fd, s, "other.pt")) is None


def test_safetensors_complete_and_truncated(st_file, tmp_path):
    assert _fd_check(st_file, checks.check_safetensors).ok
    size = st_file.stat().st_size
    for n in (0, 4, 8, 20, size // 2, size - 1):
        p = _truncate_copy(st_file, tmp_path / f"c{n}.safetensors", n)
        v = _fd_check(p, checks.check_safetensors)
        assert v.state == "incomplete", (n, v)


def test_safetensors_extra_bytes_and_bad_header_are_corrupt(st_file, tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(st_file.read_bytes() + b"junk")
    assert _fd_check(p, checks.check_safetensors).state == "corrupt"
    data = bytearray(st_file.read_bytes())
    data[8] = ord("#")
    p.write_bytes(bytes(data))
    assert _fd_check(p, checks.check_safetensors).state == "corrupt"
    p.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    assert _fd_check(p, checks.check_safetensors).state == "corrupt"


def test_json_check(tmp_path):
    p = tmp_path / "trainer_state.json"
    p.write_text('{"global_step": 10}')
    assert _fd_check(p, checks.check_json).ok
    p.write_text('{"global_step": 1')
    assert _fd_check(p, checks.check_json).state == "incomplete"
