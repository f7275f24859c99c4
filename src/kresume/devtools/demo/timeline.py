"""The per-restart time line of the demo (issue 15 item 2): where the seconds between a preemption and the first
new training step go, and which of them are kresume's.

Sources, all on this machine's clock (epoch seconds):

- the node agent's container states (what it reports as pod status, but with sub-second times): the old
  trainer's and sidecar's exits, the new pod's containers' starts, the restore init container;
- the old pod's sidecar log (JSON lines, ``ts`` UTC): the commit of the trainer's final save (on the real node
  the copy :class:`~kresume.devtools.demo.kubeletpods.KubeletPods` made while the pod ran);
- the operator's log: ``inject-pod NS/RUN: OUTCOME (checkpoint from SOURCE) in X ms`` (local time, ms; on the
  real node ``kubectl logs --timestamps`` of the in-cluster operator, each line behind its UTC time);
- the trainer's own lines (examples/lightning/train.py): ``preempted`` (the final save and the SIGTERM time),
  ``exit`` (atexit: a bound of the trainer's exit finer than a v1.20 pod status's whole seconds),
  ``launched`` (the interpreter runs), ``start`` (with ``imports_s``, ``load_s``), then the first ``progress``.

:func:`segments` is pure: :class:`RestartTimes` in, the split out. The split's parts follow one another, so
they add up to ``total_s`` (SIGTERM → first new step) except where the sources overlap (a final commit that ends
before the trainer exits counts 0). kresume's share (:data:`KRESUME_PARTS`): the admission, the final commit
after the trainer's exit, and the restore download.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PARTS = (
    ("sigterm_to_trainer_exit_s", "SIGTERM → trainer exit (finish the step, final save)"),
    ("final_commit_s", "final commit after the trainer's exit"),
    ("old_pod_done_s", "rest of the old pod (sidecar exit, pod Failed)"),
    ("replacement_created_s", "replacement pod created (Job controller)"),
    ("admission_s", "admission (webhook)"),
    ("pod_start_s", "pod start (bind, containers)"),
    ("restore_s", "restore download (init step)"),
    ("startup_s", "trainer start-up (interpreter, imports)"),
    ("checkpoint_load_s", "checkpoint load"),
    ("first_step_s", "first new step"),
)
"""Keys of :func:`segments` in time order, with their labels."""

KRESUME_PARTS = ("admission_s", "final_commit_s", "restore_s")
"""The parts kresume's own code decides (issue 15 "Acceptance")."""

_ADMISSION = re.compile(r"^(?:(?P<utc>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) )?"
                        r"(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*inject-pod (?P<ns>[^/\s]+)/(?P<run>\S+): "
                        r"(?P<outcome>\w+) \(checkpoint from (?P<source>[\w-]+)\) in (?P<ms>[\d.]+) ms")


@dataclass(frozen=True)
class Admission:
    """One admission the operator logged: when it answered (epoch s), how, from which source, how long."""

    at: float
    outcome: str
    source: str
    ms: float


def parse_admissions(text: str, namespace: str, run: str) -> list[Admission]:
    """The operator log's admissions of ``namespace/run`` in order.

    A line's time: the RFC 3339 UTC time in front of it when there is one (``kubectl logs --timestamps``, the
    container runtime's time of the line: right whatever the operator container's time zone), else the
    operator's asctime (:data:`kresume.operator.cli.LOG_FORMAT`) read as this machine's local time (the node
    agent's operator process shares it)."""
    out = []
    for line in text.splitlines():
        m = _ADMISSION.search(line)
        if m and m["ns"] == namespace and m["run"] == run:
            at = _utc(m["utc"]) if m["utc"] else None
            if at is None:
                at = time.mktime(time.strptime(m["ts"][:19], "%Y-%m-%d %H:%M:%S")) + int(m["ts"][20:]) / 1000
            out.append(Admission(at, m["outcome"], m["source"], float(m["ms"])))
    return out


def admission_in(admissions: list[Admission], lo: float, hi: float) -> Admission | None:
    """The last admission answered inside ``[lo, hi]`` (the window in which the pod was admitted, see
    :mod:`kresume.devtools.demo.checks`), or None."""
    inside = [a for a in admissions if lo - 0.5 <= a.at <= hi + 0.5]
    return inside[-1] if inside else None


