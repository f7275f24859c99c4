"""Sidecar rows: time to durable minus pure upload (the sidecar's own overhead), and peak RSS.

Time to durable: the checkpoint is written and fsynced outside the watch folder, then renamed in
(the moment the trainer "closes" it, as ``torch.save`` to a temp name + rename would); it ends
when the running sidecar logs ``committed <name>`` (manifest written). Pure upload: the same file
committed in-process with ``RunStore.commit`` (the code the sidecar runs, without detection).
Rounds alternate sidecar / pure; overhead = median(durable) - median(pure).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench import inputs, procs
from bench.report import Metric
from bench.servers import Target

Log = Callable[[str], None]


class Sidecar:
    """``python -m kresume.sidecar`` on ``watch`` → ``url``, JSON logs read line by line with arrival times."""

    def __init__(self, target: Target, watch: Path, url: str) -> None:
        argv = [sys.executable, "-m", "kresume.sidecar", "--watch", str(watch), "--run-url", url,
                "--storage-options", json.dumps(target.storage_options), "--metrics-port", "-1",
                "--log-format", "json"]
        self.running = procs.start(argv, env=target.env)
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.tail: list[str] = []
        self.last = ""
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.running.proc.stderr is not None
        for raw in self.running.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.tail = (self.tail + [line])[-20:]
            self.lines.put((time.monotonic(), line))

    def wait_for(self, needle: str, timeout_s: float) -> float:
        """Monotonic arrival time of the first log line containing ``needle``; RuntimeError on timeout.
        The line itself is kept in ``self.last``."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.running.proc.poll() is not None:
                raise RuntimeError(f"sidecar never logged {needle!r}; last lines:\n{''.join(self.tail)}")
            try:
                at, line = self.lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if needle in line:
                self.last = line
                return at

    def stop(self) -> procs.Sample:
        return self.running.stop()


def _pure_commit(target: Target, path: Path, url: str) -> float:
    from kresume.store.runstore import RunStore

    t0 = time.monotonic()
    RunStore.open(url, target.storage_options).commit(path)
    return time.monotonic() - t0


def _clear(target: Target, url: str) -> None:
    fs = target.filesystem()
    try:
        fs.rm(url.split("://", 1)[1], recursive=True)
    except FileNotFoundError:
        pass
    fs.invalidate_cache()


def _durable(target: Target, master: Path, repeats: int, work: Path, log: Log) -> list[Metric]:
    watch, stage = work / "watch", work / "stage"
    for d in (watch, stage):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    url = target.url("sidecar/durable/")
    sidecar = Sidecar(target, watch, url)
    durable: list[float] = []
    pure: list[float] = []
    own: list[float] = []  # the sidecar's own commit time, from its "committed … in X s" line
    try:
        sidecar.wait_for("watching", 120)
        warm = stage / "warm-up.ckpt"  # the in-process client pays its session setup here, not in round 0
        inputs.torch_checkpoint(warm, 2**20)
        _pure_commit(target, warm, target.url("sidecar/warm-up/"))
        _clear(target, target.url("sidecar/warm-up/"))
        warm.unlink()
        for rnd in range(repeats):
            name = f"epoch=0-step={rnd + 1}.ckpt"
            for which in (("sidecar", "pure") if rnd % 2 == 0 else ("pure", "sidecar")):
                staged = stage / name
                shutil.copyfile(master, staged)
                with open(staged, "rb") as f:
                    os.fsync(f.fileno())
                if which == "sidecar":
                    t0 = time.monotonic()
                    os.rename(staged, watch / name)
                    durable.append(sidecar.wait_for(f"committed {name}", 1800) - t0)
                    found = re.search(r" in ([0-9.]+) s", sidecar.last)
                    own.append(float(found.group(1)) if found else float("nan"))
                    (watch / name).unlink()
                else:
                    pure.append(_pure_commit(target, staged, target.url(f"sidecar/pure-{rnd}/")))
                    staged.unlink()
                    _clear(target, target.url(f"sidecar/pure-{rnd}/"))
            log(f"  durable round {rnd}: sidecar {durable[-1]:.2f} s, pure commit {pure[-1]:.2f} s")
    finally:
        sample = sidecar.stop()
        _clear(target, url)
    over = statistics.median(durable) - statistics.median(pure)
    paired = statistics.median(d - p for d, p in zip(durable, pure, strict=True))
    detect = statistics.median(d - o for d, o in zip(durable, own, strict=True))
    size_mb = master.stat().st_size / 1e6
    return [
        Metric(f"time to durable, {size_mb:.0f} MB ckpt (sidecar)", f"{statistics.median(durable):.2f} s",
               "–", None, f"rename into watch folder → `committed` log line; median of {repeats}"),
        Metric("sidecar overhead (durable − pure upload)", f"{over * 1000:.0f} ms", "≤ 200 ms", over <= 0.2,
               f"pure = in-process RunStore.commit of the same file, median {statistics.median(pure):.2f} s; "
               "alternating"),
        Metric("sidecar overhead, paired rounds", f"{paired * 1000:.0f} ms", "≤ 200 ms", paired <= 0.2,
               "median over rounds of (durable − pure) measured back to back"),
        Metric("sidecar detection + queueing (durable − its own logged commit time)", f"{detect * 1000:.0f} ms",
               "–", None, "the `committed … in X s` log line; independent of upload noise"),
        Metric("sidecar peak RSS during the durable rounds", f"{sample.max_rss / 2**20:.0f} MiB", "–", None,
               "wait4 ru_maxrss of the sidecar process"),
    ]


