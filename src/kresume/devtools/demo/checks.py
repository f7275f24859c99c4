"""Per-restart checks of the demo (pure): the injected checkpoint was the newest committed one when the pod
was admitted, it loads, and the trainer resumed at its step — or at a newer committed one that ``resume_from()``
found in the store (the old pod's final save, committed after the admission).

Admission time is known as a window ``[lo, hi]``: ``lo`` is when the previous pod was reported Failed or deleted (the
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
    failure: str | None = None
    """A container of the pod that ended on its own (see :func:`container_failure`); None when none did."""


def epoch(iso: str) -> float | None:
    """ISO-8601 time (``...Z`` or with offset) as epoch seconds; None when empty/unparseable."""
    try:
        return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def check(a: Admission, seen: Iterable[Seen]) -> list[str]:
    """Problems of one admission (empty list = a good resume). See the module docstring for the window.
    A pod whose container failed (:attr:`Admission.failure`) has that one problem: nothing else can be judged."""
    if a.failure:
        return [a.failure]
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
    # resume_from() returns the newest of the injected checkpoint and the run's committed latest
    # (kresume.resume): the old pod's final save, committed after this pod's admission, is a correct answer.
    resumed = m
    if a.start_resumed_from not in (None, a.injected_url):
        newer = next((s for s in seen if s.url == a.start_resumed_from), None)
        if newer is None:
            problems.append(f"{a.pod}: the trainer resumed from {a.start_resumed_from}, which is not a committed "
                            "checkpoint of the run")  # fmt: skip
        elif (newer.step or 0) <= (m.step or 0):
            problems.append(f"{a.pod}: the trainer resumed from {a.start_resumed_from} (step {newer.step}), not "
                            f"the injected, newer step {m.step}")  # fmt: skip
        else:
            resumed = newer
    if a.start_step is None:
        problems.append(f"{a.pod}: the trainer never reported its start")
    elif a.start_step != resumed.step:
        problems.append(f"{a.pod}: the trainer started at step {a.start_step}, not at the checkpoint's {resumed.step}")
    return problems


#: ``state.terminated.reason`` values of a container that never ran its command (kubelet's words).
NOT_STARTED_REASONS = ("StartError", "CreateContainerConfigError", "ContainerCannotRun")


def container_failure(pod: str, container: str, reason: str, exit_code: int | None, message: str, log_line: str,
                      trainer_started: bool, step: int | None) -> str:  # fmt: skip
    """One line naming a container of ``pod`` that ended on its own, and its error.

    ``reason``/``exit_code``/``message`` are its terminated state; ``log_line`` the last line of its log that
    says something (:func:`kresume.devtools.demo.observe.error_line`); ``trainer_started``/``step``: whether the
    trainer reported its ``start`` event, and the last step it reported. "could not start": the command never
    ran (:data:`NOT_STARTED_REASONS`); "crashed before its first step": the trainer exited before ``start``.
    """
    code = f"exit code {exit_code}" if exit_code is not None else "no exit code"
    if reason in NOT_STARTED_REASONS:
        what = f"could not start ({reason}, {code})"
    elif container == "trainer" and not trainer_started:
        what = f"crashed before its first step ({code})"
    elif container == "trainer":
        what = f"failed at step {step if step is not None else '-'} ({code})"
    else:
        what = f"exited on its own ({code})" + ("" if trainer_started else ", before the trainer's first step")
    detail = message if reason in NOT_STARTED_REASONS and message else (log_line or message or "its log is empty")
    return f"pod {pod}: container {container} {what}: {detail}"
