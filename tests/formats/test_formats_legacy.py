"""Legacy (non-zip) ``torch.save`` files are judged from content (issue 11 item 6), and ``kresume
commit`` refuses what it cannot recognise (issue 12 item 4).

A real legacy file (``_use_new_zipfile_serialization=False``) with storages of several dtypes is cut
at every 10 % of its length and one byte short: every cut is refused by the sidecar's judge (waiting
while it may still be written, truncated once settled) and by ``kresume commit`` (exit 10); the
whole file is complete (tests/cli/test_cli_commit_formats.py: ``kresume commit`` of the same cuts).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from kresume.formats import checks, legacy
from kresume.formats.judge import ContentReader, judge
from kresume.formats.listing import scan
from kresume.formats.metadata import describe
from kresume.formats.units import find_units
from _fixtures.legacy_torch import NAME, cuts, save_legacy

SETTLE = 2 * 10**9


def _verdict(root: Path, name: str, now_ns: int):
    listing = scan(root)
    (unit,) = [u for u in find_units(listing).units if u.rel == name]
    return judge(unit, listing, ContentReader(str(root)), now_ns=now_ns, settle_ns=SETTLE)


def _check(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return checks.check_file(fd, os.fstat(fd).st_size, path.name)
    finally:
        os.close(fd)


@pytest.fixture
def whole(tmp_path) -> bytes:
    src = tmp_path / "src" / NAME
    src.parent.mkdir()
    save_legacy(src)
    data = src.read_bytes()
    assert data[:2] == b"\x80\x02" and not data.startswith(b"PK")  # really the legacy format
    return data


def test_whole_legacy_file_is_complete_and_described(tmp_path, whole):
    d = tmp_path / "w"
    d.mkdir()
    (d / NAME).write_bytes(whole)
    assert _verdict(d, NAME, time.time_ns()).ok  # at once: no settle window needed
    info = describe(d / NAME)
    assert (info.format, info.step, info.epoch) == ("lightning", 420, 3)
    assert torch.load(d / NAME, weights_only=True)["global_step"] == 420  # and torch agrees it loads


def test_every_cut_is_refused_by_the_judge(tmp_path, whole):
    for cut in cuts(len(whole)):
        d = tmp_path / f"cut-{cut}"
        d.mkdir()
        (d / NAME).write_bytes(whole[:cut])
        v = _check(d / NAME)
        assert v is not None and not v.ok, (cut, v)
        now = _verdict(d, NAME, time.time_ns())
        assert now.state == "incomplete", (cut, now)  # may still be being written
        later = _verdict(d, NAME, time.time_ns() + 10 * SETTLE)
        assert later.state == "corrupt" and "truncated" in later.reason, (cut, later)


def test_extra_bytes_and_a_wrong_storage_count_are_corrupt(tmp_path, whole):
    (tmp_path / "long.pt").write_bytes(whole + b"\0")
    v = _check(tmp_path / "long.pt")
    assert v.state == "corrupt" and "after its last storage" in v.reason
    stream_end = legacy.scan(open(tmp_path / "long.pt", "rb")).data_start
    bad = bytearray(whole)
    bad[stream_end] ^= 0x01  # the first record's 8-byte count
    (tmp_path / "count.pt").write_bytes(bytes(bad))
    v = _check(tmp_path / "count.pt")
    assert v.state == "corrupt" and "records" in v.reason


def test_scanning_never_runs_code_from_the_file(tmp_path):
    """A legacy-looking file whose object pickle calls os.system: scanning it must not execute it."""
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        for obj in (legacy.MAGIC_NUMBER, legacy.PROTOCOL_VERSION, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        pickle.dump(Evil(), f, protocol=2)
        pickle.dump([], f, protocol=2)
    assert _check(path).ok  # a well-formed stream with no storages: complete
    describe(path)
    assert not marker.exists()


def test_a_non_torch_file_with_a_torch_name_is_refused_as_unknown(tmp_path):
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n" * 10)
    assert _check(tmp_path / "notes.ckpt") is None  # no content rule claims it
    assert _verdict(tmp_path, "notes.ckpt", time.time_ns()).state == "incomplete"
    later = _verdict(tmp_path, "notes.ckpt", time.time_ns() + 10 * SETTLE)
    assert later.state == "corrupt" and "unknown format" in later.reason, later
    (tmp_path / "tiny.pt").write_bytes(b"\x80\x02\x8a")  # a legacy file's first 3 bytes
    assert _check(tmp_path / "tiny.pt").state == "incomplete"
