"""Per-restart checks of the demo (pure): the injected checkpoint was the newest committed one when the pod
was admitted, it loads, and the trainer resumed at its step.

Admission time is known as a window ``[lo, hi]``: ``lo`` is when the previous pod was reported Failed (the
Job controller creates no replacement while it is active), ``hi`` is when the node agent first listed the new
pod (admission happens before the object exists). A manifest counts as visible before admission when the
demo's store poller had seen it before ``lo``; it counts as possibly-not-yet-visible until ``hi``. So a
failure reported here is certain, and a commit that landed inside the window may be injected or not.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

from kresume.devtools.demo.observe import Seen


@dataclass
class Admission:
    """What one pod of the run was given and did."""

    pod: str
    lo: float
    hi: float
    injected_url: str | None
    injected_step: int | None
    start_step: int | None
    start_resumed_from: str | None
    loaded_step: int | None = None
    load_error: str | None = None


def epoch(iso: str) -> float | None:
    """ISO-8601 time (``...Z`` or with offset) as epoch seconds; None when empty/unparseable."""
    try:
        return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def check(a: Admission, seen: Iterable[Seen]) -> list[str]:
    """Problems of one admission (empty list = a good resume). See the module docstring for the window."""
    seen = list(seen)
    problems: list[str] = []
    visible = [s for s in seen if s.first_seen < a.lo and s.step is not None]
    newest = max(visible, key=lambda s: s.step or 0, default=None)
    if a.injected_url is None:
        if newest is not None:
            problems.append(f"{a.pod}: nothing injected although step {newest.step} was committed before admission")
        if a.start_step not in (None, 0):
            problems.append(f"{a.pod}: fresh start expected, trainer started at step {a.start_step}")
        return problems
    m = next((s for s in seen if s.url == a.injected_url), None)
    if m is None:
        return [f"{a.pod}: injected {a.injected_url} is not a committed checkpoint of the run"]
    committed = epoch(m.committed_at)
    if committed is not None and committed > a.hi:
        problems.append(f"{a.pod}: injected step {m.step} was committed after the pod was admitted")
    if newest is not None and (newest.step or 0) > (m.step or 0):
        problems.append(f"{a.pod}: injected step {m.step} is older than step {newest.step}, committed before "
                        "admission")  # fmt: skip
    if a.injected_step != m.step:
        problems.append(f"{a.pod}: KRESUME_RESUME_STEP={a.injected_step} but the checkpoint is step {m.step}")
    if a.load_error:
        problems.append(f"{a.pod}: the injected checkpoint does not load: {a.load_error}")
    elif a.loaded_step != m.step:
        problems.append(f"{a.pod}: the checkpoint file holds global_step {a.loaded_step}, manifest says {m.step}")
    if a.start_step is None:
        problems.append(f"{a.pod}: the trainer never reported its start")
    elif a.start_step != m.step:
        problems.append(f"{a.pod}: the trainer started at step {a.start_step}, not at the checkpoint's {m.step}")
    if a.start_resumed_from not in (None, a.injected_url):
        problems.append(f"{a.pod}: the trainer resumed from {a.start_resumed_from}, not the injected URL")
    return problems
