"""Training overhead: steps/s of the example Lightning trainer with and without a sidecar beside it.

The trainer (examples/lightning/train.py) prints JSON events; steps/s is measured between its
``start`` and ``done`` events (process start-up excluded). Runs alternate with/without; the
sidecar watches the trainer's checkpoint folder and commits every checkpoint while it trains.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
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
    return (done["global_step"] - start["global_step"]) / (done["time"] - start["time"])


def measure(target: Target, quick: bool, repeats: int, work: Path, log: Log) -> list[Metric]:
    """Steps/s with and without a sidecar (alternating, medians) → overhead in percent."""
    steps, every = (40, 10) if quick else (600, 50)
    alone: list[float] = []
    beside: list[float] = []
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
                    beside.append(_train(ckpt, steps, every))
                finally:
                    sidecar.stop()
                    _clear(target, url)
            shutil.rmtree(ckpt, ignore_errors=True)
        log(f"  training round {rnd}: alone {alone[-1]:.0f} steps/s, with sidecar {beside[-1]:.0f} steps/s")
    a, b = statistics.median(alone), statistics.median(beside)
    over = (a - b) / a * 100
    return [Metric("training overhead (steps/s with sidecar vs without)", f"{over:+.1f} % ({b:.0f} vs {a:.0f} steps/s)",
                   "≤ 1 %", over <= 1.0,
                   f"examples/lightning/train.py, {steps} steps, checkpoint every {every}; median of {repeats}")]
