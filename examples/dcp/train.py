"""A small 2-rank (or N-rank) torch.distributed training that saves with ``torch.distributed.checkpoint``.

Each rank runs in its own pod with its own checkpoint folder (``KRESUME_CHECKPOINT_DIR``, an emptyDir): every
``--every-n-steps`` all ranks call ``dcp.save`` into ``step_<N>/`` of their own folder, so rank 0 writes
``.metadata`` and its shard ``__0_0.distcp`` and rank r only ``__r_0.distcp``. Each rank's kresume sidecar commits
its part; the step is resumable once every rank's part is durable (docs/store-protocol.md). The model is replicated
(gradients all-reduced, DDP style); each rank also keeps its own data position (``rank<r>.data``), so every rank's
shard holds something of its own, as in FSDP or a sharded optimizer.

The kresume code a multi-rank trainer needs: initialise ``torch.distributed`` first, then ``resume_from()``: rank 0
decides (the newest of the injected checkpoint and the run's latest whole step) and broadcasts it, so every rank
loads the same step; ``dcp.load`` reads the whole checkpoint folder from the store URL directly (fsspec).

Rendezvous: rank 0 hosts the ``TCPStore`` on ``--master-addr:--master-port`` (every pod of the demo shares the
host network); rank and world size come from ``KRESUME_RANK`` / ``KRESUME_WORLD_SIZE`` (injected by the operator
from the StatefulSet ordinal and replicas). A graceful stop (SIGTERM on any rank) is agreed in the step's
collective: every rank saves that step, the signalled one exits 143, the others go on and fail on the next
collective (the peer is gone), exit 1, and the job restarts. A rank whose peer dies without a word (SIGKILL)
fails on the broken collective within ``--timeout`` seconds.

One JSON line per event on stdout: ``launched``, ``start`` (rank, the step training starts at, the checkpoint),
``progress``, ``save``/``saved`` (around each ``dcp.save``), ``preempted``, ``peer-lost``, ``done``.

    KRESUME_RANK=0 KRESUME_WORLD_SIZE=2 python examples/dcp/train.py --max-steps 100 &
    KRESUME_RANK=1 KRESUME_WORLD_SIZE=2 python examples/dcp/train.py --max-steps 100
"""

from __future__ import annotations

import json
import os
import sys
import time

LAUNCHED = time.time()
print(json.dumps({"event": "launched", "time": LAUNCHED, "pid": os.getpid()}), flush=True)

import argparse  # noqa: E402 - the line above times the interpreter start, before the heavy imports
import datetime  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.distributed.checkpoint as dcp  # noqa: E402

from kresume import on_preemption, resume_from  # noqa: E402

STEP_PREFIX = "step_"
EXIT_PREEMPTED, EXIT_PEER_LOST, EXIT_EPOCH_MISMATCH = 143, 1, 3


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, "time": time.time(), **fields}), flush=True)


