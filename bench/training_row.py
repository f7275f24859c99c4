"""Training overhead: steps/s of the example Lightning trainer with and without a sidecar beside it.

The trainer (examples/lightning/train.py, the demo's model, no sleeps: CPU-bound) prints JSON
events; steps/s is measured between its ``start`` and ``done`` events (process start-up excluded).
Runs alternate with/without; the sidecar watches the trainer's checkpoint folder and commits every
checkpoint while it trains. Full runs: 3000 steps, a checkpoint every 500 (one every ~2 s of
training: far more often than real jobs, which checkpoint every few minutes).

Steps/s on 2 shared cores spreads ±15 % between single runs, more than the 1 % target, so the row
also reports the sidecar's own CPU (``psutil`` of its process): idle (ms per s, measured before the
trainer starts) and per committed checkpoint. Those do not depend on the trainer's noise and give
the overhead at any checkpoint cadence: CPU per checkpoint ÷ seconds between checkpoints.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.report import Metric
from bench.servers import Target
from bench.sidecar_rows import Sidecar, _clear

Log = Callable[[str], None]
TRAIN = Path(__file__).resolve().parents[1] / "examples" / "lightning" / "train.py"


def _train(ckpt_dir: Path, steps: int, every: int) -> float:
    """Run the trainer once; return optimizer steps per second between its start and done events."""
    out = subprocess.run([sys.executable, str(TRAIN), "--max-steps", str(steps), "--every-n-steps", str(every),
                          "--ckpt-dir", str(ckpt_dir), "--report-every", str(steps)],
                         capture_output=True, text=True, check=False, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"trainer failed ({out.returncode}):\n{out.stderr[-2000:]}")
    events = {e["event"]: e for e in map(json.loads, (ln for ln in out.stdout.splitlines() if ln.startswith("{")))}
    start, done = events["start"], events["done"]
    _TRAIN_S.append(done["time"] - start["time"])
    return (done["global_step"] - start["global_step"]) / (done["time"] - start["time"])


def measure(target: Target, quick: bool, repeats: int, work: Path, log: Log) -> list[Metric]:
    """Steps/s with and without a sidecar (alternating, medians) → overhead in percent."""
    steps, every = (40, 10) if quick else (3000, 500)
    alone: list[float] = []
    beside: list[float] = []
    idle_ms_per_s: list[float] = []
    per_ckpt_ms: list[float] = []
    for rnd in range(repeats):
        for which in (("alone", "sidecar") if rnd % 2 == 0 else ("sidecar", "alone")):
            ckpt = work / f"train-{which}-{rnd}"
            shutil.rmtree(ckpt, ignore_errors=True)
            ckpt.mkdir(parents=True)
            if which == "alone":
                alone.append(_train(ckpt, steps, every))
            else:
                url = target.url(f"training/{rnd}/")
                sidecar = Sidecar(target, ckpt, url)
                try:
                    sidecar.wait_for("watching", 120)
                    time.sleep(1.0)  # start-up work (imports, first connections) is over
                    c0 = _cpu(sidecar)
                    time.sleep(IDLE_S)
                    c1 = _cpu(sidecar)
                    idle_ms_per_s.append((c1 - c0) / IDLE_S * 1000)
                    beside.append(_train(ckpt, steps, every))
                    commits = _wait_commits(sidecar, steps // every, 60)
                    per_ckpt_ms.append(((_cpu(sidecar) - c1) - idle_ms_per_s[-1] / 1000 * _TRAIN_S[-1]) / max(1, commits) * 1000)
                finally:
                    sidecar.stop()
                    _clear(target, url)
            shutil.rmtree(ckpt, ignore_errors=True)
        log(f"  training round {rnd}: alone {alone[-1]:.0f} steps/s, with sidecar {beside[-1]:.0f} steps/s")
    a, b = statistics.median(alone), statistics.median(beside)
    over = (a - b) / a * 100
    idle, per = statistics.median(idle_ms_per_s), statistics.median(per_ckpt_ms)
    at_60 = (per / 60 + idle) / 10  # % of one core with a checkpoint every 60 s
    return [Metric("training overhead (steps/s with sidecar vs without)", f"{over:+.1f} % ({b:.0f} vs {a:.0f} steps/s)",
                   "≤ 1 %", over <= 1.0,
                   f"examples/lightning/train.py, {steps} steps, checkpoint every {every}; median of {repeats}"),
            Metric("sidecar CPU: idle / per committed checkpoint", f"{idle:.1f} ms/s / {per:.0f} ms", "–", None,
                   "psutil CPU of the sidecar process: idle before training; (during training + commits − idle) ÷ commits"),
            Metric("sidecar CPU with a checkpoint every 60 s", f"{at_60:.2f} % of one core", "≤ 1 %", at_60 <= 1.0,
                   "derived: (per-checkpoint CPU ÷ 60 s) + idle CPU")]


IDLE_S = 10.0
"""Seconds the sidecar's idle CPU is sampled for, before each training run."""
_TRAIN_S: list[float] = []


def _cpu(sidecar: Sidecar) -> float:
    """User + system CPU seconds of the sidecar's process tree so far."""
    import psutil

    root = psutil.Process(sidecar.running.proc.pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


def _wait_commits(sidecar: Sidecar, expected: int, timeout_s: float) -> int:
    """Wait until the sidecar has logged ``expected`` commits (or ``timeout_s``); return how many it logged."""
    count = 0
    deadline = time.monotonic() + timeout_s
    while count < expected and time.monotonic() < deadline:
        try:
            sidecar.wait_for('"msg": "committed ', max(0.1, deadline - time.monotonic()))
        except RuntimeError:
            break
        count += 1
    return count
