"""Real trainers with kresume's preemption hooks, for the sidecar tests (run as separate processes).

    python preempt_trainers.py plain OUT --every 10 --mb 1 --save-delay 1.5     kresume.on_preemption
    python preempt_trainers.py hf OUT                                             kresume.hf.PreemptionCallback
    python preempt_trainers.py hf-jit OUT                                         TrainingArguments(enable_jit_checkpoint=True)

Each prints JSON lines on stdout: ``{"event": "step", "step": N}`` after every step (``ready`` once the hook is
set up) and, for ``plain``, ``{"event": "saved", ...}`` after each scheduled save. It runs until ``--steps`` or
until a signal ends it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "time": time.time(), **fields}), flush=True)


def plain(args: argparse.Namespace) -> int:
    import torch

    import kresume

    state = {"step": 0}

    def save(name: str) -> str:
        time.sleep(args.save_delay)  # a big model's save takes seconds; the sidecar must wait for it
        tmp = os.path.join(args.out, f".tmp-{name}")
        torch.save({"global_step": state["step"], "w": torch.randn(args.mb * 2**18)}, tmp)
        os.replace(tmp, os.path.join(args.out, name))
        return name

    preemption = kresume.on_preemption(lambda: save(f"preempted-step={state['step']}.pt"),
                                       checkpoint_dir=args.out)
    emit("ready", pid=os.getpid())
    for step in range(1, args.steps + 1):
        time.sleep(args.step_seconds)  # the "step"
        state["step"] = step
        emit("step", step=step)
        if step % args.every == 0:
            emit("saved", name=save(f"step={step}.pt"), step=step)
        preemption.check(step)
    return 0


def _hf_parts(out: str, steps: int, **extra: object):  # type: ignore[no-untyped-def]
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, TrainerCallback, TrainingArguments

    class Report(TrainerCallback):
        def on_train_begin(self, a, state, control, **k):  # type: ignore[no-untyped-def]
            emit("ready", pid=os.getpid(), step=state.global_step)

        def on_step_end(self, a, state, control, **k):  # type: ignore[no-untyped-def]
            time.sleep(0.1)
            emit("step", step=state.global_step)

        def on_save(self, a, state, control, **k):  # type: ignore[no-untyped-def]
            emit("saved", name=f"checkpoint-{state.global_step}", step=state.global_step)

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=128, n_positions=32))
    data = [{"input_ids": torch.randint(0, 128, (16,)), "labels": torch.randint(0, 128, (16,))} for _ in range(64)]
    targs = TrainingArguments(output_dir=out, max_steps=steps, save_steps=10, save_total_limit=2,
                              per_device_train_batch_size=4, report_to=[], logging_steps=1000, use_cpu=True,
                              dataloader_num_workers=0, disable_tqdm=True, **extra)
    return model, data, targs, Report()


def hf(args: argparse.Namespace, jit: bool) -> int:
    from transformers import Trainer

    model, data, targs, report = _hf_parts(args.out, args.steps, **({"enable_jit_checkpoint": True} if jit else {}))
    callbacks = [report]
    if not jit:
        from kresume.hf import PreemptionCallback

        callbacks.append(PreemptionCallback())
    Trainer(model=model, args=targs, train_dataset=data, callbacks=callbacks).train()
    emit("returned")  # train() came back: the script would go on (and exit 0)
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["plain", "hf", "hf-jit"])
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=100000)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--mb", type=int, default=1)
    p.add_argument("--step-seconds", type=float, default=0.05)
    p.add_argument("--save-delay", type=float, default=0.0)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    sys.exit(plain(a) if a.kind == "plain" else hf(a, jit=a.kind == "hf-jit"))
