"""Restore replaces whatever sits at DEST/<name> — a file, a folder, a link — and never follows a
link (found by a first-use trial: a regular file at DEST/<folder checkpoint name> crashed restore
with a traceback)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kresume.store.runstore import RunStore


@pytest.fixture
def folder_run(tmp_path: Path) -> RunStore:
    ckpt = tmp_path / "src" / "checkpoint-300"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text('{"global_step": 300}')
    (ckpt / "model.bin").write_bytes(b"\x05" * 100)
    store = RunStore.open((tmp_path / "store" / "ns" / "run").as_uri())
    store.commit(ckpt)
    return store


@pytest.mark.parametrize("occupant", ["file", "folder", "link-to-folder", "dangling-link"])
def test_restore_replaces_what_is_at_dest_name(folder_run, tmp_path, occupant):
    dest = tmp_path / "dest"
    dest.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not ours")
    at = dest / "checkpoint-300"
    if occupant == "file":
        at.write_text("x")
    elif occupant == "folder":
        at.mkdir()
        (at / "stale.bin").write_text("old")
    elif occupant == "link-to-folder":
        os.symlink(elsewhere, at)
    else:
        os.symlink(tmp_path / "missing", at)
    out = folder_run.restore(dest)
    assert out == at and at.is_dir() and not at.is_symlink()
    assert sorted(p.name for p in at.iterdir()) == ["model.bin", "trainer_state.json"]
    assert (elsewhere / "keep.txt").read_text() == "not ours"  # a link's target is never touched
    assert sorted(p.name for p in dest.iterdir()) == ["checkpoint-300"]  # nothing left aside

