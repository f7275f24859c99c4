"""Real checkpoint writers for the sidecar tests (run as separate processes).

    python sidecar_writers.py lightning OUT MODE    MODE: default | last | link | topk
    python sidecar_writers.py hf OUT
    python sidecar_writers.py dcp OUT
    python sidecar_writers.py torch OUT N MB SLEEP   N torch.save files of MB MiB, SLEEP s apart
    python sidecar_writers.py lightning-last OUT N   N saves of ModelCheckpoint(save_last=True), ~1.5 MB each

Each prints one JSON line at the end: what was saved (names, in order).
"""

from __future__ import annotations

import json
import os
import sys
import time


def lightning(out: str, mode: str) -> dict:
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    saved: list[str] = []

    class Recording(ModelCheckpoint):
        def _save_checkpoint(self, trainer, filepath):  # type: ignore[no-untyped-def]
            super()._save_checkpoint(trainer, filepath)
            saved.append(os.path.basename(filepath))

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))

        def training_step(self, batch, _):  # type: ignore[no-untyped-def]
            time.sleep(0.03)  # a real step takes time; Lightning deletes the previous ckpt right after the next
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("loss", loss)
            return loss

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    cfg = {"default": {}, "last": {"save_last": True}, "link": {"save_last": "link"},
           "topk": {"save_top_k": 2, "monitor": "loss", "every_n_train_steps": 5}}[mode]
    ds = TensorDataset(torch.randn(40, 32), torch.randn(40, 1))
    cb = Recording(dirpath=os.path.join(out, "lightning_logs", "version_0", "checkpoints"), **cfg)
    trainer = pl.Trainer(max_epochs=5, limit_train_batches=5, callbacks=[cb], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(Tiny(), DataLoader(ds, batch_size=8))
    return {"saved": saved}


def hf(out: str) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    class Slow(TrainerCallback):
        def on_step_end(self, *a, **k):  # type: ignore[no-untyped-def]
            time.sleep(0.05)

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=128, n_positions=32))
    data = [{"input_ids": torch.randint(0, 128, (16,)), "labels": torch.randint(0, 128, (16,))} for _ in range(64)]
    args = TrainingArguments(output_dir=out, max_steps=15, save_steps=5, save_total_limit=2,
                             per_device_train_batch_size=4, report_to=[], logging_steps=100, use_cpu=True,
                             dataloader_num_workers=0)
    Trainer(model=model, args=args, train_dataset=data, callbacks=[Slow()]).train()
    return {"saved": [f"checkpoint-{s}" for s in (5, 10, 15)]}


def _dcp_rank(rank: int, world: int, out: str, port: int) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    for step in (1, 2, 3):
        state = {f"w{rank}": torch.randn(256, 256) * step, "shared": torch.ones(10) * step}
        dcp.save(state, checkpoint_id=os.path.join(out, f"step_{step}"))
        time.sleep(0.3)
    dist.destroy_process_group()


def dcp_run(out: str) -> dict:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_dcp_rank, args=(2, out, port), nprocs=2, join=True)
    return {"saved": ["step_1", "step_2", "step_3"]}


def lightning_last(out: str, saves: int) -> dict:
    """``ModelCheckpoint(save_last=True, save_top_k=-1)`` every 5 steps, 0.1 s a step: each save writes the
    step file and ``last.ckpt`` (the same state: byte-identical from the second save on, bench/RESULTS.md
    "Aliases"); checkpoints of ~1.5 MB (above the 1 MiB alias threshold)."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    saved: list[str] = []

    class Recording(ModelCheckpoint):
        def _save_checkpoint(self, trainer, filepath):  # type: ignore[no-untyped-def]
            super()._save_checkpoint(trainer, filepath)
            saved.append(os.path.basename(filepath))

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(32, 384), torch.nn.ReLU(), torch.nn.Linear(384, 320))

        def training_step(self, batch, _):  # type: ignore[no-untyped-def]
            time.sleep(0.1)
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x).mean(1, keepdim=True), y)

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    ds = TensorDataset(torch.randn(40, 32), torch.randn(40, 1))
    cb = Recording(dirpath=out, save_last=True, save_top_k=-1, every_n_train_steps=5)
    trainer = pl.Trainer(max_steps=5 * saves, callbacks=[cb], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(Model(), DataLoader(ds, batch_size=8))
    return {"saved": saved}


def torch_files(out: str, n: int, mb: int, sleep: float) -> dict:
    import torch

    saved = []
    times = []
    for i in range(1, n + 1):
        name = f"epoch=0-step={i * 10}.ckpt"
        torch.save({"w": torch.randn(mb * 2**18), "global_step": i * 10, "epoch": 0}, os.path.join(out, name))
        saved.append(name)
        times.append(time.time())
        print(json.dumps({"saved_one": name, "at": times[-1]}), flush=True)
        time.sleep(sleep)
    return {"saved": saved, "times": times}


if __name__ == "__main__":
    kind, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    if kind == "lightning":
        res = lightning(out, sys.argv[3])
    elif kind == "lightning-last":
        res = lightning_last(out, int(sys.argv[3]))
    elif kind == "hf":
        res = hf(out)
    elif kind == "dcp":
        res = dcp_run(out)
    elif kind == "torch":
        res = torch_files(out, int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    else:
        raise SystemExit(f"unknown writer {kind}")
    print(json.dumps(res), flush=True)
