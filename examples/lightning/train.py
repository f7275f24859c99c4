"""A small PyTorch Lightning training that survives preemption with kresume.

The kresume code a trainer needs: ``resume_from()`` (where to resume) and, to lose no step on a
graceful preemption, the ``PreemptionCheckpoint`` callback (on SIGTERM: finish the step, save into
the watched folder, exit 143). Checkpoints are written by a stock ``ModelCheckpoint`` into
``KRESUME_CHECKPOINT_DIR`` (injected by the operator), where the kresume sidecar picks them up.
Used by ``kresume demo`` and the tests; runs in seconds on a CPU.

It prints one JSON line per event on stdout (``launched`` as the script starts, before the heavy
imports; ``start`` with the step training starts at and the seconds spent importing and loading the
checkpoint; ``progress``; ``preempted`` after the final save; ``done``; ``exit`` as the interpreter shuts down) so a supervisor can check
where a restarted run resumed and split its start-up time.

    python examples/lightning/train.py --max-steps 200 --every-n-steps 20
"""

from __future__ import annotations

import json
import os
import sys
import time

LAUNCHED = time.time()
print(json.dumps({"event": "launched", "time": LAUNCHED, "pid": os.getpid()}), flush=True)

import argparse  # noqa: E402 - the line above times the interpreter start, before the heavy imports
import atexit  # noqa: E402

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from kresume import resume_from
from kresume.lightning import PreemptionCheckpoint

IMPORTED = time.time()


class Regressor(L.LightningModule):
    """A 2-layer MLP fitted to a fixed random linear target (32 features → 1)."""

    def __init__(self, hidden: int = 64, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(32, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):  # noqa: D102
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):  # noqa: D102
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def make_data(n: int = 2048, seed: int = 0) -> TensorDataset:
    """Deterministic synthetic regression data (``n`` × 32 features)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 32, generator=g)
    w = torch.randn(32, 1, generator=g)
    return TensorDataset(x, x @ w + 0.01 * torch.randn(n, 1, generator=g))


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, "time": time.time(), **fields}), flush=True)


class Report(Callback):
    """Prints where training starts and how far it got; optionally slows steps down."""

    def __init__(self, step_seconds: float, every: int, resumed_from: str | None) -> None:
        self.step_seconds = step_seconds
        self.every = every
        self.resumed_from = resumed_from
        self.fit_called = 0.0

    def setup(self, trainer, pl_module, stage) -> None:  # noqa: D102 - fit begins; the checkpoint loads next
        self.fit_called = self.fit_called or time.time()
        # after PreemptionCheckpoint.setup (listed before this callback): this runs before its fast exit
        atexit.register(lambda: emit("exit"))

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: D102 - the checkpoint is loaded
        now = time.time()
        emit("start", global_step=trainer.global_step, resumed_from=self.resumed_from, pid=os.getpid(),
             launched=LAUNCHED, imports_s=round(IMPORTED - LAUNCHED, 3),
             load_s=round(now - (self.fit_called or now), 3))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        if self.step_seconds:
            time.sleep(self.step_seconds)
        if trainer.global_step % self.every == 0:
            emit("progress", global_step=trainer.global_step)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-steps", type=int, default=200, help="total optimizer steps of the run")
    p.add_argument("--every-n-steps", type=int, default=20, help="checkpoint every N steps")
    p.add_argument("--save-top-k", type=int, default=2, help="ModelCheckpoint save_top_k (-1 keeps all)")
    p.add_argument("--step-seconds", type=float, default=0.0, help="sleep after each step (to watch it)")
    p.add_argument("--ckpt-dir", default=os.environ.get("KRESUME_CHECKPOINT_DIR", "checkpoints"),
                   help="where ModelCheckpoint writes (default: $KRESUME_CHECKPOINT_DIR)")
    p.add_argument("--report-every", type=int, default=0,
                   help="print a progress line every N steps (default: --every-n-steps)")
    p.add_argument("--hidden", type=int, default=64, help="hidden units (checkpoint size ~ 136 B per unit)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    L.seed_everything(args.seed, verbose=False)
    ckpt_path = resume_from()
    checkpoint = ModelCheckpoint(dirpath=args.ckpt_dir, every_n_train_steps=args.every_n_steps,
                                 save_top_k=args.save_top_k, monitor="step", mode="max")
    trainer = L.Trainer(max_steps=args.max_steps, accelerator="cpu", devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[checkpoint,
                                   # fast_exit: no logger here needs the interpreter's teardown after the save
                                   PreemptionCheckpoint(dirpath=args.ckpt_dir, fast_exit=True,
                                                        report=lambda r: emit("preempted", **r)),
                                   Report(args.step_seconds, args.report_every or args.every_n_steps, ckpt_path)],
                        default_root_dir=args.ckpt_dir)
    data = DataLoader(make_data(seed=args.seed), batch_size=32, shuffle=True,
                      generator=torch.Generator().manual_seed(args.seed))
    trainer.fit(Regressor(hidden=args.hidden), data, ckpt_path=ckpt_path)
    emit("done", global_step=trainer.global_step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
