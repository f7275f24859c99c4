"""One rank of a real multi-process ``dcp.save`` run, each rank saving into its OWN folder (one pod's emptyDir).

    python dcp_ranks.py RANK WORLD MASTER_PORT FOLDER STEP[,STEP...] [PAUSE_S]

Every rank joins one gloo process group and saves ``FOLDER/step_<STEP>`` for each step with
``torch.distributed.checkpoint`` (``FileSystemWriter``): each rank writes its own ``__R_0.distcp``; the
coordinator (rank 0) writes ``.metadata`` in its own folder only, as on pods with node-local volumes.
The state is each rank's own tensor ``w<R>`` (seeded by rank and step, so :func:`expected` can rebuild
it) plus a replicated ``shared`` tensor that DCP de-duplicates to rank 0. ``PAUSE_S`` seconds pass
between steps. Prints one JSON line: ``{"rank", "steps", "files": {step: [names]}}``.
"""

from __future__ import annotations

import json
import os
import sys
import time


def state(rank: int, step: int, world: int | None = None):  # noqa: ANN201 - torch is imported lazily
    """This rank's state at ``step``; with ``world``, the union of every rank's (what a loader reads back)."""
    import torch

    def own(r: int) -> torch.Tensor:
        return torch.randn(128, 64, generator=torch.Generator().manual_seed(1000 * step + r))

    out = {f"w{r}": own(r) for r in (range(world) if world else [rank])}
    out["shared"] = torch.arange(32.0) + step
    return out


def main(rank: int, world: int, port: int, folder: str, steps: list[int], pause: float) -> None:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    files = {}
    try:
        for i, step in enumerate(steps):
            if i:
                time.sleep(pause)
            out = os.path.join(folder, f"step_{step}")
            dcp.save(state(rank, step), storage_writer=FileSystemWriter(out))
            files[step] = sorted(os.listdir(out))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    print(json.dumps({"rank": rank, "steps": steps, "files": files}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], [int(s) for s in sys.argv[5].split(",")],
         float(sys.argv[6]) if len(sys.argv) > 6 else 0.0)