def make_batch(step: int, rank: int, hidden: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic batch of rank ``rank`` at ``step`` (32 features → 1, a fixed linear target)."""
    g = torch.Generator().manual_seed(1_000_003 * step + rank)
    x = torch.randn(16, 32, generator=g)
    w = torch.Generator().manual_seed(0)
    target = torch.randn(32, 1, generator=w)
    return x, x @ target


def _fail_peer(rank: int, step: int, exc: BaseException) -> int:
    emit("peer-lost", rank=rank, global_step=step, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    os._exit(EXIT_PEER_LOST)  # the process group cannot be torn down cleanly with a dead peer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-steps", type=int, default=100, help="total optimizer steps of the run")
    p.add_argument("--every-n-steps", type=int, default=10, help="dcp.save every N steps (and at the last step)")
    p.add_argument("--step-seconds", type=float, default=0.0, help="sleep after each step (to watch it)")
    p.add_argument("--hidden", type=int, default=64, help="hidden units of the model")
    p.add_argument("--ckpt-dir", default=os.environ.get("KRESUME_CHECKPOINT_DIR", "checkpoints"),
                   help="this rank's checkpoint folder (default: $KRESUME_CHECKPOINT_DIR)")
    p.add_argument("--master-addr", default="127.0.0.1", help="host of rank 0's TCPStore")
    p.add_argument("--master-port", type=int, default=29531, help="port of rank 0's TCPStore")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="seconds a collective (and the rendezvous) may wait for a peer before failing")
    p.add_argument("--rendezvous-timeout", type=float, default=120.0,
                   help="seconds to wait for every rank at start (a replaced peer's pod may come up later)")
    args = p.parse_args(argv)

    if "KRESUME_WORLD_SIZE" not in os.environ:  # the webhook fails open: such a pod must not train as world 1
        emit("not-injected", error="KRESUME_RANK/KRESUME_WORLD_SIZE are not set: this pod was admitted without "
                                   "kresume's injection (see the operator's log); refusing to start")
        return 2
    rank = int(os.environ.get("KRESUME_RANK", "0"))
    world = int(os.environ["KRESUME_WORLD_SIZE"])
    torch.set_num_threads(1)
    t0 = time.time()
    store = dist.TCPStore(args.master_addr, args.master_port, world, is_master=rank == 0,
                          timeout=datetime.timedelta(seconds=args.rendezvous_timeout), wait_for_workers=True)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=args.timeout))
    # Every rank must be in the same resume epoch (its sidecar names the step's shared prefix with it): a pod
    # restarted alone (its container, in place) keeps its old epoch and its parts would never meet the others'.
    epochs: list[str | None] = [None] * world
    dist.all_gather_object(epochs, os.environ.get("KRESUME_EPOCH", ""))
    if len(set(epochs)) > 1:
        emit("epoch-mismatch", rank=rank, epochs=epochs)
        os._exit(EXIT_EPOCH_MISMATCH)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, args.hidden), torch.nn.ReLU(), torch.nn.Linear(args.hidden, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    step_t = torch.zeros((), dtype=torch.int64)
    data_pos = torch.zeros((), dtype=torch.int64)  # this rank's own state: its shard is never empty

    def state() -> dict:
        return {"model": model.state_dict(), "optim": opt.state_dict(), "step": step_t, f"rank{rank}.data": data_pos}

    source = resume_from(local=False)  # rank 0 decides and broadcasts: every rank loads the same step
    if source:
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader

        sd = state()
        dcp.load(sd, storage_reader=FsspecReader(source))
        model.load_state_dict(sd["model"])
        opt.load_state_dict(sd["optim"])
    start = int(step_t)
    emit("start", rank=rank, world_size=world, global_step=start, resumed_from=source, pid=os.getpid(),
         epoch=os.environ.get("KRESUME_EPOCH", ""), launched=LAUNCHED, load_s=round(time.time() - t0, 3))

    def save(step: int) -> None:
        emit("save", rank=rank, global_step=step)
        path = os.path.join(args.ckpt_dir, f"{STEP_PREFIX}{step:06d}")
        dcp.save(state(), storage_writer=dcp.FileSystemWriter(path))
        emit("saved", rank=rank, global_step=step, path=path)

    # SIGTERM is latched (saving inside the handler is unsafe); the sidecar sees this trainer alive (a lock in the
    # checkpoint folder) and waits for its final save within the grace period.
    preemption = on_preemption(lambda: None, checkpoint_dir=args.ckpt_dir)
    saved = start
    step = start
    while step < args.max_steps:
        x, y = make_batch(step, rank)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        if args.step_seconds:
            time.sleep(args.step_seconds)
        signalled = preemption.requested  # what this rank tells the others; a later SIGTERM counts next step
        flat = torch.cat([p.grad.reshape(-1) for p in model.parameters()] + [torch.tensor([float(signalled)])])
        try:
            dist.all_reduce(flat)  # gradients (summed) and "some rank got SIGTERM" (any)
        except Exception as exc:  # noqa: BLE001 - gloo raises RuntimeError/DistError on a dead peer
            return _fail_peer(rank, step, exc)
        off = 0
        for prm in model.parameters():
            n = prm.numel()
            prm.grad.copy_(flat[off:off + n].reshape(prm.shape) / world)
            off += n
        opt.step()
        step += 1
        step_t.fill_(step)
        data_pos.fill_(step * 16)
        emit("progress", rank=rank, global_step=step, loss=round(float(loss), 5))
        stopping = flat[-1].item() > 0  # some rank got SIGTERM: every rank saves this step (dcp.save is collective)
        try:
            if signalled:
                if step > saved:
                    preemption.run_save(lambda: save(step), step=step)
                else:
                    preemption.mark_saved(None, step=step, started=time.time(), state="none")
                emit("preempted", rank=rank, global_step=step)
                sys.stdout.flush()
                os._exit(EXIT_PREEMPTED)
            if step % args.every_n_steps == 0 or step == args.max_steps or (stopping and step > saved):
                save(step)
                saved = step
        except Exception as exc:  # noqa: BLE001 - a save is collective too
            return _fail_peer(rank, step, exc)
    emit("done", rank=rank, global_step=step)
    try:
        dist.barrier()
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - a peer that already left is fine at the end
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
