"""One rank of a real 2-process DCP save, each rank writing into its OWN folder (as on two nodes).

    python dcp_rank_writer.py RANK WORLD MASTER_PORT OUT_ROOT STEP

torch.distributed.checkpoint is given a ``FileSystemWriter`` per process pointing at
``OUT_ROOT/rank<R>/step_<STEP>``: every rank writes its own ``__R_0.distcp`` there and the
coordinator (rank 0) writes ``.metadata`` into its own folder only. That is exactly what two pods
with node-local emptyDirs produce. Each rank saves its own tensor (``w<R>``, seeded), so every
``.distcp`` file holds data, plus one replicated tensor DCP de-duplicates to rank 0.
Prints one JSON line: the files of this rank's folder.
"""

from __future__ import annotations

import json
import os
import sys


def main(rank: int, world: int, port: int, out_root: str, step: int) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        gen = torch.Generator().manual_seed(1000 + rank)
        state = {f"w{rank}": torch.randn(256, 64, generator=gen), "shared": torch.arange(32.0)}
        folder = os.path.join(out_root, f"rank{rank}", f"step_{step}")
        dcp.save(state, storage_writer=FileSystemWriter(folder))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    print(json.dumps(sorted(os.listdir(folder))))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
