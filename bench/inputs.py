"""Benchmark inputs: one big checkpoint file and a sharded folder, written once per run.

Files are torch zip checkpoints (``torch.save`` of a random ``uint8`` tensor), so the sidecar's
content check judges them complete the moment they appear; their bytes are random (incompressible).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MB = 10**6


@dataclass(frozen=True)
class Sizes:
    """Input sizes in bytes: the big file, the folder's shard count and shard size, the memory row's file."""

    file: int
    shards: int
    shard: int
    memory_file: int
    memory_shards: int = 20
    memory_shard: int = 200 * 10**6

    @property
    def folder(self) -> int:
        return self.shards * self.shard


FULL = Sizes(file=1000 * MB, shards=64, shard=16 * MB, memory_file=4000 * MB)
QUICK = Sizes(file=8 * MB, shards=4, shard=1 * MB, memory_file=16 * MB, memory_shards=4, memory_shard=2 * MB)


def torch_checkpoint(path: Path, nbytes: int, seed: int = 0) -> Path:
    """Write a torch zip checkpoint of about ``nbytes`` (payload plus a few KiB of zip/pickle) and fsync it."""
    import torch

    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=g)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": t}, "global_step": 100}, path)
    del t
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    return path


def folder(path: Path, shards: int, shard: int) -> Path:
    """A DCP-like sharded folder: ``shards`` random files of ``shard`` bytes plus a completion marker."""
    path.mkdir(parents=True, exist_ok=True)
    for i in range(shards):
        with open(path / f"__{i}_0.distcp", "wb") as f:
            left = shard
            while left:
                n = min(left, 16 * 2**20)
                f.write(os.urandom(n))
                left -= n
    (path / ".kresume-complete").write_bytes(b"")
    return path
