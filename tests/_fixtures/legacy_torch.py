"""A real legacy (non-zip) ``torch.save`` file and the cuts the truncation tests make of it."""

from __future__ import annotations

from pathlib import Path

NAME = "epoch=3-step=420.ckpt"
"""File name of the checkpoint (Lightning style; the content says step 420 too)."""


def save_legacy(path: Path) -> None:
    """``torch.save(..., _use_new_zipfile_serialization=False)`` of a state with storages of several
    dtypes, a view (its whole storage is saved), ``global_step=420``, ``epoch=3``."""
    import torch

    torch.save({
        "state_dict": {"w": torch.randn(64, 64), "b": torch.zeros(64, dtype=torch.float64),
                       "h": torch.ones(33, dtype=torch.float16), "bf": torch.ones(7, dtype=torch.bfloat16),
                       "i": torch.arange(10), "m": torch.ones(5, dtype=torch.bool)},
        "view": torch.arange(100, dtype=torch.int32)[10:20],
        "global_step": 420, "epoch": 3,
    }, path, _use_new_zipfile_serialization=False)


def cuts(n: int) -> list[int]:
    """Lengths to cut an ``n``-byte file to: every 10 % of it, and one byte short."""
    return sorted({n * k // 10 for k in range(1, 10)} | {n - 1})
