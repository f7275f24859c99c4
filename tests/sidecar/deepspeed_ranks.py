"""One rank of a real DeepSpeed ZeRO run on CPU (gloo), each rank saving into its OWN folder (one pod's emptyDir).

    python deepspeed_ranks.py RANK WORLD MASTER_PORT FOLDER STEP[,STEP...] [STAGE]
    python deepspeed_ranks.py RANK WORLD MASTER_PORT --load-from FOLDER TAG [STAGE]

Trains a small MLP with ZeRO stage ``STAGE`` (default 1) and calls ``engine.save_checkpoint(FOLDER)`` after each
listed step: DeepSpeed writes ``FOLDER/global_step<N>/`` with this rank's ``zero_pp_rank_R_mp_rank_00_*`` files,
rank 0 also ``mp_rank_00_model_states.pt`` and ``FOLDER/latest`` (writers.md §5). Prints one JSON line
``{"rank", "files": {tag: [names]}, "latest": text or null}``.

``--load-from``: every rank loads ``FOLDER`` (one folder holding every rank's files, e.g. a restore) with
``engine.load_checkpoint(FOLDER, tag=TAG)`` and prints ``{"rank", "loaded": tag, "global_steps": N}``.
"""

from __future__ import annotations

import json
import os
import sys


def engine(rank: int, world: int, port: int, stage: int):  # noqa: ANN201 - deepspeed is imported lazily
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", DS_ACCELERATOR="cpu")
    import importlib

    import deepspeed
    import torch

    # DeepSpeed's CPU accelerator JIT-compiles a shared-memory all-reduce kernel at init (minutes on a fresh
    # machine); gloo does the same reductions. The checkpoint files are the same either way.
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None  # (deepspeed.comm.torch is torch)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    config = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1,
              "optimizer": {"type": "Adam", "params": {"lr": 1e-3, "torch_adam": True}},
              "zero_optimization": {"stage": stage}, "steps_per_print": 10**9}
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    eng, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    return eng


def train_and_save(rank: int, world: int, port: int, folder: str, steps: list[int], stage: int) -> None:
    import torch

    eng = engine(rank, world, port, stage)
    gen = torch.Generator().manual_seed(rank)
    files, done = {}, 0
    for step in steps:
        while done < step:
            x = torch.randn(4, 16, generator=gen)
            loss = eng(x).pow(2).mean()
            eng.backward(loss)
            eng.step()
            done += 1
        eng.save_checkpoint(folder)
        tag = f"global_step{step}"
        files[tag] = sorted(os.listdir(os.path.join(folder, tag)))
    latest = os.path.join(folder, "latest")
    print(json.dumps({"rank": rank, "files": files,
                      "latest": open(latest).read() if os.path.exists(latest) else None}))


def load(rank: int, world: int, port: int, folder: str, tag: str, stage: int) -> None:
    eng = engine(rank, world, port, stage)
    path, _ = eng.load_checkpoint(folder, tag=tag)
    assert path is not None, f"DeepSpeed loaded nothing from {folder}/{tag}"
    print(json.dumps({"rank": rank, "loaded": tag, "global_steps": eng.global_steps}))


if __name__ == "__main__":
    rank, world, port, *rest = sys.argv[1:]
    if rest[0] == "--load-from":
        load(int(rank), int(world), int(port), rest[1], rest[2], int(rest[3]) if len(rest) > 3 else 1)
    else:
        train_and_save(int(rank), int(world), int(port), rest[0], [int(s) for s in rest[1].split(",")],
                       int(rest[2]) if len(rest) > 2 else 1)