def _memory(target: Target, path: Path, work: Path, log: Log) -> list[Metric]:
    """Peak RSS of a sidecar committing ``path`` (a file or a folder of shards), then of ``kresume commit``."""
    watch = work / "watch-mem"
    shutil.rmtree(watch, ignore_errors=True)
    watch.mkdir(parents=True)
    url = target.url("sidecar/memory/")
    folder = path.is_dir()
    files = [p for p in path.rglob("*") if p.is_file()] if folder else [path]
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    what = f"{size_mb:.0f} MB ckpt" if not folder else \
        f"folder of {len(files) - 1} x {max(p.stat().st_size for p in files) / 1e6:.0f} MB"
    sidecar = Sidecar(target, watch, url)
    try:
        sidecar.wait_for("watching", 120)
        os.rename(path, watch / path.name)
        sidecar.wait_for(f"committed {path.name}", 3600)
    finally:
        sample = sidecar.stop()
        _clear(target, url)
    log(f"  memory: sidecar peak {sample.max_rss / 2**20:.0f} MiB")
    commit = procs.run([str(Path(sys.executable).parent / "kresume"), "commit", str(watch / path.name),
                        target.url("cli/memory/"), "--no-progress"], env=target.env)
    _clear(target, target.url("cli/memory/"))
    shutil.rmtree(watch / path.name) if folder else (watch / path.name).unlink()
    log(f"  memory: kresume commit peak {commit.max_rss / 2**20:.0f} MiB")
    return [
        Metric(f"sidecar peak RSS, {what}", f"{sample.max_rss / 2**20:.0f} MiB", "≤ 128 MiB",
               sample.max_rss <= 128 * 2**20, "wait4 ru_maxrss of the whole sidecar run (start → commit → SIGTERM)"),
        Metric(f"`kresume commit` peak RSS, {what}", f"{commit.max_rss / 2**20:.0f} MiB", "≤ 128 MiB",
               commit.max_rss <= 128 * 2**20, f"wait4 ru_maxrss; took {commit.seconds:.1f} s"),
    ]


def measure(target: Target, sizes: inputs.Sizes, repeats: int, work: Path, rows: set[str], log: Log) -> list[Metric]:
    """The ``durable`` and/or ``memory`` rows (as selected in ``rows``) on ``target``."""
    out: list[Metric] = []
    data = work / "inputs-sidecar"
    if "durable" in rows:
        master = inputs.torch_checkpoint(data / "master.ckpt", sizes.file)
        try:
            out += _durable(target, master, repeats, work, log)
        finally:
            master.unlink()
    if "memory" in rows:
        big = inputs.torch_checkpoint(data / "epoch=0-step=4000.ckpt", sizes.memory_file, seed=1)
        try:
            out += _memory(target, big, work, log)
        finally:
            big.unlink(missing_ok=True)
        shards = inputs.folder(data / "sharded-memory", sizes.memory_shards, sizes.memory_shard)
        try:
            out += _memory(target, shards, work, log)
        finally:
            shutil.rmtree(shards, ignore_errors=True)
    return out
