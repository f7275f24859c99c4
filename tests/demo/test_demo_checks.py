"""Pure parts of `kresume demo`: the line that names a container that ended on its own, the log line it quotes,
and the admission check that reports it (no cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kresume.devtools.demo import checks
from kresume.devtools.demo.observe import error_line


@pytest.mark.parametrize(("args", "want"), [
    (("trainer", "StartError", 128, 'exec: "python": executable file not found in $PATH', "", False, None),
     'pod p-1: container trainer could not start (StartError, exit code 128): exec: "python": executable file not '
     "found in $PATH"),
    (("trainer", "Error", 127, "", "kresume-container: 7: exec: python: not found", False, None),
     "pod p-1: container trainer crashed before its first step (exit code 127): kresume-container: 7: exec: "
     "python: not found"),
    (("trainer", "Error", 1, "", "ValueError: bad config", True, 37),
     "pod p-1: container trainer failed at step 37 (exit code 1): ValueError: bad config"),
    (("kresume-sidecar", "Error", 2, "", "", False, None),
     "pod p-1: container kresume-sidecar exited on its own (exit code 2), before the trainer's first step: its log "
     "is empty"),
    (("kresume-sidecar", "CreateContainerConfigError", 128, "env AWS_KEY: secretKeyRef ns/s not found", "", True, 3),
     "pod p-1: container kresume-sidecar could not start (CreateContainerConfigError, exit code 128): env AWS_KEY: "
     "secretKeyRef ns/s not found"),
])  # fmt: skip
def test_container_failure_names_the_container_and_its_error(args, want):
    assert checks.container_failure("p-1", *args[:6], step=args[6]) == want


def test_error_line_skips_the_agent_header_events_and_blank_lines(tmp_path: Path):
    log = tmp_path / "trainer.log"
    assert error_line(log) == ""  # no log yet
    log.write_text("--- kresume dev node: start trainer (restart 0): ['python']\n")
    assert error_line(log) == ""
    log.write_text("--- kresume dev node: start trainer (restart 0): ['python', 'train.py']\nTraceback (most recent "
                   "call last):\n  File \"train.py\", line 3\nModuleNotFoundError: No module named 'lightning'\n"
                   '{"event": "progress"}\n\n')  # fmt: skip
    assert error_line(log) == "ModuleNotFoundError: No module named 'lightning'"


def test_a_failed_admission_has_that_one_problem():
    a = checks.Admission(pod="p-1", lo=0, hi=1, injected_url=None, injected_step=None, start_step=None,
                         start_resumed_from=None, failure="pod p-1: container trainer could not start (…)")
    assert checks.check(a, []) == ["pod p-1: container trainer could not start (…)"]
    a.failure = None
    assert checks.check(a, []) == []


@pytest.mark.parametrize(("mode", "lost", "ok"), [
    ("step", 0, True), ("write", 0, True), ("upload", 0, True), ("upload", 3, False), ("step", -1, False),
    ("kill", 0, True), ("kill", 20, True), ("kill", 21, False), ("kill", None, True),
])  # fmt: skip
def test_lost_steps_rule_zero_after_a_graceful_preemption_one_interval_after_sigkill(mode, lost, ok):
    from kresume.devtools.demo import chaos

    assert (chaos.lost_steps_problem(mode, lost, 20) is None) is ok


def test_plan_cycles_through_the_chosen_modes_and_refuses_unknown_ones():
    from kresume.devtools.demo import chaos

    plan = chaos.plan(8, 3, 20)
    assert sorted(p.mode for p in plan[:4]) == sorted(chaos.MODES) == sorted(p.mode for p in plan[4:])
    assert {p.mode for p in chaos.plan(6, 1, 20, ("step", "upload"))} == {"step", "upload"}
    with pytest.raises(ValueError, match="nope"):
        chaos.plan(1, 0, 20, ("step", "nope"))


def _seen(step: int, first_seen: float, at: str) -> object:
    from kresume.devtools.demo.observe import Seen

    return Seen(id=f"id{step}", step=step, url=f"s3://b/run/checkpoints/id{step}/x-{step}.ckpt", committed_at=at,
                first_seen=first_seen, source_pod="p-0")


@pytest.mark.parametrize(("resumed", "start", "want"), [
    (None, 60, []),  # the injected one
    (62, 62, []),  # resume_from() found the old pod's final save, committed after the admission
    (62, 60, ["p-1: the trainer started at step 60, not at the checkpoint's 62"]),
    (40, 40, ["p-1: the trainer resumed from s3://b/run/checkpoints/id40/x-40.ckpt (step 40), not the injected, "
              "newer step 60", "p-1: the trainer started at step 40, not at the checkpoint's 60"]),
    (99, 99, ["p-1: the trainer resumed from s3://b/run/checkpoints/id99/x-99.ckpt, which is not a committed "
              "checkpoint of the run", "p-1: the trainer started at step 99, not at the checkpoint's 60"]),
])  # fmt: skip
def test_a_trainer_may_resume_from_a_newer_commit_than_the_injected_one(resumed, start, want):
    """Measured on the real kubelet: the Job controller creates the replacement while the old pod's sidecar still
    commits the final save (step 62), so step 60 is injected and ``resume_from()`` returns 62 from the store."""
    seen = [_seen(40, 50.0, "1970-01-01T00:00:50Z"), _seen(60, 90.0, "1970-01-01T00:01:30Z"),
            _seen(62, 101.0, "1970-01-01T00:01:41Z")]
    url = {s.step: s.url for s in seen}
    a = checks.Admission(pod="p-1", lo=100.0, hi=100.5, injected_url=url[60], injected_step=60, start_step=start,
                         start_resumed_from=url.get(resumed, resumed and f"s3://b/run/checkpoints/id{resumed}/x-{resumed}.ckpt"),
                         loaded_step=60)
    assert checks.check(a, seen) == want
