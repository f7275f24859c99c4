"""One rank of a real 2-process DDP run (gloo) where only rank 0 saves, as Lightning DDP and HF Trainer do.

    python ddp_ranks.py RANK WORLD MASTER_PORT FOLDER STEPS EVERY [STEP_SECONDS]

Trains a small MLP wrapped in ``DistributedDataParallel`` for ``STEPS`` steps; every ``EVERY`` steps rank 0
saves ``FOLDER/epoch=0-step=<N>.ckpt`` with ``torch.save`` (a Lightning-shaped dict with ``global_step``).
Rank ``R > 0`` writes nothing into its folder. Prints one JSON line ``{"rank", "saved": [names]}``.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(rank: int, world: int, port: int, folder: str, steps: int, every: int, step_seconds: float) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(),
                                                        torch.nn.Linear(64, 1)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(rank)
    saved = []
    try:
        for step in range(1, steps + 1):
            loss = model(torch.randn(8, 16, generator=gen)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % every == 0 and rank == 0:
                name = f"epoch=0-step={step}.ckpt"
                torch.save({"global_step": step, "epoch": 0, "state_dict": model.module.state_dict(),
                            "optimizer_states": [opt.state_dict()]}, os.path.join(folder, name))
                saved.append(name)
            time.sleep(step_seconds)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    print(json.dumps({"rank": rank, "saved": saved}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]),
         float(sys.argv[7]) if len(sys.argv) > 7 else 0.05)
