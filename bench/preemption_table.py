"""``python -m bench.preemption_table RESULT.json...``: the "Preemption: steps lost and the restart time line"
section of bench/RESULTS.md from one or more ``kresume demo --json-out`` results (the campaign test writes one).

    python -m bench.preemption_table campaign.json kill.json

Prints markdown: the preemptions by mode with the steps each lost (issue 15's acceptance: 0 after a graceful one,
at most one checkpoint interval after SIGKILL), then the per-restart time line (the demo's split,
:mod:`kresume.devtools.demo.timeline`) as median and worst of each part over all restarts of the files given, and
kresume's share (admission + final commit after the trainer's exit + restore) in seconds and as a multiple of the
``cp`` the demo timed of the same bytes on the same disk.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kresume.devtools.demo import chaos, timeline


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def lost_by_mode(results: Iterable[dict[str, Any]]) -> dict[str, list[int | None]]:
    """Steps lost per restart, by preemption mode (keys in :data:`chaos.MODES` order, only modes seen)."""
    out: dict[str, list[int | None]] = {m: [] for m in chaos.MODES}
    for r in results:
        for p in r["preemptions"]:
            out[p["mode"]].append(p["lost_steps"])
    return {m: v for m, v in out.items() if v}


def acceptance_problems(results: Iterable[dict[str, Any]]) -> list[str]:
    """Every restart that breaks issue 15's rule (:func:`chaos.lost_steps_problem`) or whose loss is unknown,
    one line each (``FILE #i mode: ...``); empty when all hold."""
    out = []
    for r in results:
        every = r["settings"]["every_n_steps"]
        for p in r["preemptions"]:
            problem = ("lost steps unknown" if p["lost_steps"] is None
                       else chaos.lost_steps_problem(p["mode"], p["lost_steps"], every))
            if problem:
                out.append(f"{r.get('_file', '?')} #{p['index']} {p['mode']}: {problem}")
    return out


def split_stats(results: Iterable[dict[str, Any]]) -> dict[str, tuple[float | None, float | None, int]]:
    """For each part of :data:`timeline.PARTS` plus ``total_s`` and ``kresume_s``: (median, worst, count) in
    seconds over every restart with a time line; worst = the largest (every part is a cost)."""
    rows = [p["timeline"] for r in results for p in r["preemptions"] if p.get("timeline")]
    out = {}
    for key in [k for k, _ in timeline.PARTS] + ["total_s", "kresume_s"]:
        xs = [row[key] for row in rows if row.get(key) is not None]
        out[key] = (_median(xs), max(xs) if xs else None, len(xs))
    return out


def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(results: list[dict[str, Any]]) -> str:
    """The section's tables (see the module docstring) for ``results`` (demo JSON dicts)."""
    lines = ["| mode | preemptions | steps lost, each restart | rule |", "|---|---|---|---|"]
    for mode, lost in lost_by_mode(results).items():
        rule = "≤ one checkpoint interval" if mode == "kill" else "0"
        lines.append(f"| {mode} ({chaos.DESCRIPTIONS[mode]}) | {len(lost)} | "
                     f"{', '.join('?' if x is None else str(x) for x in lost)} | {rule} |")
    problems = acceptance_problems(results)
    lines += ["", "Acceptance: " + ("every restart holds" if not problems else "; ".join(problems)), ""]
    stats = split_stats(results)
    lines += ["| part of the restart (s) | median | worst | restarts |", "|---|---|---|---|"]
    labels = dict(timeline.PARTS) | {"total_s": "**total: SIGTERM → first new step**",
                                     "kresume_s": "**kresume's share** (admission + final commit + restore)"}
    for key, (med, worst, n) in stats.items():
        star = " *" if key in timeline.KRESUME_PARTS else ""
        lines.append(f"| {labels[key]}{star} | {_f(med)} | {_f(worst)} | {n} |")
    answers: dict[str, int] = {}
    for r in results:
        for p in r["preemptions"]:
            a = (p.get("timeline") or {}).get("answer") or "unknown"
            answers[a] = answers.get(a, 0) + 1
    lines += ["", "Admission answers: " + ", ".join(f"{k} {v}" for k, v in sorted(answers.items()))]
    for r in results:
        med = r.get("timeline_median") or {}
        if med.get("cp_s"):
            lines.append(f"{r.get('_file', '?')}: kresume's share (median) {med['kresume_s']:.3f} s of "
                         f"{med['total_s']:.1f} s ({100 * med['kresume_share']:.1f} %); `cp` of the same "
                         f"{med['checkpoint_bytes']} B on this disk {med['cp_s']:.4f} s: {med['kresume_to_cp']}× cp")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.preemption_table", description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path, help="kresume demo --json-out files")
    args = p.parse_args(argv)
    results = [{**json.loads(f.read_text()), "_file": f.name} for f in args.results]
    print(markdown(results))
    return 1 if acceptance_problems(results) else 0


if __name__ == "__main__":
    sys.exit(main())
