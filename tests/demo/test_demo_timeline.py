"""The demo's per-restart time line (issue 15 item 2), pure: log parsing and the split of one restart."""

from __future__ import annotations

import time

import pytest

from kresume.devtools.demo import timeline


def _local(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f",{int(round((ts % 1) * 1000)):03d}"


def test_admissions_are_parsed_from_the_operator_log_and_picked_by_window():
    t0 = 1_800_000_000.0
    text = "\n".join([
        f"{_local(t0)} INFO kresume.operator.admission: inject-pod ns/run-a: injected (checkpoint from store) in 101.2 ms",
        f"{_local(t0 + 1)} INFO kopf.objects: Webhook 'inject-pod' succeeded.",
        f"{_local(t0 + 5)} INFO kresume.operator.admission: inject-pod ns/other: injected (checkpoint from store) in 3 ms",
        f"{_local(t0 + 30.25)} INFO kresume.operator.admission: inject-pod ns/run-a: injected (checkpoint from memory)"
        " in 2.5 ms",
    ])  # fmt: skip
    got = timeline.parse_admissions(text, "ns", "run-a")
    assert [(a.source, a.ms) for a in got] == [("store", 101.2), ("memory", 2.5)]
    assert got[1].at == pytest.approx(t0 + 30.25, abs=0.002)
    assert timeline.admission_in(got, t0 + 20, t0 + 31).source == "memory"
    assert timeline.admission_in(got, t0 + 10, t0 + 20) is None


def test_a_utc_time_in_front_of_a_line_wins_over_the_operators_asctime():
    # `kubectl logs --timestamps` of the in-cluster operator: the runtime's UTC time (ns), then the operator's
    # asctime in the container's zone, here 5 h off this machine's: the UTC time is the one to take.
    t0 = 1_800_000_000.0
    utc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0)) + ".250000123Z"
    text = (f"{utc} {_local(t0 - 5 * 3600)} INFO kresume.operator.admission: inject-pod ns/run-a: injected "
            "(checkpoint from memory) in 2.5 ms (store 1.0 ms)\n"
            f"{utc} {_local(t0)} INFO kresume.operator.admission: inject-pod ns/run-b: skipped (checkpoint from -)"
            " in 0.4 ms\n")
    got = timeline.parse_admissions(text, "ns", "run-a")
    assert len(got) == 1 and got[0].at == pytest.approx(t0 + 0.25, abs=1e-5)
    assert (got[0].outcome, got[0].source, got[0].ms) == ("injected", "memory", 2.5)
    assert timeline.parse_admissions(text, "ns", "run-b")[0].source == "-"


def test_the_sidecar_commit_of_the_final_save_is_found_by_name():
    text = ('--- kresume dev node: start\n{"ts": "2026-12-02T01:02:20.398Z", "msg": "committed a.ckpt as 1-x (step 1)"}\n'
            '{"ts": "2026-12-02T01:02:21.500Z", "msg": "committed preempted-epoch=0-step=7.ckpt as 7-y (step 7)"}\n')
    got = timeline.sidecar_commit_time(text, "preempted-epoch=0-step=7.ckpt")
    assert got == pytest.approx(1796173341.5)
    assert timeline.sidecar_commit_time(text, "nope.ckpt") is None


def test_segments_follow_one_another_and_add_up_to_the_total():
    t = timeline.RestartTimes(sigterm=100.0, trainer_exit=100.4, final_commit=100.9, old_pod_done=101.5,
                              admitted=102.1, admission_ms=5.0, answer="injected/memory", pod_started=102.6,
                              restore_started=None, restore_finished=None, trainer_launched=102.7, imports_s=9.0,
                              load_s=1.5, train_start=113.2, first_step=113.4, checkpoint_bytes=1000)  # fmt: skip
    s = timeline.segments(t)
    assert s["sigterm_to_trainer_exit_s"] == 0.4 and s["final_commit_s"] == 0.5 and s["old_pod_done_s"] == 0.6
    assert s["replacement_created_s"] == pytest.approx(0.595) and s["admission_s"] == 0.005
    assert s["pod_start_s"] == 0.6 and s["restore_s"] == 0.0 and s["startup_s"] == 9.0
    assert s["checkpoint_load_s"] == 1.5 and s["first_step_s"] == 0.2 and s["total_s"] == 13.4
    parts = sum(s[k] for k, _ in timeline.PARTS)
    assert parts == pytest.approx(s["total_s"], abs=0.02)
    assert s["kresume_s"] == pytest.approx(0.505)


def test_a_final_commit_before_the_trainer_exit_counts_zero_and_a_restore_moves_the_start_up():
    t = timeline.RestartTimes(sigterm=100.0, trainer_exit=101.0, final_commit=100.8, old_pod_done=101.2,
                              admitted=102.0, admission_ms=None, answer=None, pod_started=102.2,
                              restore_started=102.3, restore_finished=104.3, trainer_launched=104.5, imports_s=8.0,
                              load_s=0.5, train_start=113.1, first_step=113.3)  # fmt: skip
    s = timeline.segments(t)
    assert s["final_commit_s"] == 0.0 and s["old_pod_done_s"] == pytest.approx(0.2)
    assert s["restore_s"] == 2.0 and s["startup_s"] == 8.0 and s["pod_start_s"] == pytest.approx(0.5)
    assert s["admission_s"] is None and s["kresume_s"] is None  # not measured: never a sum of what was found


def test_summary_takes_medians_and_the_share():
    rows = [{"total_s": 10.0, "kresume_s": 1.0, "admission_s": 0.1}, {"total_s": 30.0, "kresume_s": 3.0},
            {"total_s": 20.0, "kresume_s": 2.0, "admission_s": 0.3}]
    out = timeline.summarize(rows)
    assert out["total_s"] == 20.0 and out["kresume_s"] == 2.0 and out["admission_s"] == 0.2
    assert out["kresume_share"] == 0.1
