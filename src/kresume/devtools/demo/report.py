"""What the demo prints: timestamped event lines while it runs (plus a live status line on a terminal), then a
summary table of every preemption and admission, the checks, and ``kubectl get ckptrun``."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text


class Display:
    """Event lines (``say``) and a one-line live status (``refresh``, only on a terminal)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)
        if not self.console.is_terminal:
            # In a log file, keep each event on one line (URLs stay greppable); tables get 160 columns.
            self.console.width = max(self.console.width, 160)
            self.console.soft_wrap = True
        self.t0 = time.time()
        self._live: Live | None = None
        self._last_status = ""

    def __enter__(self) -> Display:
        if self.console.is_terminal:
            self._live = Live(Text(""), console=self.console, refresh_per_second=4, transient=True)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def say(self, text: str) -> None:
        """Print one event line, prefixed with the time since the demo started (m:ss)."""
        dt = int(time.time() - self.t0)
        style = "bold red" if text.startswith(("PREEMPTION", "FAILED")) else ("green" if "resumed at" in text else None)
        self.console.print(Text(f"[{dt // 60}:{dt % 60:02d}] ", style="dim") + Text(text, style=style or ""))

    def refresh(self, status: str) -> None:
        """Update the live status line (no-op when not on a terminal)."""
        if self._live is not None and status != self._last_status:
            self._last_status = status
            self._live.update(Text(status, style="bold cyan"))


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def summary(result: dict[str, Any], console: Console) -> None:
    """Print the summary of a :func:`~kresume.devtools.demo.run.run_demo` result."""
    if result.get("ranks", 1) > 1:
        ranks_table(result, console)
    else:
        _preemptions_table(result, console)
    a = Table(title="Admissions: what the webhook injected and what the trainer did", title_justify="left")
    for col in ("pod", "injected step", "trainer started at", "checkpoint loads (global_step)", "check"):
        a.add_column(col)
    for adm in result["admissions"]:
        a.add_row(adm["pod"], _fmt(adm["injected_step"]) if adm["injected_url"] else "none (fresh)",
                  _fmt(adm["start_step"]), _fmt(adm["loaded_step"]) if adm["injected_url"] else "-",
                  Text("ok", style="green") if not adm["problems"] else Text("; ".join(adm["problems"]), style="red"))
    console.print(a)
    if result.get("node"):
        console.print(f"node: {result['node']}" + (f"; helm test passed ({result['helm_test']['seconds']} s)"
                                                   if (result.get("helm_test") or {}).get("passed") else ""))
    if result.get("ranks", 1) == 1:
        timeline_table(result, console)
    console.print(f"final step: {result['final_step']} of {result['settings']['max_steps']} planned; "
                  f"{len(result['committed'])} checkpoints committed; job {result['durations'].get('job_s')} s, "
                  f"total {result['durations'].get('total_s', '-')} s")  # fmt: skip
    if result.get("ckptrun"):
        console.print("\n$ kubectl get ckptrun -n " + result.get("namespace", "kresume-demo"))
        console.print(result["ckptrun"], markup=False)
    if result.get("logs"):
        console.print("\nlogs:")
        for name, path in result["logs"].items():
            console.print(f"  {name}: {path}", markup=False)
    if result["ok"]:
        console.print(Text("\nALL CHECKS PASSED: every restart resumed from the newest committed checkpoint"
                           + (" (every rank from the same, whole step)" if result.get("ranks", 1) > 1 else ""),
                           style="bold green"))  # fmt: skip
    else:
        console.print(Text("\nCHECKS FAILED:", style="bold red"))
        for problem in result["problems"]:
            console.print(f"  - {problem}", markup=False)


_SHORT = {
    "sigterm_to_trainer_exit_s": "SIGTERM→\ntrainer exit", "final_commit_s": "final\ncommit*", "old_pod_done_s": "old pod\ndone",
    "replacement_created_s": "new pod\ncreated", "admission_s": "admission*", "pod_start_s": "pod\nstart",
    "restore_s": "restore*", "startup_s": "start-up\n(imports)", "checkpoint_load_s": "checkpoint\nload",
    "first_step_s": "first\nstep",
}


