"""The pointer never stays on a checkpoint marked bad (found by a first-use trial: after mark-bad of
the newest checkpoint, later commits of lower steps left ``latest.json`` on the bad one)."""

from __future__ import annotations

from pathlib import Path

import torch

from kresume.store.runstore import RunStore


def ckpt(tmp_path: Path, step: int) -> Path:
    path = tmp_path / f"epoch=0-step={step}.ckpt"
    torch.save({"w": torch.full((4,), float(step)), "global_step": step}, path)
    return path


def test_mark_bad_moves_the_pointer_and_later_commits_move_it_again(tmp_path):
    store = RunStore.open((tmp_path / "store" / "ns" / "run").as_uri())
    m10 = store.commit(ckpt(tmp_path, 10))
    m20 = store.commit(ckpt(tmp_path, 20))
    assert store.read_pointer().checkpoint == m20.id
    assert store.mark_bad(m20.id, "loss went NaN") == m10.id
    assert store.read_pointer().checkpoint == m10.id
    m15 = store.commit(ckpt(tmp_path, 15))  # training resumed from 10 and saved 15
    assert store.read_pointer().checkpoint == m15.id
    assert store.latest().checkpoint_id == m15.id and store.latest().fallback_reason is None


def test_mark_bad_of_an_older_checkpoint_leaves_the_pointer(tmp_path):
    store = RunStore.open((tmp_path / "store" / "ns" / "run").as_uri())
    m10 = store.commit(ckpt(tmp_path, 10))
    m20 = store.commit(ckpt(tmp_path, 20))
    assert store.mark_bad(m10.id, "bad data shard") is None
    assert store.read_pointer().checkpoint == m20.id
    store.commit(ckpt(tmp_path, 5))  # an older step never moves a usable pointer back
    assert store.read_pointer().checkpoint == m20.id