def sidecar_commit_time(text: str, name: str) -> float | None:
    """Epoch seconds of the sidecar's ``committed NAME as …`` line (its JSON ``ts`` is UTC), or None."""
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if str(rec.get("msg", "")).startswith(f"committed {name} as "):
            return _utc(str(rec.get("ts", "")))
    return None


def _utc(ts: str) -> float | None:
    try:
        return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class RestartTimes:
    """The raw times of one restart (epoch seconds; None when a source did not say)."""

    sigterm: float
    trainer_exit: float | None
    final_commit: float | None
    old_pod_done: float | None
    admitted: float | None
    admission_ms: float | None
    answer: str | None
    """``outcome/source`` of the admission, e.g. ``injected/memory``."""
    pod_started: float | None
    """The new pod's first container start (init or regular)."""
    restore_started: float | None
    restore_finished: float | None
    trainer_launched: float | None
    imports_s: float | None
    load_s: float | None
    train_start: float | None
    first_step: float | None
    checkpoint_bytes: int | None = None


def _d(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(max(0.0, b - a), 3)


def segments(t: RestartTimes) -> dict[str, Any]:
    """The split of one restart (keys of :data:`PARTS`, seconds, rounded to ms; None when unknown), plus
    ``total_s`` (SIGTERM → first new step), ``kresume_s`` (the sum of :data:`KRESUME_PARTS` that are known; None
    when the admission's time is not),
    ``answer`` and ``checkpoint_bytes``."""
    admitted_start = None if t.admitted is None else t.admitted - (t.admission_ms or 0) / 1000
    final = _d(t.trainer_exit, t.final_commit) if t.final_commit is not None else None
    after_exit = max(filter(None, (t.trainer_exit, t.final_commit)), default=None)
    trainer_ready = (t.trainer_launched + t.imports_s) if t.trainer_launched and t.imports_s is not None else None
    pod_start_end = t.restore_started if t.restore_started is not None else t.trainer_launched
    out: dict[str, Any] = {
        "sigterm_to_trainer_exit_s": _d(t.sigterm, t.trainer_exit),
        "final_commit_s": final,
        "old_pod_done_s": _d(after_exit, t.old_pod_done),
        "replacement_created_s": _d(t.old_pod_done, admitted_start),
        "admission_s": None if t.admission_ms is None else round(t.admission_ms / 1000, 3),
        "pod_start_s": _d(t.admitted, pod_start_end),
        "restore_s": _d(t.restore_started, t.restore_finished) if t.restore_started is not None else 0.0,
        "startup_s": _d(t.restore_finished if t.restore_finished is not None else t.trainer_launched, trainer_ready),
        "checkpoint_load_s": t.load_s,
        "first_step_s": _d(t.train_start, t.first_step),
        "total_s": _d(t.sigterm, t.first_step),
        "answer": t.answer,
        "checkpoint_bytes": t.checkpoint_bytes,
    }
    if t.restore_started is not None and t.trainer_launched is not None and t.restore_finished is not None:
        # The trainer's interpreter starts after the restore: the gap belongs to the pod start.
        out["startup_s"] = _d(t.trainer_launched, trainer_ready)
        out["pod_start_s"] = round((out["pod_start_s"] or 0) + (_d(t.restore_finished, t.trainer_launched) or 0), 3)
    known = [out[k] for k in KRESUME_PARTS if out[k] is not None]
    # Every restart has an admission: without its time the share is not measured (a sum of the parts found
    # would read as 0.00 s: seen on the real node, whose operator log the demo could not read).
    out["kresume_s"] = round(sum(known), 3) if known and out["admission_s"] is not None else None
    return out


def summarize(restarts: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each part over ``restarts`` (the dicts of :func:`segments`), and kresume's share of the total."""
    def median(xs: list[float]) -> float | None:
        xs = sorted(xs)
        if not xs:
            return None
        mid = len(xs) // 2
        return round(xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2, 3)

    keys = [k for k, _ in PARTS] + ["total_s", "kresume_s"]
    out = {k: median([r[k] for r in restarts if r.get(k) is not None]) for k in keys}
    if out["total_s"] and out["kresume_s"] is not None:
        out["kresume_share"] = round(out["kresume_s"] / out["total_s"], 4)
    return out


def collect(old: Any, new: Any, *, sigterm: float, operator_log: Path | None, namespace: str, run: str,
            admission_window: tuple[float, float], checkpoint_bytes: int | None = None) -> dict[str, Any]:
    """:func:`segments` of one restart from the demo's live objects: ``old``/``new`` are its ``Tracked`` pods
    (a node agent ``PodRunner`` and the trainer's parsed log each); ``checkpoint_bytes``: the size of the
    checkpoint the new pod resumed from. Missing sources give None parts."""
    def container(runner: Any, name: str) -> Any:
        return next((c for c in [*runner.init, *runner.regular] if c.name == name), None)

    old_trainer, new_trainer = container(old.runner, "trainer"), container(new.runner, "trainer")
    restore = container(new.runner, "kresume-restore")
    preempted = old.log.first("preempted") or {}
    final_commit = None
    # Plain lines: the node agent's log file, or on the real node the copy made while the pod ran (its CRI log
    # folder is gone with the pod).
    sidecar_log = getattr(old.runner, "plain_log_path", old.runner.log_path)("kresume-sidecar")
    if preempted.get("checkpoint") and sidecar_log.exists():
        final_commit = sidecar_commit_time(sidecar_log.read_text(errors="replace"), str(preempted["checkpoint"]))
    adm = None
    if operator_log is not None and operator_log.exists():
        adm = admission_in(parse_admissions(operator_log.read_text(errors="replace"), namespace, run),
                           *admission_window)
    starts = [c.started_at for c in [*new.runner.init, *new.runner.regular] if c.started_at]
    launched, start = new.log.first("launched"), new.log.first("start")
    first = next((e for e in new.log.events if e.get("event") == "progress" and start
                  and e.get("global_step", 0) > start.get("global_step", 0)), None)
    # Both are lower bounds of the trainer's exit: the container's finishedAt (whole seconds, truncated, from a
    # v1.20 kubelet's pod status; exact on the node agent) and the trainer's atexit ``exit`` line: take the later.
    exited = old.log.first("exit") or {}
    exit_bounds = [x for x in (old_trainer.finished_at if old_trainer else None, exited.get("time")) if x is not None]
    times = RestartTimes(
        sigterm=float(preempted.get("signal_at") or sigterm),
        trainer_exit=max(exit_bounds) if exit_bounds else None,
        final_commit=final_commit, old_pod_done=old.runner.failed_at,
        admitted=adm.at if adm else None, admission_ms=adm.ms if adm else None,
        answer=f"{adm.outcome}/{adm.source}" if adm else None,
        pod_started=min(starts) if starts else None,
        restore_started=restore.started_at if restore else None,
        restore_finished=restore.finished_at if restore else None,
        trainer_launched=launched.get("time") if launched else (new_trainer.started_at if new_trainer else None),
        imports_s=start.get("imports_s") if start else None, load_s=start.get("load_s") if start else None,
        train_start=start.get("time") if start else None, first_step=first.get("time") if first else None,
        checkpoint_bytes=checkpoint_bytes,
    )
    return {**segments(times), "raw": asdict(times)}


def measure_cp(nbytes: int, folder: Path, repeats: int = 3) -> float:
    """Median seconds of ``cp`` (the coreutils command, a fresh process as a user would run it) of an
    ``nbytes`` file of random bytes to a new name in ``folder`` (same disk as the demo's volumes); both copies
    are removed. The yardstick for kresume's share of a restart (issue 15 "Acceptance")."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="cp-yardstick-", dir=folder))
    try:
        src = tmp / "src"
        with open(src, "wb") as f:
            left = nbytes
            while left > 0:
                n = min(left, 8 << 20)
                f.write(os.urandom(n))
                left -= n
        cp = shutil.which("cp") or "cp"
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([cp, str(src), str(tmp / f"dst{i}")], check=True)
            times.append(time.perf_counter() - t0)
        return round(sorted(times)[len(times) // 2], 4)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def with_cp_ratio(summary: dict[str, Any], restarts: list[dict[str, Any]], folder: Path) -> dict[str, Any]:
    """``summary`` plus ``checkpoint_bytes`` (median of the restarts'), ``cp_s`` (:func:`measure_cp` of that
    size) and ``kresume_to_cp`` (the median kresume share in seconds over ``cp_s``)."""
    sizes = sorted(r["checkpoint_bytes"] for r in restarts if r.get("checkpoint_bytes"))
    if not sizes or summary.get("kresume_s") is None:
        return summary
    nbytes = sizes[len(sizes) // 2]
    cp_s = measure_cp(nbytes, folder)
    return {**summary, "checkpoint_bytes": nbytes, "cp_s": cp_s,
            "kresume_to_cp": round(summary["kresume_s"] / cp_s, 1) if cp_s > 0 else None}