def timeline_table(result: dict[str, Any], console: Console) -> None:
    """The per-restart time line (:mod:`kresume.devtools.demo.timeline`), seconds, and the medians."""
    from kresume.devtools.demo.timeline import PARTS

    rows = [(p["index"], p["mode"], p.get("timeline") or {}) for p in result["preemptions"]]
    if not rows:
        return
    t = Table(title="Restart time line, s (* = kresume's part: admission + final commit after the trainer's exit "
                    "+ restore)", title_justify="left")  # fmt: skip
    for col in ("#", "mode", *(_SHORT[k] for k, _ in PARTS), "total", "kresume", "answer\nsource"):
        t.add_column(col, justify="left" if col in ("mode", "answer\nsource") else "right")
    med = result.get("timeline_median") or {}
    for index, mode, tl in [*rows, ("median", "", med)]:
        answer = str(tl.get("answer") or "")
        t.add_row(str(index), mode, *(_fmt(tl.get(k), 2) for k, _ in PARTS), _fmt(tl.get("total_s"), 1),
                  _fmt(tl.get("kresume_s"), 2), answer.removeprefix("injected/"))
    console.print(t)
    if med.get("kresume_share") is not None:
        cp = (f"; cp of the same {med['checkpoint_bytes']} B on this disk: {med['cp_s']:.3f} s "
              f"(kresume's share = {med['kresume_to_cp']}x cp)") if med.get("cp_s") else ""
        console.print(f"kresume's share of a restart (median): {med['kresume_s']:.2f} s of {med['total_s']:.1f} s "
                      f"({100 * med['kresume_share']:.1f} %){cp}")
    else:
        console.print("kresume's share of a restart: not measured in this run (no admission time was found in the "
                      "operator's log; '-' = not measured)")


def _preemptions_table(result: dict[str, Any], console: Console) -> None:
    t = Table(title="Preemptions and restarts", title_justify="left")
    for col in ("#", "preempted pod", "moment", "at step", "resumed at step", "lost steps", "time to resume (s)"):
        t.add_column(col, justify="right" if col in ("#", "at step", "resumed at step", "lost steps",
                                                      "time to resume (s)") else "left")  # fmt: skip
    for p in result["preemptions"]:
        t.add_row(str(p["index"]), p["pod"], p["moment"], _fmt(p["last_step_before"]), _fmt(p["resumed_step"]),
                  _fmt(p["lost_steps"]), _fmt(p["time_to_resume_s"]))  # fmt: skip
    console.print(t)


def ranks_table(result: dict[str, Any], console: Console) -> None:
    """The multi-rank demo's restarts (:mod:`kresume.devtools.demo.ranks`): per restart, the step each rank
    resumed from."""
    t = Table(title=f"Preemptions and restarts ({result['ranks']} ranks; the whole job restarts each time)",
              title_justify="left")
    for col in ("#", "preempted", "moment", "other ranks", "at step", "resumed (per rank)", "lost steps",
                "time to resume (s)"):
        t.add_column(col, justify="right" if col in ("#", "at step", "lost steps", "time to resume (s)") else "left")
    for p in result["preemptions"]:
        resumed = sorted((p.get("resumed_steps") or {}).items(), key=lambda kv: int(kv[0]))
        steps = ", ".join(f"r{k}={v}" for k, v in resumed)
        others = "; ".join(f"r{k}: {v}" for k, v in sorted((p.get("survivors") or {}).items()))
        t.add_row(str(p["index"]), f"rank {p['rank']} ({p['pod']})", p["moment"], others, _fmt(p["last_step_before"]),
                  steps or "-", _fmt(p["lost_steps"]), _fmt(p["time_to_resume_s"]))  # fmt: skip
    console.print(t)
