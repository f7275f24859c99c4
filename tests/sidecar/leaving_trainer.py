"""A real plain-PyTorch trainer for the legacy-mode exit tests (run as a separate process).

    python leaving_trainer.py OUT --steps 6 --every 2 --end finish|exit|crash|kill [--finished] [--last-save-seconds S]

It calls ``kresume.resume_from()`` first (with ``KRESUME_CHECKPOINT_DIR`` set that takes the trainer lock for the
process's life), then saves ``step=N.pt`` (torch) every ``--every`` steps. The last save writes half the file, sleeps
``--last-save-seconds`` (a big final save: the sidecar must not leave meanwhile), then the rest. With ``--rank R``
each save is a marker folder ``step-N/`` holding ``rank-R.pt`` (a multi-rank run's per-rank part). Then, with
``--finished``, ``kresume.training_finished()``, and the end: ``finish``/``exit`` = exit 0, ``crash`` = an exception
(exit 1), ``kill`` = SIGKILL to itself. JSON lines on stdout: ``ready``, ``saved``, ``end``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import sys
import time


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "time": time.time(), **fields}), flush=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--every", type=int, default=2)
    p.add_argument("--end", choices=["finish", "exit", "crash", "kill"], default="finish")
    p.add_argument("--finished", action="store_true")
    p.add_argument("--last-save-seconds", type=float, default=0.0)
    p.add_argument("--rank", type=int, default=None, help="save step-N/rank-R.pt + a marker (a multi-rank run)")
    p.add_argument("--hold-seconds", type=float, default=0.0, help="sleep this long after the last save")
    args = p.parse_args()

    import torch

    import kresume

    resumed = kresume.resume_from(local=False)
    emit("ready", pid=os.getpid(), resumed=resumed)
    start = int(re.search(r"step=(\d+)", resumed).group(1)) + 1 if resumed else 1  # resume after that step
    for step in range(start, args.steps + 1):
        if step % args.every:
            continue
        buf = io.BytesIO()
        torch.save({"global_step": step, "w": torch.randn(2**18)}, buf)
        data = buf.getvalue()
        path = os.path.join(args.out, f"step={step}.pt")
        if args.rank is not None:  # a multi-rank marker folder: step-N/rank-R.pt, then the marker
            os.makedirs(os.path.join(args.out, f"step-{step}"))
            path = os.path.join(args.out, f"step-{step}", f"rank-{args.rank}.pt")
        with open(path, "wb") as f:
            if step + args.every > args.steps and args.last_save_seconds:
                f.write(data[: len(data) // 2])
                f.flush()
                emit("saving", name=os.path.basename(path))
                time.sleep(args.last_save_seconds)
                f.write(data[len(data) // 2 :])
            else:
                f.write(data)
        if args.rank is not None:
            open(os.path.join(args.out, f"step-{step}", ".kresume-complete"), "w").close()
        emit("saved", name=os.path.basename(path), step=step)
    time.sleep(args.hold_seconds)
    if args.finished:
        assert kresume.training_finished(step=args.steps)
    emit("end", how=args.end)
    if args.end == "crash":
        raise RuntimeError("the trainer crashed (on purpose)")
    if args.end == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
